"""A small demo model and sample pictures shipped with the package (no download needed).

The model is a ~40k-parameter CNN trained by ``scripts/train_demo_model.py`` on
pictures that script draws itself: five kinds of coloured shapes (circle, square,
triangle, cross, star) on random textures. It takes ``64 x 64 x 3`` pixels in
``[0, 255]`` (its first layer rescales them) and outputs five logits. The sample
pictures are ``128 x 128``; two of them hold two shapes, so the two top classes'
maps point at different places.

Example:
    >>> from keras_explainable.data import load_demo_model, demo_images, DEMO_CLASS_NAMES
    >>> model = load_demo_model()
    >>> explanation = ke.explain_prediction(model, demo_images()[0], class_names=DEMO_CLASS_NAMES)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .metadata import read_class_names

__all__ = [
    "DEMO_CLASS_NAMES",
    "demo_image_paths",
    "demo_images",
    "demo_model_path",
    "load_demo_model",
]

_HERE = resources.files(__name__)


def _path(name: str) -> Path:
    # the package is installed as files (setuptools, no zip imports): a real path
    return Path(str(_HERE / name))


#: The demo model's classes, in output order: stored in the model file itself
#: (:mod:`keras_explainable.data.metadata`), so ``keras-explainable explain`` names them too.
DEMO_CLASS_NAMES: tuple[str, ...] = tuple(read_class_names(_path("demo_model.keras")) or ())


def demo_model_path() -> Path:
    """Where the demo model's ``.keras`` file is."""
    return _path("demo_model.keras")


def load_demo_model():
    """Load the demo model (a fresh copy on each call).

    Returns:
        a ``keras.Model``: ``(batch, 64, 64, 3)`` pixels in ``[0, 255]`` -> 5 logits.

    Example:
        >>> from keras_explainable.data import load_demo_model
        >>> model = load_demo_model()
    """
    import keras

    return keras.saving.load_model(demo_model_path(), compile=False, safe_mode=True)


def demo_image_paths() -> list[Path]:
    """The sample pictures' files (PNG, 128 x 128 RGB), sorted by name."""
    return sorted(_path("samples").glob("*.png"))


def demo_images() -> list:
    """The sample pictures as RGB PIL images, in the order of :func:`demo_image_paths`."""
    from PIL import Image

    images = []
    for path in demo_image_paths():
        with Image.open(path) as picture:
            images.append(picture.convert("RGB"))
    return images
