"""Run every Python code block of README.md and docs/*.md, so the docs cannot rot.

One test per block, with ids such as ``README.md:1`` or ``methods.md:3`` (the
n-th Python block of the page). The blocks of a page run in order, in one
namespace shared by the page, in a temporary working directory, so a page reads
like a notebook: later blocks use what earlier ones defined. Running a single
block (``pytest tests/test_docs.py -k "methods.md:3"``) runs the blocks before it
first.

Fences:

- ```` ```python ```` — executed, on whatever backend ``KERAS_BACKEND`` selects;
- ```` ```python no-run ```` — shown but not executed (e.g. it downloads
  weights); reported as skipped;
- any other language (``bash``, ``text``, ...) — not Python, not executed.

A fence that looks like Python under another name (``py``, ``python3``,
``pycon``...) is an error: it would silently escape the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # pictures never open a window

import keras  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<info>[^`]*)$")
_PYTHONISH = {"py", "python3", "py3", "pycon", "ipython", "python-repl", "pyi"}


@dataclass(frozen=True)
class Block:
    page: Path
    index: int  # 1-based among the page's Python blocks
    line: int  # 1-based line of the first code line in the page
    code: str
    run: bool

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.index}"


def fenced_blocks(page: Path) -> list[tuple[str, int, str]]:
    """Every fenced block of a Markdown page: ``(info string, first code line, code)``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    position = 0
    while position < len(lines):
        opening = _FENCE.match(lines[position])
        if opening is None:
            position += 1
            continue
        ticks, indent = opening["ticks"], len(opening["indent"])
        start = position + 1
        end = start
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if (
                closing is not None
                and closing["ticks"][0] == ticks[0]
                and len(closing["ticks"]) >= len(ticks)
                and not closing["info"].strip()
            ):
                break
            end += 1
        else:
            raise AssertionError(f"{page.name}:{position + 1}: the code fence is never closed.")
        body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[start:end]]
        blocks.append((opening["info"].strip(), start + 1, "\n".join(body) + "\n"))
        position = end + 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    found = []
    for info, line, code in fenced_blocks(page):
        words = info.split()
        if not words or words[0] != "python":
            continue
        found.append(Block(page, len(found) + 1, line, code, run="no-run" not in words[1:]))
    return found


BLOCKS = [block for page in PAGES if page.exists() for block in python_blocks(page)]


# --------------------------------------------------------------------------- running pages


class _PageState:
    def __init__(self, directory: Path):
        self.namespace: dict = {"__name__": "__docs__"}
        self.directory = directory
        self.done = 0  # blocks executed so far
        self.failed: str | None = None  # the id of the block that failed


_STATES: dict[Path, _PageState] = {}


@pytest.fixture(autouse=True)
def _seed():
    """Replaces conftest's per-test seeding and ``clear_session``: a page's blocks share state."""
    yield


# the backends, and keras-hub (installed apart, see README "Tests")
_FRAMEWORKS = ("tensorflow", "torch", "jax", "keras_hub")


def _missing_framework(block: Block) -> str | None:
    """A framework the block imports that this environment lacks (a one-backend install).

    Such a block is skipped, not failed: `.ci/run` installs all three and keras-hub, so
    there every block runs.
    """
    imported = re.findall(r"^\s*(?:import|from)\s+(\w+)", block.code, re.M)
    for name in imported:
        if name in _FRAMEWORKS and importlib.util.find_spec(name) is None:
            return name
    return None


def _execute(block: Block, state: _PageState) -> None:
    if _missing_framework(block):
        return  # see _missing_framework; test_code_block reports it as skipped
    # Pad with blank lines so tracebacks point at the block's lines in the page.
    source = "\n" * (block.line - 1) + block.code
    previous = Path.cwd()
    os.chdir(state.directory)
    try:
        exec(compile(source, str(block.page), "exec"), state.namespace)
    finally:
        os.chdir(previous)


def _state_of(page: Path, factory) -> _PageState:
    state = _STATES.get(page)
    if state is None:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        state = _STATES[page] = _PageState(factory.mktemp(page.stem))
    return state


