"""The commands that need Keras: loading models, explaining, writing the report.

Imported only once a command has checked its arguments and files (see
:mod:`keras_explainable.cli`), after the backend is chosen and the logs quieted.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from .. import inspection
from .._compat import imagenet_utils
from ..explanation import _expose, explain_prediction
from ..report import Report
from ..utils.images import load_image
from ._common import (
    EXIT_IMAGE,
    EXIT_MISSING,
    EXIT_MODEL,
    EXIT_USAGE,
    PROGRAM,
    CommandError,
    one_line,
    registry,
)
from .files import MODEL_SUFFIXES, check_model_file, read_class_names

# --------------------------------------------------------------------------- models


def _applications() -> dict[str, object]:
    """``keras.applications`` constructors by lower-case name (``"resnet50v2"``)."""
    found = {}
    for name in dir(keras.applications):
        constructor = getattr(keras.applications, name)
        if name[:1].isupper() and callable(constructor):
            found[name.lower()] = constructor
    return found


def load_model(spec: str):
    """Load a model file or a ``keras.applications`` model by name.

    Returns:
        ``(model, preprocessing, class_names)``: the application's own preprocessing
        and class names; for a file, no preprocessing and the names its metadata holds.

    Raises:
        CommandError: with ``EXIT_MISSING`` or ``EXIT_MODEL``.
    """
    path = Path(spec)
    if path.exists() or path.suffix.lower() in MODEL_SUFFIXES or os.sep in spec:
        path = check_model_file(spec)
        _register_keras_hub(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001 - any failure means "not loadable"
            raise CommandError(
                f"{spec} is not a Keras model that can be loaded: "
                f"{type(error).__name__}: {one_line(error)}",
                EXIT_MODEL,
            ) from None
        if not isinstance(model, keras.Model):
            raise CommandError(f"{spec} holds a {type(model).__name__}, not a model.", EXIT_MODEL)
        return model, None, read_class_names(path)
    applications = _applications()
    key = spec.lower().replace("-", "").replace("_", "")
    if key not in applications:
        close = difflib.get_close_matches(key, list(applications), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise CommandError(
            f"No such model file, and no keras.applications model named {spec!r}.{hint}",
            EXIT_MISSING,
        )
    constructor = applications[key]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "weights for input shape (224, 224)"
            model = _build_application(constructor)
    except Exception as error:  # noqa: BLE001 - mostly a failed download
        raise CommandError(
            f"Could not load {constructor.__name__} with its ImageNet weights "
            f"({type(error).__name__}: {one_line(error)}). Keras downloads them on first use, "
            "which needs the internet; offline, pass a .keras/.h5 file (or try "
            f"`{PROGRAM} demo`).",
            EXIT_MODEL,
        ) from None
    module = importlib.import_module(constructor.__module__)
    preprocess_input = getattr(module, "preprocess_input", None)
    preprocessing = None
    if preprocess_input is not None:
        preprocessing = lambda pixels: preprocess_input(np.array(pixels, np.float32))  # noqa: E731
    return model, preprocessing, _imagenet_class_names()


def _register_keras_hub(path: Path) -> None:
    """Import KerasHub (which registers its classes) when a .keras file holds its models."""
    try:
        with zipfile.ZipFile(path) as archive:
            uses = b'"keras_hub' in archive.read("config.json")
        if uses:
            importlib.import_module("keras_hub")
    except (OSError, KeyError, ImportError, zipfile.BadZipFile):
        pass  # not a zip (.h5) or no KerasHub: loading says what is wrong


def _build_application(constructor):
    try:
        return constructor(weights="imagenet", classifier_activation=None)
    except TypeError:  # applications without that argument
        return constructor(weights="imagenet")


def _imagenet_class_names():
    """ImageNet class names from Keras' class index (cached or downloaded); None if unavailable."""
    try:
        module = imagenet_utils()
        if module is None:
            return None
        path = keras.utils.get_file(
            "imagenet_class_index.json",
            module.CLASS_INDEX_PATH,
            cache_subdir="models",
            file_hash="c2c37ea517e94d9795004a39431a14cb",
        )
        with open(path) as file:
            index = json.load(file)
        return [index[str(i)][1] for i in range(len(index))]
    except Exception:  # noqa: BLE001 - names are a nicety: fall back to class indices
        return None


# --------------------------------------------------------------------------- layers


