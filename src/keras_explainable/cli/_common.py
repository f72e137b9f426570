"""Exit codes, the one-line error, and the method registry as the command line sees it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROGRAM = "keras-explainable"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING = 3
EXIT_MODEL = 4
EXIT_IMAGE = 5

DEMO_METHODS = ("gradcam", "gradcampp", "scorecam", "layercam", "gradients", "occlusion")


class CommandError(Exception):
    """An error reported as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def one_line(error: BaseException, limit: int | None = 300) -> str:
    """``error``'s message on one line, cut to ``limit`` characters (``None``: not cut)."""
    text = " ".join(str(error).split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def registry():
    """``(METHODS, get)``: the method registry, which imports no framework.

    ``keras_explainable.methods.registry`` when it exists; else the older table of
    ``keras_explainable.explanation`` (which imports Keras).
    """
    try:
        from ..methods import registry as found

        return found.METHODS, found.get
    except ImportError:
        from ..explanation import METHODS, get_method

        return METHODS, get_method


def method_names(spec: str, stream=None) -> list[str]:
    """The API names of the comma-separated methods in ``spec``; old spellings get a note.

    Raises:
        CommandError: ``EXIT_USAGE`` for an empty list or an unknown name.
    """
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise CommandError("--method is empty; name at least one method.", EXIT_USAGE)
    _, get = registry()
    found = []
    for name in names:
        try:
            canonical = get(name).name
        except ValueError as error:  # the closest names, then every name: never cut
            raise CommandError(one_line(error, limit=None), EXIT_USAGE) from None
        if name.lower().replace("-", "_") != canonical:
            print(
                f"{PROGRAM}: note: method {name!r} is called {canonical!r} in the API; using it.",
                file=stream or sys.stderr,
            )
        found.append(canonical)
    return found


def check_target_flags(args, methods) -> None:
    """``--output`` / ``--regression`` / ``--decrease``: consistent, for methods taking them."""
    if args.decrease and args.regression is None:
        raise CommandError(
            "--decrease explains what lowers a regression value; add --regression [INDEX].",
            EXIT_USAGE,
        )
    if args.regression is not None and args.regression < 0:
        raise CommandError(f"--regression INDEX is >= 0; got {args.regression}.", EXIT_USAGE)
    if args.output is None and args.regression is None:
        return
    known, _ = registry()
    fixed = [name for name in methods if not getattr(known[name], "any_target", True)]
    if fixed:
        raise CommandError(
            f"--output/--regression choose what is explained, which {', '.join(fixed)} cannot "
            "follow (its weights are the classifier's); use gradcam.",
            EXIT_USAGE,
        )


def print_written(report, page: Path) -> None:
    """The line saying what was written where."""
    overlays = sum(1 for f in report.files if f.parent.name == "overlays")
    folder = page.parent.resolve()
    if any("inputs" in entry for entry in getattr(report, "_entries", ())):
        print(f"Wrote {overlays} figure(s) to {folder}{os.sep}; open {page.resolve()}")
        return
    if getattr(report, "texts", 0):
        print(f"Explained {report.texts} text(s) in {folder}{os.sep}; open {page.resolve()}")
        return
    print(
        f"Wrote {overlays} overlay(s) for {len(report)} image(s) to {folder}{os.sep}; "
        f"open {page.resolve()}"
    )
