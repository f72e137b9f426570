"""The ``keras-explainable`` command: explain image classifiers from a shell.

Commands::

    keras-explainable demo [--out DIR]
    keras-explainable explain MODEL IMAGE_OR_FOLDER... [--method gradcam] [--top-k 1]
        [--layer NAME] [--out DIR] [--preprocess MODE] [--class-names FILE]
    keras-explainable methods

``explain`` loads ``MODEL`` (a ``.keras`` / ``.h5`` file, loaded with
``safe_mode=True``, or a ``keras.applications`` name such as ``resnet50v2``,
whose ImageNet weights Keras downloads on first use), explains every image and
writes one overlay PNG per image, method and class plus an ``index.html``
gallery into ``--out``. ``demo`` does the same, offline, with the small model
and sample pictures shipped in the package and several methods side by side.

Errors are one line on stderr, without a traceback (``--traceback`` shows it),
and the exit code says what went wrong:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     the explanation itself failed (an unexpected error)
2     bad command line: unknown option, method, preprocessing or layer name
3     a file or folder does not exist (model, image, class names), or a folder
      holds no pictures
4     the model cannot be loaded (not a Keras model, or its weights could not
      be downloaded)
5     an image cannot be decoded
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow, if not imported yet

import keras  # noqa: E402
import numpy as np  # noqa: E402

from . import __version__, inspection  # noqa: E402
from .explanation import METHODS, _expose, explain_prediction, get_method  # noqa: E402
from .report import Report  # noqa: E402
from .utils.images import IMAGE_EXTENSIONS, PREPROCESSINGS, load_image  # noqa: E402

PROGRAM = "keras-explainable"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_MODEL = 4
EXIT_IMAGE = 5

DEMO_METHODS = ("gradcam", "gradcampp", "scorecam", "layercam", "gradients", "occlusion")
_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class CommandError(Exception):
    """An error reported as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- models


def _applications() -> dict[str, object]:
    """``keras.applications`` constructors by lower-case name (``"resnet50v2"``)."""
    found = {}
    for name in dir(keras.applications):
        constructor = getattr(keras.applications, name)
        if name[:1].isupper() and callable(constructor):
            found[name.lower()] = constructor
    return found


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def load_model(spec: str):
    """Load a model file or a ``keras.applications`` model by name.

    Returns:
        ``(model, preprocessing, class_names)``: the preprocessing and class
        names are the application's own (``None`` for a file).

    Raises:
        CommandError: with ``EXIT_MISSING`` or ``EXIT_MODEL``.
    """
    path = Path(spec)
    if path.is_dir():
        raise CommandError(
            f"{spec} is a folder, not a model file: pass a .keras or .h5 file (Keras 3 cannot "
            "load TensorFlow SavedModel folders as models).",
            EXIT_MODEL,
        )
    if path.exists():
        _check_model_file(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001 - any failure means "not loadable"
            raise CommandError(
                f"{spec} is not a Keras model that can be loaded: "
                f"{type(error).__name__}: {_one_line(error)}",
                EXIT_MODEL,
            ) from None
        if not isinstance(model, keras.Model):
            raise CommandError(f"{spec} holds a {type(model).__name__}, not a model.", EXIT_MODEL)
        return model, None, None
    applications = _applications()
    key = spec.lower().replace("-", "").replace("_", "")
    if key not in applications:
        if path.suffix.lower() in _MODEL_SUFFIXES or os.sep in spec:
            raise CommandError(f"No such model file: {spec}", EXIT_MISSING)
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
            f"({type(error).__name__}: {_one_line(error)}). Keras downloads them on first use, "
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


def _build_application(constructor):
    try:
        return constructor(weights="imagenet", classifier_activation=None)
    except TypeError:  # applications without that argument
        return constructor(weights="imagenet")


def _check_model_file(path: Path) -> None:
    """Reject files that cannot be Keras models before Keras gives a confusing message."""
    import zipfile

    suffix = path.suffix.lower()
    if suffix not in _MODEL_SUFFIXES:
        raise CommandError(
            f"{path} is not a Keras model file: expected a .keras or .h5 file, got "
            f"{suffix or 'a file without extension'}.",
            EXIT_MODEL,
        )
    with open(path, "rb") as file:
        head = file.read(8)
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise CommandError(
            f"{path} is not a Keras model: a .keras file is a zip archive, and this one is not "
            "(damaged, or another format renamed).",
            EXIT_MODEL,
        )
    if suffix in (".h5", ".hdf5") and head != b"\x89HDF\r\n\x1a\n":
        raise CommandError(
            f"{path} is not a Keras model: it is not an HDF5 file (damaged, or another format "
            "renamed).",
            EXIT_MODEL,
        )


def _imagenet_class_names():
    """ImageNet class names from Keras' class index (cached or downloaded); None if unavailable."""
    try:
        from keras.src.applications import imagenet_utils

        path = keras.utils.get_file(
            "imagenet_class_index.json",
            imagenet_utils.CLASS_INDEX_PATH,
            cache_subdir="models",
            file_hash="c2c37ea517e94d9795004a39431a14cb",
        )
        with open(path) as file:
            index = json.load(file)
        return [index[str(i)][1] for i in range(len(index))]
    except Exception:  # noqa: BLE001 - names are a nicety: fall back to class indices
        return None


# --------------------------------------------------------------------------- inputs


def load_class_names(path: str) -> list[str] | dict[int, str]:
    """Read class names: a text file (one name per line) or JSON.

    JSON may be a list of names, ``{"0": "name", ...}`` or Keras' ImageNet index
    ``{"0": ["n01440764", "tench"], ...}``.
    """
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"No such class-names file: {path}", EXIT_MISSING)
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"{path} is not valid JSON: {error}", EXIT_USAGE) from None
        if isinstance(data, list):
            return [str(name) for name in data]
        if isinstance(data, dict):
            try:
                return {int(k): str(v[-1] if isinstance(v, list) else v) for k, v in data.items()}
            except ValueError:
                pass
        raise CommandError(
            f"{path}: expected a JSON list of names or an object {{index: name}}.", EXIT_USAGE
        )
    return [line.strip() for line in text.splitlines() if line.strip()]


