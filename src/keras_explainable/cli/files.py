"""Checks on the files a command is given, and class names: all without Keras.

A ``.keras`` file is a zip archive; its ``metadata.json`` may carry the model's class
names (``"class_names": [...]``), which :func:`write_class_names` adds without touching
the weights and :func:`read_class_names` reads back. Keras ignores the extra key.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from ..utils.images import IMAGE_EXTENSIONS
from ._common import EXIT_IMAGE, EXIT_MISSING, EXIT_MODEL, EXIT_USAGE, CommandError, one_line

__all__ = ["check_model_file", "collect_images", "load_class_names", "read_class_names",
           "write_class_names"]  # fmt: skip

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
_METADATA = "metadata.json"


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


def read_class_names(path) -> list[str] | None:
    """The class names stored in a ``.keras`` file's metadata, or ``None``.

    Example:
        >>> from keras_explainable.cli.files import read_class_names
        >>> from keras_explainable.data import demo_model_path
        >>> read_class_names(demo_model_path())
        ['circle', 'square', 'triangle', 'cross', 'star']
    """
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read(_METADATA))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    names = metadata.get("class_names") if isinstance(metadata, dict) else None
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        return names
    return None


def write_class_names(path, names: Sequence[str]) -> None:
    """Store class names in a ``.keras`` file's metadata (in place; the weights are untouched).

    ``keras-explainable explain model.keras ...`` then labels classes by these names
    without ``--class-names``.

    Example:
        >>> model.save("model.keras")
        >>> write_class_names("model.keras", ["cat", "dog"])
    """
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    if _METADATA not in [info.filename for info, _ in entries]:
        raise ValueError(f"{path} has no {_METADATA}: not a Keras 3 .keras file.")
    handle, temporary = tempfile.mkstemp(suffix=".keras", dir=path.parent)
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            for info, content in entries:
                if info.filename == _METADATA:
                    metadata = json.loads(content)
                    metadata["class_names"] = [str(name) for name in names]
                    content = json.dumps(metadata).encode("utf-8")
                archive.writestr(info, content)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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
