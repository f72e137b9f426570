"""``keras-explainable explain MODEL --input NAME=FILE ...``: one prediction of a multi-input model.

Each ``--input`` gives one of the model's inputs by its name in ``model.inputs``:
a picture (``.png``, ``.jpg``, ...) for an image input ``(batch, H, W, C)``,
resized and preprocessed as a picture is; numeric values for any other input:
a ``.npy`` file, a ``.npz`` file (the array named after the input, or its only
array), or a text file of numbers (``.csv``, ``.tsv``, ``.txt``: commas, tabs
or spaces; a first row of names is a feature vector's ``feature_names``).

:func:`parse_inputs` and :func:`check_input_flags` need no Keras (they run
before a framework is imported); :func:`read_inputs` and :func:`explain_inputs`
run after, with the model.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

from ._common import EXIT_IMAGE, EXIT_MISSING, EXIT_USAGE, CommandError, one_line

__all__ = ["check_input_flags", "explain_inputs", "parse_inputs", "read_inputs"]

#: ``cli.files.IMAGE_EXTENSIONS``: an input file with one of these is a picture.
PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
VALUES = (".npy", ".npz", ".csv", ".tsv", ".txt")


def parse_inputs(specs: Sequence[str]) -> dict[str, Path]:
    """``{name: file}`` of the ``--input NAME=FILE`` options, checked without Keras.

    Raises:
        CommandError: ``EXIT_USAGE`` for a malformed or repeated name, or a file of
            an unknown kind; ``EXIT_MISSING`` for a file that does not exist.
    """
    found: dict[str, Path] = {}
    for spec in specs:
        name, equals, file = spec.partition("=")
        name = name.strip()
        if not equals or not name or not file:
            raise CommandError(
                f"--input takes NAME=FILE (the model input's name, then its file), e.g. "
                f"--input image=cat.png; got {spec!r}.",
                EXIT_USAGE,
            )
        if name in found:
            raise CommandError(f"--input {name}=... is given twice; give each input once.",
                               EXIT_USAGE)  # fmt: skip
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No such input file: {file} (--input {name}=...)", EXIT_MISSING)
        if path.suffix.lower() not in PICTURES + VALUES:
            raise CommandError(
                f"--input {name}={file}: expected a picture ({', '.join(PICTURES)}) or values "
                f"({', '.join(VALUES)}); got {path.suffix or 'a file without extension'}.",
                EXIT_USAGE,
            )
        found[name] = path
    return found


def check_input_flags(args) -> dict[str, Path]:
    """``--input``: not with pictures or texts; returns :func:`parse_inputs`'s ``{name: file}``."""
    if args.images:
        raise CommandError(
            f"--input gives a multi-input model's inputs by name; drop {args.images[0]}, or "
            f"give it as --input NAME={args.images[0]}.",
            EXIT_USAGE,
        )
    if args.text or args.text_file or args.preprocessor is not None or args.merge_words:
        raise CommandError(
            "--input and --text/--text-file/--preprocessor do not mix: explain a multi-input "
            "model's inputs or texts, not both.",
            EXIT_USAGE,
        )
    return parse_inputs(args.input)


# --------------------------------------------------------------------------- with Keras


def _read_values(name: str, path: Path):
    """``(array, feature names or None)`` of a values file."""
    import numpy as np

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if name in keys or len(keys) == 1:
                    return archive[name if name in keys else keys[0]], None
            raise CommandError(
                f"--input {name}={path}: the .npz holds {keys}; name one array {name!r}.",
                EXIT_USAGE,
            )
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        delimiter = "," if "," in lines[0] else "\t" if "\t" in lines[0] else None
        rows = [[cell.strip() for cell in line.split(delimiter)] for line in lines]
        names = None
        try:
            float(rows[0][0])
        except ValueError:  # a header row: the features' names
            names, rows = rows[0], rows[1:]
        array = np.array([[float(cell) for cell in row] for row in rows], np.float32)
        if len(array) == 1:
            array = array[0]
        return array, names
    except CommandError:
        raise
    except Exception as error:  # noqa: BLE001 - numpy and parsing raise many kinds
        raise CommandError(
            f"Cannot read the values of --input {name}={path}: {type(error).__name__}: "
            f"{one_line(error)}",
            EXIT_IMAGE,
        ) from None


def read_inputs(model, given: dict[str, Path]):
    """``(x, feature_names, sources)``: ``x`` the dict ``explain_prediction`` takes.

    Raises:
        CommandError: ``EXIT_USAGE`` for a name the model lacks (with the closest),
            a missing input (listing every input and its shape), a picture for an
            input that is not an image, or a model of one input.
    """
    from ..engine.multi import Layout

    layout = Layout(model, {})
    if len(layout.names) < 2:
        raise CommandError(
            f"--input is for models of several inputs; '{model.name}' takes one "
            f"({layout.expected()}): pass its pictures as IMAGE arguments.",
            EXIT_USAGE,
        )
    for name in given:
        if name not in layout.names:
            close = difflib.get_close_matches(name, layout.names, 1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise CommandError(
                f"--input {name}=...: '{model.name}' has no input {name!r}.{hint} Its inputs: "
                f"{layout.expected()}.",
                EXIT_USAGE,
            )
    missing = [name for name in layout.names if name not in given]
    if missing:
        raise CommandError(
            f"'{model.name}' also needs {', '.join(repr(n) for n in missing)}: give every "
            f"input with --input NAME=FILE; it takes {layout.expected()}.",
            EXIT_USAGE,
        )
    x, feature_names = {}, {}
    for name, shape, is_float in zip(layout.names, layout.shapes, layout.floats):
        path = given[name]
        if path.suffix.lower() in PICTURES:
            if not (is_float and len(shape) == 4):
                raise CommandError(
                    f"--input {name}={path} is a picture, but the input {name!r} takes values "
                    f"of shape {tuple(shape)}: give a .npy, .npz or .csv file.",
                    EXIT_USAGE,
                )
            x[name] = os.fspath(path)
            continue
        x[name], names = _read_values(name, path)
        if names is not None:
            feature_names[name] = names
    return x, feature_names or None, {n: os.fspath(p) for n, p in given.items()}


def explain_inputs(model, given, methods, report, top_k, class_names, target, layer,
                   preprocessing, verbose=1):  # fmt: skip
    """Explain the one prediction ``given`` (``{name: file}``) with every method into ``report``."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are written, never shown

    from ..explanation import explain_prediction

    x, feature_names, sources = read_inputs(model, given)
    explanations = []
    for method in methods:
        try:
            explanations.append(
                explain_prediction(
                    model,
                    x,
                    method=method,
                    top_k=top_k,
                    class_names=class_names,
                    preprocessing=preprocessing,
                    target=target,
                    layer=layer,
                    feature_names=feature_names,
                )  # fmt: skip
            )
        except (ValueError, TypeError) as error:  # shapes, an integer input, a layer, ...
            raise CommandError(f"{method}: {one_line(error)}", EXIT_USAGE) from None
        if verbose:
            print(f"explained with {method}", flush=True)
    source = ", ".join(f"{name}={file}" for name, file in sources.items())
    report.add_inputs("prediction", explanations, source=source)
    return report, report.write()
