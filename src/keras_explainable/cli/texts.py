"""``keras-explainable explain MODEL --text "..." --preprocessor SPEC``: texts on the command line.

``--preprocessor`` names what turns a text into the model's token ids, one of:

- a vocabulary file (any existing file that is not ``.py``): one token per line,
  a token's id its line number; words are split as Keras' ``TextVectorization``
  does by default (:class:`keras_explainable.text.WordTokenizer`);
- a KerasHub preset: a folder written by ``save_to_preset`` (its preprocessor,
  else its tokenizer), or a preset name / ``kaggle://`` / ``hf://`` handle (a
  text classifier's preprocessor; downloaded by KerasHub on first use);
- ``module:name`` or ``path/to/file.py:name``: a KerasHub preprocessor or
  tokenizer, or a function ``text -> ids`` (give it an ``id_to_token``
  attribute to show words rather than ids).

The checks that need no Keras (:func:`preprocessor_kind`, :func:`read_texts`)
run before a framework is imported; :func:`load_preprocessor` and
:func:`explain_texts` run after.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._common import EXIT_MISSING, EXIT_MODEL, EXIT_USAGE, CommandError, one_line

HELP = (
    "what turns a text into token ids: a vocabulary file (one token per line, "
    "TextVectorization's word splitting), a KerasHub preset folder or name, or "
    "module:function / file.py:function (text -> ids)"
)

#: ``keras_explainable.text.TEXT_METHODS``, written out so that checking needs no Keras.
TEXT_METHODS = (
    "gradients",
    "gradients_x_inputs",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)


def _is_reference(spec: str) -> bool:
    """``module:name`` / ``file.py:name`` (not a drive letter, not a ``scheme://`` handle)."""
    if "://" in spec or ":" not in spec:
        return False
    left, _, right = spec.rpartition(":")
    names = right.split(".")
    if not left or not all(part.isidentifier() for part in names):
        return False
    return left.endswith(".py") or all(part.isidentifier() for part in left.split("."))


def preprocessor_kind(spec: str | None) -> str:
    """``"vocabulary"``, ``"preset"`` or ``"callable"``, checked without importing Keras.

    Raises:
        CommandError: ``EXIT_USAGE`` without a preprocessor; ``EXIT_MISSING`` for a
            file or folder that does not exist.
    """
    if spec is None or not spec.strip():
        raise CommandError(
            "--text/--text-file need --preprocessor: " + HELP + " (see docs/text.md).", EXIT_USAGE
        )
    if _is_reference(spec):
        left = spec.rpartition(":")[0]
        if left.endswith(".py") and not Path(left).is_file():
            raise CommandError(f"No such preprocessor file: {left}", EXIT_MISSING)
        return "callable"
    path = Path(spec)
    if path.is_dir():
        return "preset"
    if path.is_file():
        if path.suffix.lower() == ".py":
            raise CommandError(
                f"--preprocessor {spec}: name the function in it, e.g. {spec}:encode.", EXIT_USAGE
            )
        return "vocabulary"
    if "://" in spec:
        return "preset"
    if os.sep in spec or path.suffix or (os.altsep and os.altsep in spec):
        raise CommandError(
            f"No such preprocessor file or folder: {spec} (a vocabulary file, a KerasHub "
            "preset folder, or module:function).",
            EXIT_MISSING,
        )
    return "preset"  # a KerasHub preset name


def read_texts(texts: Sequence[str] | None, files: Sequence[str] | None) -> list[tuple]:
    """``(name, text, source)`` of every ``--text`` and every non-blank line of ``--text-file``.

    Raises:
        CommandError: ``EXIT_MISSING`` for a missing file; ``EXIT_USAGE`` for an
            empty text or a file without text.
    """
    found = []
    for position, text in enumerate(texts or (), start=1):
        if not text.strip():
            raise CommandError(f"--text number {position} is empty; give at least one word.",
                               EXIT_USAGE)  # fmt: skip
        found.append((f"text {len(found) + 1}", text, "--text"))
    for spec in files or ():
        path = Path(spec)
        if not path.is_file():
            raise CommandError(f"No such text file: {spec}", EXIT_MISSING)
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
        if not kept:
            raise CommandError(f"The text file {spec} holds no text (one per line).", EXIT_USAGE)
        for number, line in kept:
            found.append((f"text {len(found) + 1}", line.strip(), f"{path.name}:{number}"))
    return found


def check_text_flags(args, methods) -> list[tuple]:
    """``--text``/``--text-file``: no pictures, no image options, token methods, a preprocessor."""
    if args.images:
        raise CommandError(
            f"Explain pictures or texts, not both: drop {args.images[0]} or --text/--text-file.",
            EXIT_USAGE,
        )
    given = [flag for flag, value in (("--layer", args.layer), ("--token-grid", args.token_grid),
             ("--prefix-tokens", args.prefix_tokens), ("--preprocess", args.preprocess))
             if value is not None]  # fmt: skip
    if given:
        raise CommandError(
            f"{given[0]} is for pictures; a text is explained at its token embedding "
            "(--preprocessor turns it into token ids).",
            EXIT_USAGE,
        )
    other = [name for name in methods if name not in TEXT_METHODS]
    if other:
        raise CommandError(
            f"The method {other[0]!r} does not explain token ids; for text use one of "
            f"{', '.join(TEXT_METHODS)}.",
            EXIT_USAGE,
        )
    preprocessor_kind(args.preprocessor)
    return read_texts(args.text, args.text_file)


def check_image_flags(args) -> None:
    if not args.images:
        raise CommandError(
            "Give pictures (files or folders) to explain, or a text with --text/--text-file.",
            EXIT_USAGE,
        )
    if args.preprocessor is not None or args.merge_words:
        flag = "--preprocessor" if args.preprocessor is not None else "--merge-words"
        raise CommandError(f"{flag} is for texts: add --text or --text-file.", EXIT_USAGE)


# --------------------------------------------------------------------------- with Keras


def _load_reference(spec: str):
    left, _, name = spec.rpartition(":")
    try:
        if left.endswith(".py"):
            unique = f"_keras_explainable_preprocessor_{abs(hash(os.path.abspath(left)))}"
            found = importlib.util.spec_from_file_location(unique, left)
            module = importlib.util.module_from_spec(found)
            sys.modules[unique] = module
            found.loader.exec_module(module)
        else:
            module = importlib.import_module(left)
    except Exception as error:  # noqa: BLE001 - the user's module: any failure
        raise CommandError(
            f"--preprocessor {spec}: cannot import {left} ({type(error).__name__}: "
            f"{one_line(error)}).",
            EXIT_USAGE,
        ) from None
    value = module
    for part in name.split("."):
        if not hasattr(value, part):
            close = [n for n in dir(value) if not n.startswith("_") and callable(getattr(value, n))]
            raise CommandError(
                f"--preprocessor {spec}: {left} has no {part!r}; its callables: "
                f"{', '.join(close[:8]) or 'none'}.",
                EXIT_USAGE,
            )
        value = getattr(value, part)
    if not callable(value):
        raise CommandError(
            f"--preprocessor {spec} is a {type(value).__name__}, not a function text -> ids "
            "(or a KerasHub preprocessor or tokenizer).",
            EXIT_USAGE,
        )
    return value


def _load_preset(spec: str):
    try:
        import keras_hub
    except ImportError:
        raise CommandError(
            f"--preprocessor {spec} names a KerasHub preset, and KerasHub is not installed "
            "(pip install keras-hub); or pass a vocabulary file or module:function.",
            EXIT_USAGE,
        ) from None
    import keras

    folder = Path(spec)
    try:
        if folder.is_dir() and (folder / "preprocessor.json").is_file():
            config = json.loads((folder / "preprocessor.json").read_text(encoding="utf-8"))
            klass = keras.saving.get_registered_object(config.get("registered_name", ""))
            if klass is not None:
                return klass.from_preset(spec)
        if folder.is_dir() and not (folder / "tokenizer.json").is_file():
            raise ValueError("the folder holds neither preprocessor.json nor tokenizer.json")
        if folder.is_dir():
            return keras_hub.tokenizers.Tokenizer.from_preset(spec)
        return keras_hub.models.TextClassifierPreprocessor.from_preset(spec)
    except Exception as error:  # noqa: BLE001 - missing files, no network, not a preset
        raise CommandError(
            f"Could not load the KerasHub preset {spec} as a preprocessor "
            f"({type(error).__name__}: {one_line(error)}). A preset folder is what "
            "save_to_preset writes (config.json with preprocessor.json or tokenizer.json).",
            EXIT_MODEL,
        ) from None


def load_preprocessor(spec: str):
    """The preprocessor ``--preprocessor`` names (see the module's documentation)."""
    kind = preprocessor_kind(spec)
    if kind == "callable":
        return _load_reference(spec)
    if kind == "preset":
        return _load_preset(spec)
    from ..text import WordTokenizer

    try:
        return WordTokenizer(spec)
    except (UnicodeDecodeError, ValueError) as error:
        raise CommandError(
            f"--preprocessor {spec} is not a vocabulary file (UTF-8 text, one token per line): "
            f"{one_line(error)}",
            EXIT_USAGE,
        ) from None


def explain_texts(model, texts, methods, preprocessor, report, top_k, class_names, target,
                  merge_words=False, verbose=1):  # fmt: skip
    """Explain every ``(name, text, source)`` with every method into ``report``."""
    import keras

    from ..explanation import explain_prediction

    progress = keras.utils.Progbar(len(texts), unit_name="text") if verbose else None
    for count, (name, text, source) in enumerate(texts, start=1):
        try:
            explanations = [
                explain_prediction(
                    model,
                    text,
                    preprocessor=preprocessor,
                    method=method,
                    top_k=top_k,
                    class_names=class_names,
                    target=target,
                )  # fmt: skip
                for method in methods
            ]
        except (ValueError, TypeError) as error:  # the preprocessor's output, the ids, ...
            raise CommandError(f"{source} ({text[:40]!r}): {one_line(error)}", EXIT_USAGE) from None
        report.add(name, explanations, source=source, merge_words=merge_words)
        if progress is not None:
            progress.update(count)
    return report, report.write()


__all__ = ["HELP", "TEXT_METHODS", "check_image_flags", "check_text_flags", "explain_texts",
           "load_preprocessor", "preprocessor_kind", "read_texts"]  # fmt: skip
