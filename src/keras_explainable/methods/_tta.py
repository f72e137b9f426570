"""Test-time augmentation (``ke.methods.meta.tta``): a method on rescaled and flipped copies."""

from __future__ import annotations

from keras import ops

from .._axes import SPATIAL_AXIS
from .._inputs import is_float, is_structure, leaves, pack
from ..resizing import resize
from ..targets import as_target
from ._common import as_inputs, positive_axes, tile_batch, tile_indices, ungroup, widen
from ._wrapping import check_maps as _check_maps
from ._wrapping import describe as _describe


def tta(method, scales=(0.5, 1.5, 2.0), hflip: bool = True, resize_method: str = "bilinear"):
    """Test-time augmentation of any explaining method.

    The method runs on the original inputs and on each rescaled version
    (``round(scale * size)`` along every spatial axis), and — with ``hflip`` —
    on the flipped copy of each of those. Every map is brought back to the
    map size of the original pass (un-flipped, then resized with
    ``resize_method``) and the result is the mean over all
    ``(1 + len(scales)) * (2 if hflip else 1)`` passes. (The original
    keras-explainable left the unscaled pass and its flip out of the count.)
    The original pass is always included: a scale of ``1.0`` in ``scales``
    counts it a second time.

    ``hflip`` flips the last spatial axis: the width of images, the time axis
    of 1-D signals ``(batch, time, channels)``, the width of volumes
    ``(batch, depth, height, width, channels)``. The spatial axes must be the
    ones between batch and channels.

    Batching: each input size is one call of ``method``, the flipped copies
    stacked after the batch. The model must accept the rescaled sizes
    (e.g. built with ``keras.Input((None, None, 3))``).

    Scores: the returned scores are ``method``'s scores on the original,
    un-augmented inputs.

    Args:
        method: the explaining method to augment.
        scales: factors to rescale the inputs by (each > 0).
        hflip: also explain the flipped copy of every pass.
        resize_method: the interpolation (``"bilinear"``, ``"nearest"``, ...)
            for rescaling the inputs and bringing maps back.

    Returns:
        a method with the standard signature whose ``**params`` go to ``method``
        (a ``target`` too, unless it carries per-sample data such as a mask,
        which cannot follow the rescaling and flipping: ``ValueError``).

    Example:
        >>> augmented = ke.methods.meta.tta(ke.methods.cams.gradcam, scales=(0.5, 2.0))
        >>> scores, maps = ke.explain(augmented, model, x, y,
        ...                           postprocessing=ke.filters.positive_normalize)
    """
    if not callable(method):
        raise TypeError(f"tta() wraps an explaining method; got {type(method).__name__}.")
    try:
        scales = tuple(float(s) for s in scales)
    except (TypeError, ValueError) as error:
        raise ValueError(f"scales is a sequence of positive numbers; got {scales!r}.") from error
    if any(not s > 0 for s in scales):
        raise ValueError(f"Every scale must be > 0; got {scales}.")
    hflip = bool(hflip)
    copies = 2 if hflip else 1
    passes = (1 + len(scales)) * copies

    def augmented(
        model,
        inputs,
        indices=None,
        indices_axis: int = -1,
        indices_batch_dims: int = -1,
        spatial_axis=SPATIAL_AXIS,
        **params,
    ):
        structured = is_structure(inputs)
        inputs = as_inputs(inputs, structured=True)
        items = leaves(inputs) if structured else [inputs]
        # several inputs: those with the spatial axes are augmented, the others repeated
        rank = len(spatial_axis) + 2 if structured else len(inputs.shape)
        moved = [is_float(item) and len(item.shape) == rank for item in items]
        if not any(moved):
            shapes = ", ".join(str(tuple(item.shape)) for item in items)
            raise ValueError(
                f"tta rescales and flips inputs with {rank - 2} spatial axes "
                f"(spatial_axis={spatial_axis}); none of the inputs ({shapes}) has them."
            )
        axes = positive_axes(spatial_axis, rank)
        shown = next(item for item, m in zip(items, moved) if m)
        if list(axes) != list(range(1, rank - 1)):
            raise ValueError(
                f"tta needs (batch, *spatial, channels) inputs with spatial_axis naming every "
                f"axis between batch and channels; got spatial_axis={spatial_axis} for inputs "
                f"of shape {tuple(shown.shape)}."
            )
        sizes = [tuple(item.shape[a] for a in axes) if m else None for item, m in zip(items, moved)]
        if any(s is None for size in sizes if size for s in size):
            raise ValueError(f"tta needs static spatial sizes; got inputs of shape {sizes}.")
        last = axes[-1]
        tiled_indices = tile_indices(indices, copies, indices_batch_dims)
        target = as_target(params.get("target"))
        if target is not None and target.per_sample():
            raise ValueError(
                f"tta rescales and flips the inputs, which a target's per-sample data "
                f"({', '.join(target.per_sample())} of {target!r}) cannot follow; explain "
                "without tta, or with a target that reads the outputs only (e.g. "
                "ke.targets.segmentation() without a mask)."
            )
        if target is not None:
            params["target"] = target

        def explain_pass(xs):
            batch = [
                (ops.concatenate([x, ops.flip(x, axis=last)], axis=0) if m else tile_batch(x, 2))
                if hflip
                else x
                for x, m in zip(xs, moved)
            ]
            scores, maps = method(
                model,
                pack(inputs, batch) if structured else batch[0],
                indices=tiled_indices,
                indices_axis=indices_axis,
                indices_batch_dims=indices_batch_dims,
                spatial_axis=spatial_axis,
                **params,
            )
            # one map per input (each flipped back only where its input was flipped),
            # or a single map with the spatial axes (a CAM)
            every = leaves(maps) if is_structure(maps) else [maps]
            flipped = moved if is_structure(maps) else [True]
            views = []
            for one, flips in zip(every, flipped):
                if one is None:
                    views.append(None)
                    continue
                _check_maps(one, scores, "tta")
                if flips and len(one.shape) != rank:
                    raise ValueError(
                        f"tta needs maps with the inputs' spatial axes; the method returned "
                        f"maps of shape {tuple(one.shape)} for inputs of shape "
                        f"{tuple(batch[moved.index(True)].shape)}."
                    )
                one = ungroup(widen(one), copies)  # float16 maps: sum the passes in float32
                pair = [one[0]]
                if hflip:
                    pair.append(ops.flip(one[1], axis=last) if flips else one[1])
                views.append(pair)
            return ungroup(scores, copies)[0], views, flipped

        scores, first, flipped = explain_pass(items)
        targets = [None if v is None else tuple(v[0].shape[1:-1]) for v in first]
        totals = [None if v is None else (v[0] if len(v) == 1 else v[0] + v[1]) for v in first]
        for scale in scales:
            xs = [
                resize(x, tuple(max(1, int(round(scale * s))) for s in size), axes,
                       interpolation=resize_method) if m else x
                for x, m, size in zip(items, moved, sizes)
            ]  # fmt: skip
            try:
                _, views, _ = explain_pass(xs)
            except Exception as error:  # the framework's message, with what to do first
                scaled = [tuple(x.shape[1:-1]) for x, m in zip(xs, moved) if m]
                raise ValueError(
                    f"tta could not explain the inputs rescaled by {scale} to "
                    f"{scaled[0] if len(scaled) == 1 else scaled}: {error}. The model must "
                    "accept every rescaled size (build it with keras.Input((None, None, "
                    "channels))), or pass scales that it accepts."
                ) from error
            for k, pair in enumerate(views):
                for view in pair or ():
                    if flipped[k]:
                        view = resize(view, targets[k], axes, interpolation=resize_method)
                    totals[k] = totals[k] + view
        maps = [None if total is None else total / passes for total in totals]
        return scores, (pack(inputs, maps) if flipped is moved else maps[0])

    _describe(augmented, method, "tta", scales=scales, hflip=hflip, resize_method=resize_method)
    return augmented
