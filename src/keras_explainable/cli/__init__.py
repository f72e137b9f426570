"""The ``keras-explainable`` command: explain image classifiers from a shell.

Commands::

    keras-explainable demo [--out DIR] [--force]
    keras-explainable explain MODEL IMAGE_OR_FOLDER... [--method gradcam] [--top-k 1]
        [--layer NAME] [--token-grid GHxGW] [--prefix-tokens N] [--out DIR]
        [--preprocess MODE] [--class-names FILE] [--output NAME] [--regression [INDEX] [--decrease]]
    keras-explainable explain MODEL --text "a sentence" [--text-file FILE] --preprocessor SPEC
        [--method integrated_gradients] [--merge-words] [--top-k 1] [--out DIR] ...
    keras-explainable explain MODEL --input NAME=FILE --input NAME=FILE ... [--method ...]
    keras-explainable methods

``explain`` loads ``MODEL`` (a ``.keras`` / ``.h5`` file, loaded with
``safe_mode=True``, or a ``keras.applications`` name such as ``resnet50v2``,
whose ImageNet weights Keras downloads on first use), explains every image and
writes one overlay PNG per image, method and class plus an ``index.html``
gallery into ``--out``. With ``--text`` (a text, repeatable) or ``--text-file``
(one text per line) it explains texts instead, by a token method (Integrated
Gradients by default), shown highlighted in the same report; ``--preprocessor``
names what turns a text into token ids (a vocabulary file, a KerasHub preset,
or ``module:function``: :mod:`keras_explainable.cli.texts`). ``--input NAME=FILE``
(one per input of a multi-input model: a picture, or ``.npy``/``.npz``/``.csv`` values;
:mod:`keras_explainable.cli.inputs`) explains one prediction: a figure per method and
the feature vectors' weights. ``--output NAME``
explains one output of a multi-output model (a name or a position),
``--regression INDEX`` a regression value instead of classes (``--decrease``: what lowers it); see
:mod:`keras_explainable.targets`. Class names come from ``--class-names``, else from
the ``.keras`` file's metadata, for the first output's classes
(:func:`keras_explainable.cli.files.write_class_names` stores them there), else
the classes are numbered. ``demo`` does the same, offline, with the small model
and sample pictures shipped in the package and several methods side by side.

Fast and quiet: ``--help``, ``--version``, ``methods`` and errors in the command
line or its files answer without importing Keras or a framework. Before Keras is
imported, the frameworks' start-up logs are silenced (``--verbose`` keeps them)
and, when ``KERAS_BACKEND`` is unset and Keras' own choice is not installed, an
installed backend is picked (:mod:`keras_explainable.cli.environment`).

Errors are one line on stderr, without a traceback (``--traceback`` shows it),
and the exit code says what went wrong:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     the explanation itself failed (an unexpected error), or no backend installed
2     bad command line: unknown option, method, preprocessing or layer name; a
      demo folder that is not empty and not the demo's own (without ``--force``)
3     a file or folder does not exist (model, image, class names), or a folder
      holds no pictures
4     the model cannot be loaded (not a Keras model, or its weights could not
      be downloaded)
5     an image cannot be decoded
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ._common import (
    DEMO_METHODS,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PROGRAM,
    CommandError,
    check_target_flags,
    method_names,
    one_line,
    print_written,
    registry,
)
from .environment import filtered_stderr, quiet_frameworks, use_installed_backend
from .inputs import check_input_flags
from .texts import HELP as PREPROCESSOR_HELP
from .texts import check_image_flags, check_text_flags

__all__ = ["DEMO_MARKER", "CommandError", "build_parser", "main"]

#: The file ``demo`` leaves in its report folder: the folder is the demo's own, and a later
#: ``demo`` may write into it again.
DEMO_MARKER = ".keras-explainable-demo"


# --------------------------------------------------------------------------- commands


def _load_commands():
    """The Keras side of the command line, imported once a backend is settled."""
    if use_installed_backend() is None:
        raise CommandError(
            "No Keras backend is installed. Install one, e.g. `pip install jax` (the smallest on a "
            'CPU), or `pip install -e ".[jax]"` in a clone of keras-explainable.',
            EXIT_FAILURE,
        )
    from . import commands

    return commands


def command_explain(args) -> int:
    from .files import (
        check_decodable,
        check_model_file,
        collect_images,
        is_model_path,
        load_class_names,
    )

    texts = args.text or args.text_file
    default = "gradients" if args.input else "integrated_gradients" if texts else "gradcam"
    methods = method_names(args.method or default)
    if args.top_k < 1:
        raise CommandError(f"--top-k must be at least 1; got {args.top_k}.", EXIT_USAGE)
    check_target_flags(args, methods)
    if args.input:  # a multi-input model: --input NAME=FILE ... (cli/inputs.py)
        given = check_input_flags(args)
        class_names = load_class_names(args.class_names) if args.class_names else None
        if is_model_path(args.model):
            check_model_file(args.model)
        explained = _load_commands().explain_inputs(args, methods, given, class_names)
        print_written(*explained)
        return EXIT_OK
    if texts:
        texts = check_text_flags(args, methods)
    else:
        check_image_flags(args)
    images = collect_images(args.images)
    class_names = load_class_names(args.class_names) if args.class_names else None
    if is_model_path(args.model):
        check_model_file(args.model)
    check_decodable(images)
    commands = _load_commands()
    if texts:
        report, page = commands.explain_texts(args, methods, texts, class_names)
    else:
        report, page = commands.explain(args, methods, images, class_names)
    print_written(report, page)
    return EXIT_OK


def prepare_demo_folder(out: Path, force: bool = False) -> Path:
    """Make ``out`` ready for the demo: refuse a non-empty folder the demo did not create.

    The demo marks its folders with :data:`DEMO_MARKER`, so running it twice reuses
    its own folder, while a folder of the user's is never written into without
    ``force``.
    """
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file, not a folder.", EXIT_USAGE)
    if out.is_dir() and not force and not (out / DEMO_MARKER).exists() and any(out.iterdir()):
        raise CommandError(
            f"{out} is not empty and was not written by `{PROGRAM} demo`: pass --force to "
            "write into it anyway, or choose another --out.",
            EXIT_USAGE,
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text(
        f"Written by `{PROGRAM} demo`; a later demo may overwrite this folder.\n"
    )
    return out


def command_demo(args) -> int:
    methods = method_names(args.methods)
    if args.top_k < 1:
        raise CommandError(f"--top-k must be at least 1; got {args.top_k}.", EXIT_USAGE)
    out = Path(args.out)
    prepare_demo_folder(out, args.force)
    report, page = _load_commands().demo(args, methods, out)
    print_written(report, page)
    return EXIT_OK


def command_methods(args) -> int:
    del args
    known, _ = registry()
    width = max(len(name) for name in known)
    families = list(dict.fromkeys(info.family for info in known.values()))
    for family in families:
        print(f"{family} methods:")
        for name, info in known.items():
            if info.family == family:
                old = [a for a in getattr(info, "aliases", ()) if a.isidentifier()]
                also = f" (also: {', '.join(old)})" if old else ""
                print(f"  {name:<{width}}  {info.title}: {info.summary}.{also}")
                print(f"  {'':<{width}}  {info.reference}")
    print(f"Use one with `{PROGRAM} explain MODEL IMAGE --method NAME` (several: a,b,c).")
    return EXIT_OK


# --------------------------------------------------------------------------- parser

#: The ``--preprocess`` modes and what each does: ``utils.images.PREPROCESSINGS``' names,
#: written out so that ``--help`` needs no numpy (tests/test_cli.py checks they agree).
PREPROCESSINGS = {
    "none": "pixels as they are, in [0, 255]",
    "scale01": "pixels / 255, in [0, 1]",
    "minus1to1": "pixels / 127.5 - 1, in [-1, 1]",
    "imagenet-caffe": "RGB -> BGR minus the ImageNet mean (VGG, ResNet v1)",
    "imagenet-torch": "pixels / 255, ImageNet mean and std (DenseNet, torchvision)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Explain the predictions of Keras 3 image classifiers and write an HTML "
        "report of heatmaps.",
        epilog=f"Start with `{PROGRAM} demo`. The backend is Keras' (KERAS_BACKEND); when that "
        "is unset and TensorFlow is missing, an installed one is used. Exit codes: 0 ok, "
        "1 failure, 2 bad arguments (method, layer, option), 3 missing file or folder, "
        "4 model cannot be loaded, 5 image cannot be decoded.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="keep the frameworks' start-up logs (silenced by default)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    explain = commands.add_parser(
        "explain", help="explain a model's predictions on images and write a report",
        description="Explain a model's predictions on images (or texts, with --text and "
        "--preprocessor); write overlay PNGs and an index.html report.",
    )  # fmt: skip
    explain.add_argument(
        "model", help="a .keras/.h5 file, or a keras.applications name (e.g. resnet50v2)"
    )
    explain.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER", help="pictures/folders")
    explain.add_argument(
        "--text", action="append", metavar="TEXT",
        help="a text to explain instead of pictures (repeat for several); needs --preprocessor",
    )  # fmt: skip
    explain.add_argument(
        "--text-file", action="append", metavar="FILE",
        help="a UTF-8 file of texts to explain, one per line (blank lines skipped)",
    )  # fmt: skip
    explain.add_argument(
        "--input", action="append", metavar="NAME=FILE",
        help="a multi-input model: one input by name, a picture or .npy/.npz/.csv values "
        "(repeat for every input)",
    )  # fmt: skip
    explain.add_argument("--preprocessor", default=None, metavar="SPEC", help=PREPROCESSOR_HELP)
    explain.add_argument(
        "--merge-words", action="store_true",
        help="texts: show word pieces (##ing, ▁word) joined into words, weights summed",
    )  # fmt: skip
    explain.add_argument(
        "--method", default=None,
        help="method name, or several separated by commas (see `methods`); default gradcam, "
        "integrated_gradients for texts, gradients for --input",
    )  # fmt: skip
    explain.add_argument(
        "--top-k", type=int, default=1, help="explain the k top classes (default 1)"
    )
    explain.add_argument(
        "--layer", default=None,
        help="layer for CAM methods: a name, outer/inner path or index (default: automatic)",
    )  # fmt: skip
    explain.add_argument(
        "--token-grid", default=None, metavar="GHxGW",
        help="a vision transformer's token layer: its patch grid, e.g. 14x14 (default: guessed)",
    )  # fmt: skip
    explain.add_argument(
        "--prefix-tokens", type=int, default=None, metavar="N",
        help="tokens before the patch tokens (class, distillation, registers; default: guessed)",
    )  # fmt: skip
    explain.add_argument("--out", default="explanations", help="report folder (./explanations)")
    explain.add_argument(
        "--preprocess", choices=list(PREPROCESSINGS), default=None,
        help="input preprocessing after resizing: "
        + "; ".join(f"{k}: {v}" for k, v in PREPROCESSINGS.items())
        + " (default: none for files, the application's own for keras.applications names)",
    )  # fmt: skip
    explain.add_argument(
        "--class-names", default=None, metavar="FILE",
        help="class names: a text file (one per line) or JSON (list or {index: name}); "
        "default: the names stored in the .keras file, if any",
    )  # fmt: skip
    explain.add_argument(
        "--output", default=None, metavar="NAME",
        help="explain this output of a multi-output model: its name or position "
        "(default: the first output)",
    )  # fmt: skip
    explain.add_argument(
        "--regression", type=int, nargs="?", const=0, default=None, metavar="INDEX",
        help="explain the regression value in column INDEX (default 0) of the output, "
        "instead of classes",
    )  # fmt: skip
    explain.add_argument(
        "--decrease", action="store_true",
        help="with --regression: explain what lowers the value (default: what raises it)",
    )  # fmt: skip
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(handler=command_explain)

    demo = commands.add_parser(
        "demo", help="explain the bundled demo model on its sample pictures (offline)",
        description="Explain the small demo model shipped in the package on its sample "
        "pictures, with several methods side by side. Needs no network.",
    )  # fmt: skip
    demo.add_argument(
        "--out", default="keras-explainable-demo",
        help="report folder (./keras-explainable-demo); a non-empty folder the demo did not "
        "write is refused unless --force",
    )  # fmt: skip
    demo.add_argument(
        "--force", action="store_true", help="write into --out even if it holds other files"
    )
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
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if (
            extra
            and getattr(args, "images", None) is not None
            and not any(part.startswith("-") for part in extra)
        ):  # pictures after options (`explain MODEL --top-k 2 a.png`): still pictures
            args.images += extra
        elif extra:
            parser.parse_args(argv)  # argparse's own error, as without parse_known_args
    except SystemExit as exit_:  # --help, --version, or argparse's own usage error
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        return _run(args)
    quiet_frameworks()
    if argv is not None:  # called in-process (tests, scripts): leave their stderr alone
        return _run(args)
    with filtered_stderr():
        return _run(args)


def _run(args) -> int:
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
            f"{PROGRAM}: error: {type(error).__name__}: {one_line(error)} "
            "(run with --traceback for details)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
