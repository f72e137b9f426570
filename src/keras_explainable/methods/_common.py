"""Helpers shared by the methods (framework-free)."""

from __future__ import annotations

from keras import ops

from .. import _inputs
from .. import targets as _targets
from .._axes import positive_axes  # noqa: F401  (re-exported for the methods)
from .._precision import widen  # noqa: F401  (re-exported for the methods)
from .._tokens import is_ids as _is_ids


def as_inputs(inputs, structured: bool = False, ids: bool = False):
    """Inputs as a floating-point backend tensor (numpy arrays are welcome).

    With ``structured``, a multi-input model's list, tuple or dict keeps its
    structure: every input becomes a tensor, integer inputs (token ids) stay
    integers. Without it, a structure is a clear error (the method explains
    models of one input). With ``ids``, a tensor of token ids stays integers.
    """
    if _inputs.is_structure(inputs):
        if not structured:
            check_single_input(inputs, "This method")
        return _inputs.pack(inputs, _inputs.as_float_leaves(inputs))
    inputs = ops.convert_to_tensor(inputs)
    if "float" not in str(inputs.dtype) and not (ids and _is_ids(inputs)):
        inputs = ops.cast(inputs, "float32")
    return inputs


def check_single_input(inputs, name: str) -> None:
    """A clear error for a method that explains models of one input only."""
    if _inputs.is_structure(inputs):
        raise ValueError(
            f"{name} explains models of one input; `inputs` is a {type(inputs).__name__} of "
            f"{len(inputs)}. For a multi-input model use gradients, gradients_x_inputs, "
            "integrated_gradients, occlusion, rise or smooth (one map per input), or a "
            "gradient CAM method (gradcam, gradcampp, layercam, ...) on a layer of one branch."
        )


def as_indices(indices):
    return None if indices is None else ops.cast(ops.convert_to_tensor(indices), "int32")


def unit_selector(indices, indices_axis=-1, indices_batch_dims=-1, target=None):
    """A ``score_fn`` for the backends: the explained units' ``(batch, units)`` scores.

    ``target=None``: the first output gathered at ``indices``; otherwise the
    bound target (see :func:`prepare_target`) applied to the outputs, checked.
    Scores of a mixed-precision model come out as float32 (see
    :mod:`keras_explainable._precision`): the backends differentiate the
    widened scores, so every method sees float32 scores and seeds its backward
    pass with float32 cotangents.
    """
    return _targets.selector(target, indices, indices_axis, indices_batch_dims)


def prepare_target(model, target):
    """``(model to run, bound target)`` for a method's ``target=`` argument.

    The target is checked and bound to the model (names resolved); the model to
    run is the one whose outputs the target reads (an exposed model's own model
    for every target but the default, see :func:`ke.targets`).
    """
    target = _targets.bound(target, model)
    return _targets.model_to_run(model, target), target


def is_default_target(target) -> bool:
    """Whether ``target`` scores like ``target=None`` (the default: classes)."""
    return target is None or type(target) is _targets.Classes  # noqa: E721


def tile_target(target, groups: int):
    """The target of a batch tiled with :func:`tile_batch` (per-sample rows tiled too)."""
    return None if target is None else target.tiled(groups)


def repeat_target(target, copies: int):
    """The target of a batch whose samples are repeated ``copies`` times, sample-major."""
    return None if target is None else target.repeated(copies)


def tile_batch(tensor, repeats: int):
    """``(batch, ...)`` -> ``(repeats * batch, ...)``: the whole batch, ``repeats`` times.

    Row ``g * batch + b`` is sample ``b`` of group ``g`` (group-major), which
    :func:`ungroup` undoes.
    """
    if repeats == 1:
        return tensor
    rank = len(tensor.shape)
    return ops.tile(tensor, (repeats,) + (1,) * (rank - 1))


def tile_indices(indices, repeats: int, indices_batch_dims: int = -1):
    """The unit indices of a batch tiled with :func:`tile_batch`.

    ``None`` (every unit) and shared indices (``indices_batch_dims == 0``) are
    the same for every row and are returned unchanged.
    """
    if indices is None or indices_batch_dims == 0:
        return indices
    return tile_batch(indices, repeats)


def ungroup(tensor, groups: int):
    """``(groups * batch, ...)`` -> ``(groups, batch, ...)`` (the inverse of ``tile_batch``)."""
    return ops.reshape(tensor, (groups, -1) + tuple(tensor.shape[1:]))


def chunked(total: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges covering ``range(total)`` in pieces of ``chunk_size``."""
    if chunk_size is None:
        return [(0, total)]
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def sum_along_path(step, alphas, weights, chunk_size):
    """``(totals, extra)``: the path methods' sums over the chunks of their path points.

    ``step(alpha, weight, count)`` gets one chunk of ``count`` points (``alpha`` and
    ``weight``, float32 tensors ``(count,)``) and returns ``(partials, extra)``: the
    chunk's weighted sums (a list of tensors, shaped alike for every chunk) and
    anything else. The partials of all chunks are added up; ``extra`` is that of
    the last chunk (the one holding the end of the path). ``chunk_size`` points
    go through one pass (``None``: all of them).

    Measured and kept as it is: one pass for all points is also the fastest on
    JAX on CPU, although XLA:CPU runs a pass of ``k`` batches' rows through a GRU
    up to 1.3x slower than ``k`` passes of one batch. A compiled loop over the
    chunks (``lax.scan``) was slower still (1.67x sixteen gradient calls, against
    1.29x for one pass and 1.14x for sixteen passes unrolled in the program, at
    3.5x the compile time).
    """
    totals = extra = None
    for start, stop in chunked(len(alphas), chunk_size):
        alpha = ops.convert_to_tensor(alphas[start:stop], "float32")
        weight = ops.convert_to_tensor(weights[start:stop], "float32")
        partials, extra = step(alpha, weight, stop - start)
        totals = partials if totals is None else [a + b for a, b in zip(totals, partials)]
    return totals, extra


def weighted_sum(grouped, weight):
    """``sum_k weight[k] * grouped[k]`` over the first axis (one chunk's path points)."""
    shape = (grouped.shape[0],) + (1,) * (len(grouped.shape) - 1)
    return ops.sum(grouped * ops.reshape(ops.cast(weight, grouped.dtype), shape), axis=0)


def check_chunk_size(chunk_size) -> None:
    """Raise a clear error unless ``chunk_size`` is ``None`` or a positive int."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size is a positive int (groups per call) or None (all at once); "
            f"got {chunk_size!r}."
        )
