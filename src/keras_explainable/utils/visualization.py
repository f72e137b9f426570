"""Pictures of explanations: a grid of images with maps on top, and overlays.

Colours come from matplotlib's colormaps and every resize is Pillow's bilinear
filter, so nothing here reimplements image processing. Only ``matplotlib``,
``Pillow`` and ``numpy`` are used: it works whatever the Keras backend is (backend
tensors are converted with ``keras.ops.convert_to_numpy``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["as_display_image", "get_dims", "overlay", "visualize"]

MAX_COLUMNS = 8


# --------------------------------------------------------------------------- arrays


def _to_numpy(value) -> np.ndarray:
    """A numpy array from a numpy array, a PIL image, a list or a backend tensor."""
    if isinstance(value, Image.Image):
        return np.asarray(value)
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError):
        from keras import ops  # backend tensors that refuse np.asarray (torch on GPU)

        return ops.convert_to_numpy(value)


def _as_picture(value, what: str) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3|4)``: squeeze a single channel, check the rank."""
    array = _to_numpy(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)):
        return array
    raise ValueError(
        f"{what} has shape {array.shape}; expected (height, width), (height, width, 1), "
        "(height, width, 3) or (height, width, 4). For a batch, pass a list of images "
        "(or index one sample, e.g. maps[0])."
    )


def _as_map(value, what: str) -> np.ndarray:
    """``(H, W)`` floats from ``(H, W)`` or ``(H, W, 1)``."""
    array = _to_numpy(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(
            f"{what} has shape {array.shape}; a map is drawn one per call, (height, width) or "
            "(height, width, 1): select one sample and unit, e.g. maps[0, ..., 0]."
        )
    return array.astype(np.float32)


def as_display_image(image) -> np.ndarray:
    """Scale an image to ``uint8`` for display, keeping its channels.

    - ``uint8`` and ``bool`` images are kept (bool becomes 0/255);
    - floats already in ``[0, 1]`` are scaled by 255;
    - floats in ``[0, 255]`` holding values above 1 are taken as 0-255 pixels;
    - anything else (e.g. a ``[-1, 1]`` or mean-centred input) is min-max
      normalized over all its values.

    Args:
        image: a numpy array, PIL image or backend tensor, ``(H, W)`` or
            ``(H, W, 1|3|4)``.

    Returns:
        a ``uint8`` array, ``(H, W)`` or ``(H, W, 3|4)``.

    Example:
        >>> ke.utils.as_display_image(np.linspace(-1, 1, 12).reshape(3, 4)).max()
        255
    """
    array = _as_picture(image, "The image")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        scaled = array * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = array
    else:
        scaled = (array - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _as_rgb(image) -> np.ndarray:
    """``(H, W, 3)`` uint8, gray replicated and alpha dropped."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    pixels = as_display_image(image)
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=-1)
    return pixels[..., :3]


def _resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float map to ``(height, width)`` with Pillow's bilinear filter."""
    height, width = size
    if heatmap.shape == (height, width):
        return heatmap
    picture = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32), mode="F")
    return np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR))


def _colormap(cmap):
    import matplotlib

    if cmap is None or isinstance(cmap, str):
        try:
            return matplotlib.colormaps[cmap or "jet"]
        except KeyError:
            known = ", ".join(sorted(m for m in matplotlib.colormaps if not m.endswith("_r"))[:12])
            raise ValueError(
                f"Unknown colormap {cmap!r}; use a matplotlib colormap name such as {known}, ..."
            ) from None
    return cmap  # a matplotlib Colormap