def _marks(block: Block) -> list:
    marks = []
    if block.run and "keras.applications" in block.code:
        marks.append(pytest.mark.slow)
    return marks


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id, marks=_marks(b)) for b in BLOCKS])
def test_code_block(block: Block, tmp_path_factory):
    if not block.run:
        pytest.skip(f"{block.id} is marked `python no-run`")
    state = _state_of(block.page, tmp_path_factory)
    page_blocks = [b for b in BLOCKS if b.page == block.page]
    for earlier in page_blocks[state.done : block.index - 1]:
        if state.failed:
            break
        if earlier.run:
            try:
                _execute(earlier, state)
            except BaseException as error:
                state.failed = earlier.id
                pytest.fail(
                    f"{earlier.id} (line {earlier.line}), which {block.id} builds on, failed: "
                    f"{type(error).__name__}: {error}"
                )
        state.done = earlier.index
    if state.failed:
        pytest.skip(f"an earlier block of the page failed ({state.failed})")
    if state.done >= block.index:
        return  # already run as a prerequisite of a later block
    missing = _missing_framework(block)
    if missing:
        state.done = max(state.done, block.index)
        pytest.skip(f"{block.id} imports {missing}, which is not installed here")
    try:
        _execute(block, state)
    except BaseException:
        state.failed = block.id
        raise
    finally:
        state.done = max(state.done, block.index)


# --------------------------------------------------------------------------- the pages themselves


def test_pages_have_python_blocks():
    assert BLOCKS, "no Python code block found in README.md or docs/"
    for page in PAGES:
        if page.parent.name == "docs" and page.name != "index.md":
            assert python_blocks(page), f"{page.name} has no runnable example"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_python_escapes_the_test(page: Path):
    for info, line, code in fenced_blocks(page):
        words = info.split()
        language = words[0].lower() if words else ""
        assert language not in _PYTHONISH, (
            f"{page.name}:{line - 1}: fence '{info}' is Python under another name; write "
            "```python (executed) or ```python no-run (skipped)."
        )
        if language == "python":
            assert all(w == "no-run" for w in words[1:]), (
                f"{page.name}:{line - 1}: unknown fence option in '{info}' (only 'no-run')."
            )
        if not language:
            assert not re.search(r"^\s*(import |from \S+ import )", code, re.M), (
                f"{page.name}:{line - 1}: an unlabelled fence holds Python; label it ```python."
            )


def test_index_links_every_page():
    index = ROOT / "docs" / "index.md"
    assert index.exists()
    text = index.read_text(encoding="utf-8")
    for page in PAGES:
        if page.parent.name == "docs" and page.name != "index.md":
            assert f"({page.name}" in text, f"docs/index.md does not link {page.name}"


def test_relative_links_resolve():
    link = re.compile(r"\]\((?!https?://|#|mailto:)([^)#\s]+)")
    for page in PAGES:
        for target in link.findall(page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links a missing file: {target}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page (lower case, punctuation dropped, repeats numbered)."""
    seen: dict[str, int] = {}
    anchors = set()
    inside_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            inside_fence = not inside_fence
        heading = re.match(r"#{1,6} (.+)", line)
        if inside_fence or heading is None:
            continue
        text = heading[1].strip().lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_anchors_resolve():
    link = re.compile(r"\]\((?!https?://|mailto:)([^)#\s]*)#([^)\s]+)\)")
    for page in PAGES:
        for target, anchor in link.findall(page.read_text(encoding="utf-8")):
            linked = (page.parent / target) if target else page
            missing = f"{page.name} links a missing anchor: {target}#{anchor}"
            assert anchor in _anchors(linked), missing


def test_the_readme_methods_table_is_the_registrys():
    """The README's methods table is ``registry.markdown_table()``, character for character."""
    registry = pytest.importorskip("keras_explainable.methods.registry")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- methods table[^\n]*-->\n(.*?)\n<!-- end of methods table -->", text, re.S
    )
    assert found, "README.md lost its methods table markers"
    assert found[1].strip() == registry.markdown_table().strip(), (
        "README.md's methods table is out of date: paste `python -m "
        "keras_explainable.methods` between its markers."
    )
    names = re.findall(r"^\| `ke\.(\w+)`", found[1], re.M)
    assert names == list(registry.METHODS)


def test_the_readme_is_a_front_door():
    """Short, and every page it used to hold is linked."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for page in ("benchmarks.md", "troubleshooting.md", "explaining.md", "methods.md", "index.md"):
        assert f"(docs/{page}" in text, page
