"""Resizing of channels-last signals and maps with 1, 2 or 3 spatial axes."""

from __future__ import annotations

from keras import ops

from ._axes import positive_axes


def resize(x, size, spatial_axis=(-3, -2), interpolation: str = "bilinear"):
    """Resize the spatial axes of ``x`` (``(batch, *spatial, channels)``) to ``size``.

    Two spatial axes use ``keras.ops.image.resize``; one and three are handled
    separably (a 3-D resize is a 2-D resize of each slice followed by a 1-D
    resize along depth), which equals trilinear interpolation.

    Args:
        x: the tensor; its spatial axes must be contiguous and followed by channels.
        size: the target size, one int per spatial axis.
        spatial_axis: the spatial axes.
        interpolation: ``"bilinear"`` (linear along each axis) or ``"nearest"``.

    Returns:
        the resized tensor.
    """
    x = ops.convert_to_tensor(x)
    rank = len(x.shape)
    axes = positive_axes(spatial_axis, rank)
    if list(axes) != list(range(1, rank - 1)):
        raise ValueError(
            f"resize expects (batch, *spatial, channels) with spatial_axis covering the axes "
            f"between them; got spatial_axis={spatial_axis} for rank {rank}."
        )
    size = tuple(int(s) for s in size)
    if len(size) != len(axes):
        raise ValueError(f"size {size} has {len(size)} entries for {len(axes)} spatial axes.")
    current = tuple(x.shape[1:-1])
    if current == size:
        return x
    if len(axes) == 2:
        return _resize_2d(x, size, interpolation)
    if len(axes) == 1:
        resized = _resize_2d(x[:, :, None, :], (size[0], 1), interpolation)
        return resized[:, :, 0, :]
    if len(axes) == 3:
        batch, depth, _, _, channels = ops.shape(x)
        planes = ops.reshape(x, (-1,) + tuple(x.shape[2:]))
        planes = _resize_2d(planes, size[1:], interpolation)
        volume = ops.reshape(planes, (batch, depth, size[1] * size[2], channels))
        volume = _resize_2d(volume, (size[0], size[1] * size[2]), interpolation)
        return ops.reshape(volume, (batch,) + size + (channels,))
    raise ValueError(f"Only 1, 2 or 3 spatial axes can be resized; got {len(axes)}.")


def _resize_2d(x, size, interpolation):
    original_dtype = x.dtype
    if "float" not in str(original_dtype):
        x = ops.cast(x, "float32")
    return ops.image.resize(
        x, size, interpolation=interpolation, antialias=False, data_format="channels_last"
    )