def collect_images(paths: Sequence[str]) -> list[Path]:
    """Image files from files and folders (a folder's pictures, sorted, not recursive)."""
    found = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            pictures = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not pictures:
                raise CommandError(
                    f"The folder {spec} holds no pictures ({', '.join(IMAGE_EXTENSIONS)}).",
                    EXIT_MISSING,
                )
            found.extend(pictures)
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"No such image file or folder: {spec}", EXIT_MISSING)
    return found


def _check_decodable(paths: Sequence[Path]) -> None:
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as picture:
                picture.verify()
        except Exception as error:  # noqa: BLE001 - Pillow raises many kinds
            raise CommandError(
                f"Cannot decode the image {path}: {type(error).__name__}: {_one_line(error)}",
                EXIT_IMAGE,
            ) from None


def _parse_layer(value: str | None):
    if value is None:
        return None
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def _check_layer(model, layer, methods: Sequence[str]) -> None:
    """Fail early (exit 2) on a layer the model lacks, or a layer given to a non-CAM method."""
    if layer is None:
        return
    for name in methods:
        info = METHODS[name]
        if not info.uses_layer:
            cams = ", ".join(n for n, i in METHODS.items() if i.uses_layer)
            raise CommandError(
                f"--layer applies to CAM methods ({cams}); {name!r} explains the input pixels.",
                EXIT_USAGE,
            )
    try:
        shape = inspection.input_shape_of(model)
        _expose(model, layer, None if shape is None else (1,) + tuple(shape[1:]))
    except (ValueError, TypeError) as error:
        raise CommandError(_one_line(error), EXIT_USAGE) from None


def _methods(spec: str) -> list[str]:
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise CommandError("--method is empty; name at least one method.", EXIT_USAGE)
    try:
        return [get_method(name).name for name in names]
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None


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
) -> tuple[Report, Path]:
    """Explain every image with every method and write the report; returns it and its page."""
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
            )  # fmt: skip
            for name in methods
        ]
        report.add(path.name, explanations, source=str(path))
        if progress is not None:
            progress.update(count)
    return report, report.write()


def _details(model_spec, model, methods, layer, preprocessing_name, top_k) -> dict:
    return {
        "model": f"{model_spec} ({model.name}, {model.count_params():,} parameters)",
        "methods": ", ".join(f"{METHODS[m].title} ({METHODS[m].reference})" for m in methods),
        "layer": "automatic (shown per method)" if layer is None else str(layer),
        "preprocessing": preprocessing_name,
        "classes explained": f"top {top_k} per image",
        "backend": keras.backend.backend(),
    }


def command_explain(args) -> int:
    methods = _methods(args.method)
    if args.top_k < 1:
        raise CommandError(f"--top-k must be at least 1; got {args.top_k}.", EXIT_USAGE)
    images = collect_images(args.images)
    class_names = load_class_names(args.class_names) if args.class_names else None
    model, app_preprocessing, app_names = load_model(args.model)
    class_names = class_names if class_names is not None else app_names
    layer = _parse_layer(args.layer)
    _check_layer(model, layer, methods)
    _check_decodable(images)
    if args.preprocess is not None:
        preprocessing, preprocessing_name = args.preprocess, args.preprocess
    elif app_preprocessing is not None:
        preprocessing, preprocessing_name = app_preprocessing, f"{args.model}'s own"
    else:
        preprocessing, preprocessing_name = "none", "none"
    try:
        report, page = run(
            model, images, methods, Path(args.out), title=f"{PROGRAM}: {model.name}",
            details=_details(args.model, model, methods, layer, preprocessing_name, args.top_k),
            top_k=args.top_k, layer=layer, preprocessing=preprocessing,
            class_names=class_names, verbose=0 if args.quiet else 1,
        )  # fmt: skip
    except ValueError as error:  # e.g. class names that do not fit the model
        raise CommandError(_one_line(error), EXIT_USAGE) from None
    _print_written(report, page)
    return EXIT_OK