def parse_layer(value: str | None):
    if value is None:
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def parse_token_grid(value: str | None):
    """``--token-grid 14x14`` (or ``14,14``) as a tuple of ints; None when not given."""
    if value is None:
        return None
    parts = value.lower().replace(",", "x").split("x")
    if not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise CommandError(
            f"--token-grid takes the patch grid as GHxGW, e.g. 14x14; got {value!r}.", EXIT_USAGE
        )
    return tuple(int(part) for part in parts)


def check_layer(model, layer, methods: Sequence[str], tokens=None) -> None:
    """Fail early (exit 2) on a layer the model lacks, or a layer given to a non-CAM method.

    ``tokens``: ``{"token_grid": ..., "prefix_tokens": ...}`` (``--token-grid``,
    ``--prefix-tokens``), checked the same way.
    """
    tokens = {k: v for k, v in (tokens or {}).items() if v is not None}
    if layer is None and not tokens:
        return
    option = "--layer" if layer is not None else "--token-grid/--prefix-tokens"
    known, _ = registry()
    for name in methods:
        if not known[name].uses_layer:
            cams = ", ".join(n for n, i in known.items() if i.uses_layer)
            raise CommandError(
                f"{option} applies to CAM methods ({cams}); {name!r} explains the input pixels.",
                EXIT_USAGE,
            )
    try:
        shape = inspection.input_shape_of(model)
        _expose(model, layer, None if shape is None else (1,) + tuple(shape[1:]), **tokens)
    except (ValueError, TypeError) as error:
        raise CommandError(one_line(error), EXIT_USAGE) from None


# --------------------------------------------------------------------------- running


def run(
    model,
    images: Sequence[Path],
    methods: Sequence[str],
    out: Path,
    title: str,
    details: dict,
    top_k: int = 1,
    layer=None,
    preprocessing=None,
    class_names=None,
    verbose: int = 1,
    target=None,
    tokens=None,
) -> tuple[Report, Path]:
    """Explain every image with every method and write the report; returns it and its page.

    ``tokens``: ``token_grid`` / ``prefix_tokens`` for explain_prediction.
    """
    report = Report(out, title=title, details=details)
    progress = keras.utils.Progbar(len(images), unit_name="image") if verbose else None
    for count, path in enumerate(images, start=1):
        try:
            picture = load_image(path)
        except ValueError as error:
            raise CommandError(str(error), EXIT_IMAGE) from None
        explanations = [
            explain_prediction(
                model,
                picture,
                layer=layer,
                method=name,
                top_k=top_k,
                class_names=class_names,
                preprocessing=preprocessing or "none",
                target=target,
                **(tokens or {}),
            )  # fmt: skip
            for name in methods
        ]
        report.add(path.name, explanations, source=str(path))
        if progress is not None:
            progress.update(count)
    return report, report.write()


def describe_methods(methods: Sequence[str]) -> str:
    known, _ = registry()
    return ", ".join(f"{known[m].title} ({known[m].reference})" for m in methods)


def build_target(args, model):
    """The ``ke.targets`` target of ``--output`` / ``--regression`` (``None``: the classes).

    Raises:
        CommandError: ``EXIT_USAGE`` for an output the model does not have.
    """
    from .. import targets

    if args.output is None and args.regression is None:
        return None, "the classes of the first output"
    then, what = None, "classes"
    if args.regression is not None:
        sign = -1 if args.decrease else 1
        then = targets.regression(args.regression, sign)
        what = f"regression value {args.regression} ({'decrease' if sign < 0 else 'increase'})"
    target = then
    where = "the first output"
    if args.output is not None:
        key = parse_layer(args.output)  # a position or a name, as for --layer
        target = targets.output(key, then=then)
        where = f"output {key!r}"
    try:
        targets.bound(target, model)
    except (ValueError, TypeError) as error:
        raise CommandError(one_line(error), EXIT_USAGE) from None
    return target, f"{what} of {where}"


