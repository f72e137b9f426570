"""Class names carried by a ``.keras`` file, read without Keras.

A ``.keras`` file is a zip archive; its ``metadata.json`` (Keras writes the Keras
version and the date there) may also carry the model's class names,
``"class_names": [...]``. :func:`write_class_names` adds them to a saved model
without touching its weights or config; :func:`read_class_names` reads them back;
Keras ignores the key when it loads the model. ``keras-explainable explain`` labels
classes with them when no ``--class-names`` is given.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["read_class_names", "write_class_names"]

_METADATA = "metadata.json"


def read_class_names(path) -> list[str] | None:
    """The class names stored in a ``.keras`` file's metadata, or ``None``.

    Example:
        >>> from keras_explainable.data.metadata import read_class_names
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
        >>> from keras_explainable.data.metadata import write_class_names
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