def command_demo(args) -> int:
    from . import data

    methods = _methods(args.methods)
    model = data.load_demo_model()
    images = data.demo_image_paths()
    report, page = run(
        model, images, methods, Path(args.out),
        title=f"{PROGRAM} demo: what a shape classifier looks at",
        details={
            "model": f"{model.name}: the demo CNN shipped in keras_explainable/data "
            f"({model.count_params():,} parameters, 64x64 RGB in, 5 classes out)",
            "classes": ", ".join(data.DEMO_CLASS_NAMES),
            "methods": ", ".join(f"{METHODS[m].title} ({METHODS[m].reference})" for m in methods),
            "classes explained": f"top {args.top_k} per image",
            "backend": keras.backend.backend(),
        },
        top_k=args.top_k, class_names=list(data.DEMO_CLASS_NAMES),
        verbose=0 if args.quiet else 1,
    )  # fmt: skip
    _print_written(report, page)
    return EXIT_OK


def command_methods(args) -> int:
    del args
    width = max(len(name) for name in METHODS)
    for family in ("CAM", "gradient", "perturbation"):
        print(f"{family} methods:")
        for name, info in METHODS.items():
            if info.family == family:
                print(f"  {name:<{width}}  {info.title}: {info.summary}.")
                print(f"  {'':<{width}}  {info.reference}")
    print(f"Use one with `{PROGRAM} explain MODEL IMAGE --method NAME` (several: a,b,c).")
    return EXIT_OK


def _print_written(report: Report, page: Path) -> None:
    overlays = sum(1 for f in report.files if f.parent.name == "overlays")
    print(
        f"Wrote {overlays} overlay(s) for {len(report)} image(s) to {page.parent}{os.sep}; "
        f"open {page}"
    )


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Explain the predictions of Keras 3 image classifiers and write an HTML "
        "report of heatmaps.",
        epilog=f"Start with `{PROGRAM} demo`. Exit codes: 0 ok, 1 failure, 2 bad arguments "
        "(method, layer, option), 3 missing file or folder, 4 model cannot be loaded, "
        "5 image cannot be decoded.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    explain = commands.add_parser(
        "explain", help="explain a model's predictions on images and write a report",
        description="Explain a model's predictions on images; write overlay PNGs and an "
        "index.html report.",
    )  # fmt: skip
    explain.add_argument(
        "model", help="a .keras/.h5 file, or a keras.applications name (e.g. resnet50v2)"
    )
    explain.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="pictures/folders")
    explain.add_argument(
        "--method", default="gradcam",
        help="method name, or several separated by commas (see `methods`); default gradcam",
    )  # fmt: skip
    explain.add_argument(
        "--top-k", type=int, default=1, help="explain the k top classes (default 1)"
    )
    explain.add_argument(
        "--layer", default=None,
        help="layer for CAM methods: a name, outer/inner path or index (default: automatic)",
    )  # fmt: skip
    explain.add_argument("--out", default="explanations", help="report folder (./explanations)")
    explain.add_argument(
        "--preprocess", choices=list(PREPROCESSINGS), default=None,
        help="input preprocessing after resizing: "
        + "; ".join(f"{k}: {v[1]}" for k, v in PREPROCESSINGS.items())
        + " (default: none for files, the application's own for keras.applications names)",
    )  # fmt: skip
    explain.add_argument(
        "--class-names", default=None, metavar="FILE",
        help="class names: a text file (one per line) or JSON (list or {index: name})",
    )  # fmt: skip
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(handler=command_explain)

    demo = commands.add_parser(
        "demo", help="explain the bundled demo model on its sample pictures (offline)",
        description="Explain the small demo model shipped in the package on its sample "
        "pictures, with several methods side by side. Needs no network.",
    )  # fmt: skip
    demo.add_argument("--out", default="keras-explainable-demo", help="report folder")
    demo.add_argument(
        "--methods", default=",".join(DEMO_METHODS),
        help=f"methods, separated by commas (default {','.join(DEMO_METHODS)})",
    )  # fmt: skip
    demo.add_argument("--top-k", type=int, default=2, help="classes per image (default 2)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(handler=command_demo)

    methods = commands.add_parser("methods", help="list the methods with family and reference")
    methods.set_defaults(handler=command_methods)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module's documentation).

    Example:
        >>> from keras_explainable.cli import main
        >>> main(["demo", "--out", "demo-report"])
        0
    """
    # TensorFlow logs a "retracing" warning once several methods are compiled in one
    # process (one compiled step each, by design); a command line has no use for it.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except CommandError as error:
        if args.traceback:
            traceback.print_exc()
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line, not a traceback
        if args.traceback:
            traceback.print_exc()
        print(
            f"{PROGRAM}: error: {type(error).__name__}: {_one_line(error)} "
            "(run with --traceback for details)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