def _unit_range(heatmap: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` kept as they are; other maps min-max normalized."""
    heatmap = np.nan_to_num(heatmap.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(heatmap.min(initial=0.0)), float(heatmap.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        return heatmap
    return (heatmap - low) / max(high - low, 1e-12)


# --------------------------------------------------------------------------- overlay


def overlay(image, map, cmap="jet", alpha: float = 0.5) -> np.ndarray:
    """Blend a colour-mapped explanation map over an image.

    The map is resized to the image (Pillow, bilinear), coloured with a
    matplotlib colormap and mixed in: ``(1 - alpha) * image + alpha *
    cmap(map)``. A map whose values lie in ``[0, 1]`` (what the shortcuts'
    ``postprocessing`` returns) is coloured as it is, so a weak map stays
    cold; any other map is min-max normalized first.

    Args:
        image: the picture, a numpy array or PIL image, ``(H, W)``, ``(H, W, 1)``,
            ``(H, W, 3)`` or ``(H, W, 4)``; ``uint8`` or floats (see
            :func:`as_display_image` for how floats are scaled).
        map: the explanation map, ``(h, w)`` or ``(h, w, 1)``, any resolution.
        cmap: a matplotlib colormap or its name.
        alpha: the weight of the coloured map, in ``[0, 1]``.

    Returns:
        an ``(H, W, 3)`` ``uint8`` RGB array at the image's resolution.

    Example:
        >>> scores, cams = ke.gradcam(model, x, y)
        >>> picture = ke.utils.overlay(x[0], cams[0, ..., 0], alpha=0.4)
        >>> PIL.Image.fromarray(picture).save("overlay.png")
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)):
        raise TypeError(f"`alpha` is a number in [0, 1]; got {type(alpha).__name__}.")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"`alpha` must lie in [0, 1]; got {alpha}.")
    rgb = _as_rgb(image)
    heatmap = _resize_map(_unit_range(_as_map(map, "The map")), rgb.shape[:2])
    colours = _colormap(cmap)(np.clip(heatmap, 0.0, 1.0))[..., :3]  # floats in [0, 1]
    mixed = (1.0 - float(alpha)) * rgb.astype(np.float32) + float(alpha) * 255.0 * colours
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- grids


def get_dims(count: int, rows: int | None = None, cols: int | None = None) -> tuple[int, int]:
    """The grid ``(rows, cols)`` that holds ``count`` pictures.

    With neither given, up to ``8`` columns are used; with one given, the other
    is derived from it.

    Example:
        >>> ke.utils.get_dims(24)
        (3, 8)
    """
    for name, value in (("rows", rows), ("cols", cols)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"`{name}` is a positive int or None; got {value!r}.")
        if value is not None and value < 1:
            raise ValueError(f"`{name}` must be at least 1; got {value}.")
    if rows is None and cols is None:
        cols = min(count, MAX_COLUMNS) or 1
    if rows is None:
        rows = max(1, math.ceil(count / cols))
    if cols is None:
        cols = max(1, math.ceil(count / rows))
    if rows * cols < count:
        raise ValueError(
            f"A grid of rows={rows} x cols={cols} holds {rows * cols} pictures, fewer than the "
            f"{count} given; raise `rows`/`cols` or leave one of them None."
        )
    return rows, cols


def _as_list(values, name: str) -> list:
    if isinstance(values, (Image.Image, str, bytes)):
        raise TypeError(
            f"`{name}` must be a list (or a batch array), not a single {type(values).__name__}."
        )
    if isinstance(values, np.ndarray) or hasattr(values, "shape"):
        return list(_to_numpy(values))  # a batch: split along the first axis
    return list(values)


def visualize(
    images,
    titles: Sequence[str] | None = None,
    overlays=None,
    overlay_alpha: float = 0.75,
    rows: int | None = None,
    cols: int | None = None,
    figsize: tuple[float, float] | None = None,
    cmap=None,
    overlay_cmap=None,
    to_file=None,
    to_buffer=None,
    subplots_ws: float | None = None,
    subplots_hs: float | None = None,
    dpi: int = 100,
):
    """Draw a grid of images, optionally with explanation maps laid over them.

    Args:
        images: a list of pictures (numpy arrays, PIL images or backend tensors:
            ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``), or a batch
            array ``(N, H, W[, C])``. Float pictures outside ``[0, 1]`` are
            rescaled for display (see :func:`as_display_image`); a single-channel
            picture is drawn with ``cmap`` (``"gray"`` by default for inputs; a
            map passed as an image gets ``overlay_cmap``'s colours only if you
            pass ``cmap``).
        titles: one title per picture (``None`` entries leave a picture untitled).
        overlays: one map (or ``None``) per picture, ``(h, w)`` or ``(h, w, 1)``
            at any resolution: resized to its picture (Pillow, bilinear) and drawn
            on top with ``overlay_cmap`` and ``overlay_alpha``. Maps in ``[0, 1]``
            are coloured as they are, others min-max normalized.
        overlay_alpha: the opacity of the overlays.
        rows: grid rows (derived from ``cols`` when ``None``).
        cols: grid columns (up to 8 when both are ``None``).
        figsize: the figure size in inches; default ``(2 * cols, 2 * rows)``.
        cmap: colormap for single-channel pictures (default ``"gray"``).
        overlay_cmap: colormap for the overlays (default ``"jet"``).
        to_file: a path (or file object): the figure is saved there as an image
            (format from the extension, PNG for file objects).
        to_buffer: a writable binary buffer (e.g. ``io.BytesIO()``) or ``True``:
            the figure is written to it as PNG and a ``PIL.Image`` of it is
            returned.
        subplots_ws: horizontal space between pictures (fraction of a picture's
            width; default 0.05).
        subplots_hs: vertical space between pictures (default 0.05, or 0.25 with
            titles).
        dpi: resolution of the saved or buffered picture.

    Returns:
        a ``matplotlib.figure.Figure`` (it shows itself in Jupyter; it is not
        attached to ``pyplot``, so call ``fig.savefig`` or pass ``to_file`` in
        a script), or a ``PIL.Image.Image`` when ``to_buffer`` is given.

    Example:
        >>> scores, cams = ke.gradcam(model, x, y)
        >>> ke.utils.visualize([*x, *x], overlays=[None] * len(x) + [*cams], rows=2)
        >>> picture = ke.utils.visualize(x, overlays=cams, to_buffer=True)  # a PIL image
    """
    from matplotlib.figure import Figure

    pictures = _as_list(images, "images")
    if not pictures:
        raise ValueError("`images` is empty: there is nothing to draw.")
    count = len(pictures)
    titles = [None] * count if titles is None else list(titles)
    maps = [None] * count if overlays is None else _as_list(overlays, "overlays")
    for name, values in (("titles", titles), ("overlays", maps)):
        if len(values) != count:
            raise ValueError(
                f"`{name}` has {len(values)} entries for {count} images; give one per image "
                "(None where there is nothing)."
            )
    if not 0.0 <= float(overlay_alpha) <= 1.0:
        raise ValueError(f"`overlay_alpha` must lie in [0, 1]; got {overlay_alpha}.")
    rows, cols = get_dims(count, rows, cols)
    figsize = figsize or (2.0 * cols, 2.0 * rows + (0.3 * rows if any(titles) else 0.0))
    image_cmap = _colormap(cmap or "gray")
    map_cmap = _colormap(overlay_cmap)

    figure = Figure(figsize=figsize, dpi=dpi)
    figure.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=0.99 if not any(titles) else 0.95,
        wspace=0.05 if subplots_ws is None else subplots_ws,
        hspace=(0.25 if any(titles) else 0.05) if subplots_hs is None else subplots_hs,
    )  # fmt: skip
    axes = figure.subplots(rows, cols, squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= count:
            continue
        picture = as_display_image(pictures[index])
        axis.imshow(picture, cmap=image_cmap if picture.ndim == 2 else None, vmin=0, vmax=255)
        if maps[index] is not None:
            heatmap = _as_map(maps[index], f"overlays[{index}]")
            heatmap = _resize_map(_unit_range(heatmap), picture.shape[:2])
            axis.imshow(heatmap, cmap=map_cmap, alpha=float(overlay_alpha), vmin=0.0, vmax=1.0)
        if titles[index]:
            axis.set_title(str(titles[index]), fontsize=9)

    if to_file is not None:
        named = isinstance(to_file, (str, os.PathLike))
        figure.savefig(to_file, dpi=dpi, format=None if named else "png")
    if to_buffer is not None and to_buffer is not False:
        buffer = io.BytesIO() if to_buffer is True else to_buffer
        figure.savefig(buffer, format="png", dpi=dpi)
        buffer.seek(0)
        picture = Image.open(buffer)
        picture.load()
        return picture
    return figure
