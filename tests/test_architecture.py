"""The package's rooms and the one-way arrows between them, read from the source.

Every module under ``src/keras_explainable`` is parsed with ``ast``; every
import in it (at module level and inside functions) becomes an arrow of the
package's import graph. The tests fail, naming the module, on:

- a cycle between modules (the cycle is printed);
- an arrow running back up the rooms: ui (command line, report,
  explain_prediction, the shortcuts) -> engine (and the metrics, WSOL) ->
  methods -> base (inspection, backend, filters, resizing, leaf modules);
- an import of tensorflow / jax / torch outside ``backend/``;
- a Keras internal (``keras.src`` or a known private attribute such as
  ``_keras_history``) outside ``_compat.py``;
- a module over the size limit.

And, by running Python, that importing the package imports no framework and
creates no Keras variable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "keras_explainable"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE

FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "torch")
PRIVATE_KERAS = (
    "_inbound_nodes",
    "_outbound_nodes",
    "_keras_history",
    "_call_has_training_arg",
    "_run_through_graph",
    "_mmap",
)
MAX_LINES = 400

# the rooms, bottom (0) to top (3): a module may import only from its own room or below
BASE, METHODS, ENGINE, UI = 0, 1, 2, 3
ROOMS = {
    "_axes": BASE,
    "_precision": BASE,
    "_taps": BASE,
    "_compat": BASE,
    "_units": BASE,
    "_inputs": BASE,
    "_branches": BASE,
    "_layers": BASE,
    "_logits": BASE,
    "_dense_heads": BASE,
    "_head": BASE,
    "_token_grid": BASE,
    "_tokens": BASE,
    "_attention": BASE,
    "filters": BASE,
    "resizing": BASE,
    "inspection": BASE,
    "backend": BASE,
    "utils": BASE,
    "data": BASE,
    "targets": BASE,
    "methods": METHODS,
    "engine": ENGINE,
    "metrics": ENGINE,
    "wsol": ENGINE,
    "explanation": UI,
    "_explanation_result": UI,
    "_explanation_inputs": UI,
    "_explain_inputs": UI,
    "_layer_naming": UI,
    "_shortcuts": UI,
    "report": UI,
    "cli": UI,
    "text": UI,
    "__main__": UI,
    "__init__": UI,
}
ROOM_NAMES = {BASE: "base", METHODS: "methods", ENGINE: "engine", UI: "ui"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def room_of(name: str) -> int:
    parts = name.split(".")
    if parts == [PACKAGE]:
        return UI
    if name == f"{PACKAGE}.methods.registry":
        return BASE  # framework-free table: it imports nothing of the package
    key = parts[1]
    if key not in ROOMS:
        raise AssertionError(
            f"{name}: a new top-level module; give it a room in tests/test_architecture.py ROOMS"
        )
    return ROOMS[key]


def imports_of(name: str) -> list[tuple[str, int, str]]:
    """``(imported module, line, how)`` for every import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))
    package = name if is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, "import") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import inspection` imports the module inspection; `from .x import f`
            # (an attribute) imports x
            submodules = [
                f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES
            ]
            if len(submodules) < len(node.names):
                found.append((target, node.lineno, "from"))
            found += [(module, node.lineno, "from") for module in submodules]
    return found


def internal_graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for name in MODULES:
        for target, line, _ in imports_of(name):
            if target in MODULES and target != name:
                graph[name].setdefault(target, line)
    return graph


def find_cycles(graph) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def connect(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        path, seen = [start], {start}
        while True:  # walk inside the component until a module repeats
            nxt = min(n for n in graph[path[-1]] if n in members)
            if nxt in seen:
                cycles.append(path[path.index(nxt) :] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return cycles


def test_the_graph_sees_the_imports():
    graph = internal_graph()
    # a few arrows that must be found, module-level and function-level
    assert f"{PACKAGE}._axes" in graph[f"{PACKAGE}.resizing"]
    assert f"{PACKAGE}.backend" in graph[f"{PACKAGE}.inspection"]  # inside a function
    assert f"{PACKAGE}.engine" in graph[f"{PACKAGE}._shortcuts"]  # inside a function
    assert find_cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}) == [
        ["a", "b", "c", "a"]
    ]


def test_no_import_cycles():
    cycles = find_cycles(internal_graph())
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )


def test_arrows_point_down_the_rooms():
    graph = internal_graph()
    wrong = []
    for name, targets in graph.items():
        for target, line in targets.items():
            if room_of(target) > room_of(name):
                wrong.append(
                    f"{name} ({ROOM_NAMES[room_of(name)]}) imports {target} "
                    f"({ROOM_NAMES[room_of(target)]}) at line {line}"
                )
    assert not wrong, "arrows running back up (ui -> engine -> methods -> base):\n" + "\n".join(
        wrong
    )


def test_the_registry_imports_nothing_of_the_package():
    name = f"{PACKAGE}.methods.registry"
    package_imports = [t for t, _, _ in imports_of(name) if t.startswith(PACKAGE)]
    assert not package_imports
    assert not [t for t, _, _ in imports_of(name) if t.split(".")[0] in ("keras", *FRAMEWORKS)]


def test_frameworks_only_in_backend():
    wrong = [
        f"{name} imports {target} (line {line})"
        for name in MODULES
        if not name.startswith(f"{PACKAGE}.backend")
        for target, line, _ in imports_of(name)
        if target.split(".")[0] in FRAMEWORKS
    ]
    assert not wrong, "tensorflow / jax / torch imported outside backend/:\n" + "\n".join(wrong)


def _private_uses(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_KERAS:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                yield f"{name}: .{node.attr} (line {node.lineno})"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in PRIVATE_KERAS
        ):
            yield f"{name}: {node.func.id}(..., {node.args[1].value!r}) (line {node.lineno})"


def test_keras_internals_only_in_compat():
    compat = f"{PACKAGE}._compat"
    wrong = [
        f"{name} imports {target} (line {line})"
        for name in MODULES
        if name != compat
        for target, line, _ in imports_of(name)
        if target == "keras.src" or target.startswith("keras.src.")
    ]
    wrong += [use for name in MODULES if name != compat for use in _private_uses(name)]
    assert not wrong, "Keras internals outside _compat.py:\n" + "\n".join(wrong)


def test_module_sizes():
    big = {
        name: lines
        for name, path in MODULES.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("module", [PACKAGE, f"{PACKAGE}.methods.registry"])
def test_importing_the_package_imports_no_framework(module):
    code = f"""
import sys
import {module}
import keras_explainable as ke
ke.__version__, ke.__all__, dir(ke), ke.gradcam, ke.smoothgrad, ke.full_gradients
from keras_explainable import gradcam, partial_explain
from keras_explainable.methods import registry
registry.get("fullgrad")
heavy = sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules)
assert not heavy, heavy
print("light")
"""
    result = _run(code)
    assert result.returncode == 0 and "light" in result.stdout, result.stderr[-3000:]


def test_importing_the_package_creates_no_keras_variable():
    code = """
import keras
created = []
for klass in (keras.Variable, keras.random.SeedGenerator):
    original = klass.__init__
    def init(self, *args, _original=original, _klass=klass, **kwargs):
        created.append(_klass.__name__)
        _original(self, *args, **kwargs)
    klass.__init__ = init
keras.random.SeedGenerator(1)
assert created, "the probe does not see variables being made"
created.clear()
import keras_explainable as ke
for name in ke.__all__:
    getattr(ke, name)
import keras_explainable.methods.meta, keras_explainable.methods.cams
import keras_explainable.methods.gradient, keras_explainable.methods.perturbation
import keras_explainable.explanation, keras_explainable.report, keras_explainable.inspection
assert not created, created
print("none")
"""
    result = _run(code)
    assert result.returncode == 0 and "none" in result.stdout, result.stderr[-3000:]


def test_public_names_and_lazy_attributes():
    import keras_explainable as ke

    for name in ke.__all__:
        assert getattr(ke, name) is not None
        assert name in dir(ke)
    with pytest.raises(AttributeError, match="no attribute 'not_a_method'"):
        ke.not_a_method  # noqa: B018
    assert ke.methods.gradient.full_gradients is not None
    assert ke.inspection.gather_units is not None
