"""Checks on the files a command is given, and class-name files: all without Keras.

Class names stored in a ``.keras`` file come from :mod:`keras_explainable.data.metadata`.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..data.metadata import read_class_names, write_class_names
from ._common import EXIT_IMAGE, EXIT_MISSING, EXIT_MODEL, EXIT_USAGE, CommandError, one_line

__all__ = ["check_model_file", "collect_images", "load_class_names", "read_class_names",
           "write_class_names"]  # fmt: skip

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
#: ``utils.images.IMAGE_EXTENSIONS``, written out so that checking files needs no numpy.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_model_path(spec: str) -> bool:
    """Whether ``spec`` names a file (an existing path, a model suffix, or a folder in it)."""
    path = Path(spec)
    return path.exists() or path.suffix.lower() in MODEL_SUFFIXES or os.sep in spec


def check_model_file(spec: str) -> Path:
    """The model file ``spec``, checked to exist and to look like a Keras model.

    Raises:
        CommandError: ``EXIT_MISSING`` (no such file) or ``EXIT_MODEL`` (not a model).
    """
    path = Path(spec)
    if path.is_dir():
        raise CommandError(
            f"{spec} is a folder, not a model file: pass a .keras or .h5 file (Keras 3 cannot "
            "load TensorFlow SavedModel folders as models).",
            EXIT_MODEL,
        )
    if not path.exists():
        raise CommandError(f"No such model file: {spec}", EXIT_MISSING)
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
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
    return path


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


def collect_images(paths: Sequence[str], extensions: Sequence[str] = IMAGE_EXTENSIONS):
    """Image files from files and folders (a folder's pictures, sorted, not recursive)."""
    found = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            pictures = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions
            )
            if not pictures:
                raise CommandError(
                    f"The folder {spec} holds no pictures ({', '.join(extensions)}).",
                    EXIT_MISSING,
                )
            found.extend(pictures)
        elif path.is_file():
            found.append(path)
        else:
            raise CommandError(f"No such image file or folder: {spec}", EXIT_MISSING)
    return found


def check_decodable(paths: Sequence[Path]) -> None:
    """Raise ``EXIT_IMAGE`` for a file Pillow cannot decode."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as picture:
                picture.verify()
        except Exception as error:  # noqa: BLE001 - Pillow raises many kinds
            raise CommandError(
                f"Cannot decode the image {path}: {type(error).__name__}: {one_line(error)}",
                EXIT_IMAGE,
            ) from None
