"""Reading pictures and turning them into model inputs.

Pictures are decoded and resized with Pillow; the named preprocessings are the
usual conventions of pretrained image models, applied to RGB pixels in
``[0, 255]`` after resizing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from .visualization import _to_numpy, as_display_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESSINGS",
    "load_image",
    "prepare_image",
    "preprocess",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_IMAGENET_MEAN_RGB = np.array([123.68, 116.779, 103.939], np.float32)  # caffe, in 0-255
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _three_channels(pixels, name):
    if pixels.shape[-1] != 3:
        raise ValueError(
            f"The {name!r} preprocessing needs RGB images (3 channels); the input has "
            f"{pixels.shape[-1]}. Use 'none', 'scale01' or 'minus1to1'."
        )


def _caffe(pixels):
    _three_channels(pixels, "imagenet-caffe")
    return (pixels - _IMAGENET_MEAN_RGB)[..., ::-1]  # BGR, mean-centred


def _torch(pixels):
    _three_channels(pixels, "imagenet-torch")
    return (pixels / 255.0 - _TORCH_MEAN) / _TORCH_STD


PREPROCESSINGS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "none": (lambda pixels: pixels, "pixels as they are, in [0, 255]"),
    "scale01": (lambda pixels: pixels / 255.0, "pixels / 255, in [0, 1]"),
    "minus1to1": (lambda pixels: pixels / 127.5 - 1.0, "pixels / 127.5 - 1, in [-1, 1]"),
    "imagenet-caffe": (_caffe, "RGB -> BGR minus the ImageNet mean (VGG, ResNet v1)"),
    "imagenet-torch": (_torch, "pixels / 255, ImageNet mean and std (DenseNet, torchvision)"),
}


def preprocess(pixels, mode="none") -> np.ndarray:
    """Apply a named (or given) preprocessing to RGB pixels in ``[0, 255]``.

    Args:
        pixels: ``(..., H, W, C)`` pixel values in ``[0, 255]``.
        mode: a name of :data:`PREPROCESSINGS` (``"none"``, ``"scale01"``,
            ``"minus1to1"``, ``"imagenet-caffe"``, ``"imagenet-torch"``), ``None``
            (same as ``"none"``) or a function ``f(pixels) -> inputs``.

    Returns:
        ``float32`` model inputs of the same shape.

    Example:
        >>> ke.utils.preprocess(np.full((2, 2, 3), 255.0), "minus1to1").max()
        1.0
    """
    pixels = np.asarray(pixels, np.float32)
    if mode is None:
        mode = "none"
    if callable(mode):
        return np.asarray(_to_numpy(mode(pixels)), np.float32)
    if mode not in PREPROCESSINGS:
        raise ValueError(
            f"Unknown preprocessing {mode!r}; use one of {', '.join(PREPROCESSINGS)} "
            "or a function f(pixels) -> inputs."
        )
    return np.asarray(PREPROCESSINGS[mode][0](pixels), np.float32)


def load_image(path) -> Image.Image:
    """Decode a picture file into a PIL image (fully read, file closed).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a picture Pillow can decode.

    Example:
        >>> picture = ke.utils.load_image("cat.jpg")
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such image: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            picture = opened.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"Cannot decode the image {path}: {error}") from None
    return picture


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _match_channels(pixels: np.ndarray, channels: int | None) -> np.ndarray:
    have = pixels.shape[-1]
    if channels is None or have == channels:
        return pixels
    if channels == 3 and have == 1:
        return np.repeat(pixels, 3, axis=-1)
    if channels == 3 and have == 4:
        return pixels[..., :3]
    if channels == 1 and have in (3, 4):  # ITU-R 601 luma, as Pillow's "L" conversion
        luma = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
        return luma[..., None]
    raise ValueError(
        f"The image has {have} channels but the model takes {channels}; convert it first."
    )


def _resize_pixels(pixels: np.ndarray, size: tuple[int | None, int | None]) -> np.ndarray:
    height, width = size
    height = pixels.shape[0] if height is None else int(height)
    width = pixels.shape[1] if width is None else int(width)
    if pixels.shape[:2] == (height, width):
        return pixels
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[..., c], np.float32), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(pixels.shape[-1])
    ]
    return np.stack(planes, axis=-1)


def prepare_image(image, input_shape=None, preprocessing="none"):
    """Turn a picture into a batch of one input for a model, and a picture to draw on.

    Args:
        image: a PIL image, a file path, or an array / backend tensor ``(H, W)``,
            ``(H, W, C)`` or ``(1, H, W, C)``. PIL images and ``uint8`` arrays are
            pixels in ``[0, 255]``; float arrays are used as they are (pass them
            already preprocessed, with ``preprocessing="none"``).
        input_shape: the model's input shape ``(batch, H, W, C)`` (``None``
            entries are free); the image is resized (Pillow, bilinear) and its
            channels converted (gray <-> RGB, alpha dropped) to match.
        preprocessing: see :func:`preprocess`; applied after resizing.

    Returns:
        ``(inputs, picture)``: a ``float32`` array ``(1, H, W, C)`` and the
        original picture as an RGB PIL image (at its own resolution).

    Example:
        >>> inputs, picture = ke.utils.prepare_image("cat.jpg", model.inputs[0].shape)
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    height = width = channels = None
    if input_shape is not None:
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(
                f"The model takes inputs of shape {shape}; only image models "
                "(batch, height, width, channels) are supported here."
            )
        height, width, channels = shape[1:]
    if isinstance(image, Image.Image):
        mode = _MODES.get(channels, "RGB")
        if image.mode in ("I;16", "I;16B", "I", "F") and mode != "L":
            image = image.convert("L")  # 16-bit / float gray: scale through 8-bit gray
        picture = image.convert("RGB")
        pixels = np.asarray(image.convert(mode), np.float32)
    else:
        array = _to_numpy(image)
        if array.ndim == 4:
            if array.shape[0] != 1:
                raise ValueError(
                    f"The image has shape {array.shape}: a batch of {array.shape[0]}. Explain "
                    "one image per call (or use ke.explain for batches)."
                )
            array = array[0]
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(
                f"The image has shape {array.shape}; expected (height, width), "
                "(height, width, channels) or (1, height, width, channels)."
            )
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(f"The image holds {array.dtype} values; pass numbers.")
        shown = array if array.shape[-1] in (1, 3, 4) else array[..., :1]
        picture = Image.fromarray(as_display_image(shown)).convert("RGB")
        pixels = array.astype(np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    pixels = _resize_pixels(_match_channels(pixels, channels), (height, width))
    inputs = preprocess(pixels[None], preprocessing)
    return inputs, picture