def explain(args, methods, images, class_names) -> tuple[Report, Path]:
    """``keras-explainable explain``, once its arguments and files are checked."""
    model, app_preprocessing, model_names = load_model(args.model)
    target, explained = build_target(args, model)
    if class_names is None and target is None:  # the file's names are the first output's
        class_names = model_names
    layer = parse_layer(args.layer)
    tokens = {"token_grid": parse_token_grid(args.token_grid), "prefix_tokens": args.prefix_tokens}
    tokens = {k: v for k, v in tokens.items() if v is not None}
    check_layer(model, layer, methods, tokens)
    if args.preprocess is not None:
        preprocessing, preprocessing_name = args.preprocess, args.preprocess
    elif app_preprocessing is not None:
        preprocessing, preprocessing_name = app_preprocessing, f"{args.model}'s own"
    else:
        preprocessing, preprocessing_name = "none", "none"
    details = {
        "model": f"{args.model} ({model.name}, {model.count_params():,} parameters)",
        "methods": describe_methods(methods),
        "layer": "automatic (shown per method)" if layer is None else str(layer),
        "preprocessing": preprocessing_name,
        "explained": explained,
        "classes explained": f"top {args.top_k} per image",
        "backend": keras.backend.backend(),
    }
    try:
        return run(
            model, images, methods, Path(args.out), title=f"{PROGRAM}: {model.name}",
            details=details, top_k=args.top_k, layer=layer, preprocessing=preprocessing,
            class_names=class_names, verbose=0 if args.quiet else 1, target=target,
            tokens=tokens,
        )  # fmt: skip
    except ValueError as error:  # e.g. class names that do not fit the model
        raise CommandError(one_line(error), EXIT_USAGE) from None


def explain_texts(args, methods, texts, class_names) -> tuple[Report, Path]:
    """``keras-explainable explain MODEL --text ...``, once its arguments are checked."""
    from .texts import explain_texts as run_texts
    from .texts import load_preprocessor

    model, _, model_names = load_model(args.model)
    target, explained = build_target(args, model)
    if class_names is None and target is None:
        class_names = model_names
    preprocessor = load_preprocessor(args.preprocessor)
    details = {
        "model": f"{args.model} ({model.name}, {model.count_params():,} parameters)",
        "methods": describe_methods(methods),
        "preprocessor": f"{args.preprocessor} ({type(preprocessor).__name__})",
        "explained": explained,
        "classes explained": f"top {args.top_k} per text",
        "backend": keras.backend.backend(),
    }
    report = Report(Path(args.out), title=f"{PROGRAM}: {model.name}", details=details)
    return run_texts(
        model, texts, methods, preprocessor, report, top_k=args.top_k, class_names=class_names,
        target=target, merge_words=args.merge_words, verbose=0 if args.quiet else 1,
    )  # fmt: skip


def explain_inputs(args, methods, given, class_names) -> tuple[Report, Path]:
    """``keras-explainable explain MODEL --input NAME=FILE ...``, once its files are checked."""
    from .inputs import explain_inputs as run_inputs

    model, app_preprocessing, model_names = load_model(args.model)
    target, explained = build_target(args, model)
    if class_names is None and target is None:
        class_names = model_names
    preprocessing = args.preprocess or app_preprocessing or "none"
    details = {
        "model": f"{args.model} ({model.name}, {model.count_params():,} parameters)",
        "methods": describe_methods(methods),
        "preprocessing": args.preprocess or ("own" if app_preprocessing else "none"),
        "explained": explained,
        "classes explained": f"top {args.top_k}",
        "backend": keras.backend.backend(),
    }
    report = Report(Path(args.out), title=f"{PROGRAM}: {model.name}", details=details)
    return run_inputs(
        model, given, methods, report, top_k=args.top_k, class_names=class_names, target=target,
        layer=parse_layer(args.layer), preprocessing=preprocessing,
        verbose=0 if args.quiet else 1,
    )  # fmt: skip


def demo(args, methods, out: Path) -> tuple[Report, Path]:
    """``keras-explainable demo``, once the report folder is cleared for writing."""
    from .. import data

    model = data.load_demo_model()
    names = list(data.DEMO_CLASS_NAMES)
    return run(
        model, data.demo_image_paths(), methods, out,
        title=f"{PROGRAM} demo: what a shape classifier looks at",
        details={
            "model": f"{model.name}: the demo CNN shipped in keras_explainable/data "
            f"({model.count_params():,} parameters, 64x64 RGB in, {len(names)} classes out)",
            "classes": ", ".join(names),
            "methods": describe_methods(methods),
            "classes explained": f"top {args.top_k} per image",
            "backend": keras.backend.backend(),
        },
        top_k=args.top_k, class_names=names, verbose=0 if args.quiet else 1,
    )  # fmt: skip
