"""``explain``: run an explaining method over a batch or a whole dataset.

The loop lives here; the compiled steps and their cache in :mod:`.step`, the
checks in :mod:`.checks`, the ``.npy`` writer in :mod:`.writer`.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from .. import inspection, targets
from .._axes import SPATIAL_AXIS
from .._branches import branch_input_of_rank
from . import checks, multi, tokens
from .data import Source, is_array_like
from .step import CompiledStep, explain_step, get_step, padded_size, run_padded
from .writer import InputsWriter, MapsWriter

__all__ = ["CompiledStep", "explain", "explain_step", "get_step"]


def explain(
    method: Callable,
    model,
    x,
    y=None,
    batch_size: int | None = None,
    verbose: str | int = "auto",
    steps: int | None = None,
    callbacks: list | None = None,
    max_queue_size: int = 10,
    workers: int = 1,
    use_multiprocessing: bool = False,
    force: bool = False,
    maps_file: str | os.PathLike | None = None,
    return_maps: bool = True,
    **method_params: Any,
):
    """Explain ``model``'s outputs on ``x`` with an explaining ``method``.

    The step (method + postprocessing + resizing) is compiled once per method,
    parameters and batch shape: the last partial batch is padded to the batch
    size, so a dataset of any length is traced once, and later calls with the
    same method and parameters reuse the step. The several units of a sample
    are explained in one vectorized pass, not one pass per unit.

    Inputs are read one batch at a time (a memory-mapped array is never copied
    whole); with ``maps_file`` the maps leave memory one batch at a time too.

    Args:
        method: an explaining method, e.g. ``ke.methods.cams.gradcam``.
        model: the model to explain (never modified).
        x: inputs ``(samples, *spatial, channels)``: a numpy array, a backend
            tensor, a ``tf.data.Dataset``, a ``keras.utils.PyDataset``, a torch
            ``DataLoader`` or a generator (with ``steps``). Dataset elements are
            ``x`` or ``(x, units)``. For a multi-input model, ``x`` (and each
            element's ``x``) is a list, tuple or dict matching ``model.inputs``;
            gradient and perturbation methods then return one map per explained
            input in that structure (docs/multi_input.md).
        y: the units to explain: ``(samples, units)`` integers, ``(samples,)``
            (one unit per sample) or ``None`` (every unit).
        batch_size: samples per step (default: 32 for arrays, or all the
            samples of a shorter array; for datasets, the size of their first
            batch). A dataset batched otherwise is re-batched to ``batch_size``,
            so every step but the last is full (the last is padded). An array
            shorter than ``batch_size`` is one batch of its own length, padded
            up to a size the cached step was already compiled for (at most
            ``batch_size``), so short calls after long ones don't retrace.
        verbose: ``"auto"``/``1``/``2`` show a ``keras.utils.Progbar``, ``0`` is
            silent.
        steps: the number of batches to draw (from a dataset or generator: its
            elements; from an array: batches of ``batch_size``). ``None`` draws
            everything; an endless generator needs it.
        callbacks: Keras callbacks; their ``on_predict_begin/end`` and
            ``on_predict_batch_begin/end`` hooks are called (the batch logs hold
            ``"outputs": (scores, maps)``).
        max_queue_size: kept for signature compatibility; in Keras 3, set
            ``workers``/``max_queue_size`` on your ``PyDataset``.
        workers: as ``max_queue_size``.
        use_multiprocessing: as ``max_queue_size``.
        force: rebuild (retrace) the step even if a cached one matches.
        maps_file: a path ending in ``.npy`` to stream the maps to, batch by
            batch, so that memory holds one batch of maps however many samples
            ``x`` has (use it with a generator, a ``PyDataset``, a ``tf.data``
            dataset or a memory-mapped array to explain more than fits in
            memory). Its folder must exist and the file must not (it is never
            overwritten); the maps go to a temporary file in that folder, which
            becomes ``maps_file`` only once every batch is written (it is
            removed if ``explain`` fails). The result is a regular ``.npy``
            (``np.load(maps_file)``), float32, ``(samples, *spatial, units)``.
            For a multi-input model, each explained input's maps go to
            ``<stem>.<input name>.npy`` next to ``maps_file``.
        return_maps: ``False`` keeps no maps in memory and returns ``None`` for
            them (e.g. when a callback consumes each batch's maps, or only the
            file is wanted); the scores are always returned.
        **method_params: ``inputs`` (multi-input models: the input names or
            positions to explain; default every float input; integer inputs are
            never differentiated), ``spatial_axis``, ``postprocessing`` (``f(maps, axis)``),
            ``resizing`` (``True``, a size tuple or ``False``), ``jit_compile``,
            ``target`` (what is explained, see :mod:`ke.targets`; default: the
            first output's units at ``y``; it is compiled into the step, and a
            target's per-sample data, such as a segmentation mask, is batched
            and padded with ``x``) and the method's own parameters.

    Returns:
        ``(scores, maps)``: ``scores`` a ``(samples, units)`` numpy array;
        ``maps`` a ``(samples, *spatial, units)`` numpy array, or with
        ``maps_file`` a read-only ``np.memmap`` of that file (``np.load(...,
        mmap_mode="r")``: it is read from disk as it is used), or ``None`` with
        ``return_maps=False``.

    Raises:
        TypeError: ``method``/``model`` swapped or of the wrong kind; ``x`` or
            ``y`` of the wrong type or dtype (non-integral ``y``, one-hot ``y``);
            ``batch_size``/``steps`` that are not ints; ``maps_file`` not a path;
            ``return_maps`` not a bool.
        ValueError: inputs of the wrong rank or shape, empty or non-finite
            inputs, ``y`` out of range or with the wrong number of rows, a model
            that cannot run on ``x``; a ``maps_file`` without the ``.npy``
            suffix, in a folder that does not exist, or that already exists.
            Errors raised by the method while the step is traced are re-raised
            as they were, not wrapped by the framework.

    Example:
        >>> scores, maps = ke.explain(
        ...     ke.methods.gradient.gradients, model, x, y,
        ...     postprocessing=ke.filters.absolute_normalize)
        >>> scores, maps = ke.gradcam(model, batches(), maps_file="maps.npy")
    """
    checks.check_arguments(method, model)
    if (max_queue_size, workers, use_multiprocessing) != (10, 1, False):
        warnings.warn(
            "`max_queue_size`, `workers` and `use_multiprocessing` are ignored: in Keras 3 "
            "they are options of keras.utils.PyDataset.",
            stacklevel=2,
        )
    spatial_axis = method_params.pop("spatial_axis", None)  # None: by the inputs' kind
    jit_compile = method_params.pop("jit_compile", None)
    method_params.setdefault("resizing", True)
    method_params.setdefault("postprocessing", None)
    verbose = checks.check_verbose(verbose)
    callbacks = checks.check_callbacks(callbacks)
    if not isinstance(return_maps, (bool, np.bool_)):
        raise TypeError(
            f"`return_maps` must be True or False; got {return_maps!r}. Pass return_maps=False "
            "to keep only the scores (callbacks still receive every batch's maps)."
        )
    path = checks.check_maps_file(maps_file)
    if method_params.get("target", ...) is None:
        del method_params["target"]  # the default: the same step as without target=
    target = targets.bound(method_params.get("target"), model)  # names checked now
    if target is not None:
        checks.check_takes_target(method)
    layout, explained = _layout(model, x, method_params.pop("inputs", None))
    if layout is not None:  # a multi-input model: see engine/multi.py
        spatial_axis = SPATIAL_AXIS if spatial_axis is None else spatial_axis
        method_params["explained_inputs"] = explained  # None: every float input
        rank = len(spatial_axis) + 2  # a single map (CAM): resized to its branch's input
        branch = None if multi.takes_explained(method) else _branch(model, layout, rank, target)
        method_params["resize_input"] = layout.resize_target(rank, explained, branch)
        if multi.takes_explained(method, "padding_mask") and tokens.PADDING in layout.names:
            method_params.setdefault("padding_mask", layout.names.index(tokens.PADDING))
    source = Source(x, y, batch_size=batch_size, steps=steps, layout=layout)
    if source.array is not None and layout is None:  # the shape first: a wrong rank
        spatial_axis = _single_axes(model, source.array, spatial_axis)
    source.check_y_rows()
    if target is not None and target.needs_units and y is None and source.array is not None:
        raise ValueError(_NEEDS_Y.format(target=target))
    rows_data = _per_sample(target, source)
    progress = keras.utils.Progbar(source.num_batches, verbose=verbose) if verbose else None
    callback_list = keras.callbacks.CallbackList(callbacks, model=model) if callbacks else None
    if path is None:
        writer = None
    elif layout is None:
        writer = MapsWriter(path)
    else:
        writer = InputsWriter(
            path, functools.partial(layout.file_paths, path), checks.check_maps_file, layout.pack
        )
    try:
        all_scores, all_maps = _run(
            source, model, method, force, jit_compile, spatial_axis, method_params,
            callback_list, progress, writer, keep_maps=return_maps and writer is None,
            target=target, rows_data=rows_data, layout=layout,
        )  # fmt: skip
        if callback_list:
            callback_list.on_predict_end()
        maps = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if not return_maps:
        maps = None
    elif writer is None:
        maps = _concatenate(all_maps, layout)
    return np.concatenate(all_scores), maps


def _single_axes(model, batch, spatial_axis):
    """A one-input batch checked; the spatial axes (``(-2,)`` by default for token ids)."""
    ids = tokens.single_input_ids(model, batch.shape, batch.dtype)
    if spatial_axis is None:
        spatial_axis = tokens.TOKEN_AXIS if ids else SPATIAL_AXIS
    if not ids:
        checks.check_inputs(model, batch.shape, batch.dtype, spatial_axis)
    return spatial_axis


def _layout(model, x, inputs):
    """The multi-input layout of ``x`` (None for one input) and the ``inputs=`` positions."""
    if len(multi.model_inputs(model)) > 1:  # a model of one input keeps its own rules
        layout = multi.Layout(model, x)
        if is_array_like(x) and not isinstance(x, (list, tuple)):
            layout.flatten(x)  # one array for several inputs: the error says what to pass
        return layout, layout.explained(inputs)
    if inputs is not None:
        raise ValueError(
            f"`inputs=` chooses the inputs to explain of a multi-input model; '{model.name}' "
            "takes one input. Leave `inputs` out."
        )
    return None, None


def _branch(model, layout, rank, target):
    """The input of ``rank`` axes that the explained layer's branch reads, or None."""
    convention = target is None or not target.reads_model_outputs
    try:
        taps = inspection.activation_taps(model, convention=convention)
    except Exception:  # noqa: BLE001 (no default layer found here: the CAM method says why)
        return None
    if len(taps) != 1:
        return None
    return branch_input_of_rank(model, taps[0], layout.shapes, rank)


def _concatenate(all_maps, layout):
    """The batches' maps as one array, or for a multi-input model one per explained input."""
    if layout is None or not isinstance(all_maps[0], list):
        return np.concatenate(all_maps)
    columns = zip(*all_maps)
    return layout.pack(None if parts[0] is None else np.concatenate(parts) for parts in columns)


_NEEDS_Y = (
    "The target {target!r} explains given units: pass y (e.g. the class index of each "
    "sample, shape (samples,) or (samples, units)); y=None means every unit, which this "
    "target cannot score."
)


def _per_sample(target, source) -> dict:
    """The target's per-sample arrays, checked against the number of samples."""
    if target is None:
        return {}
    data = {name: np.asarray(array) for name, array in target.per_sample().items()}
    total = source.num_samples
    for name, array in data.items():
        if array.ndim == 0 or (total is not None and len(array) != total):
            raise ValueError(
                f"The target {target!r} holds {name!r} of shape {array.shape}, but `x` has "
                f"{total} samples: give one row per sample of `x`, in the same order."
            )
    return data


def _batch_rows(target, rows_data, seen, rows):
    """This batch's rows of the target's per-sample arrays (``seen`` samples before it)."""
    batch = []
    for name, array in rows_data.items():
        part = array[seen : seen + rows]
        if len(part) != rows:
            raise ValueError(
                f"The target {target!r} holds {len(array)} rows of {name!r}, but `x` yielded "
                f"more samples ({seen + rows} so far): give one row per sample of `x`."
            )
        batch.append(part)
    return batch


def _as_float(batch, layout):
    """A batch as the model takes it: floats (integer inputs of a multi-input model kept)."""
    if layout is None:
        if batch.ndim == 2 and np.issubdtype(batch.dtype, np.integer):
            return batch  # token ids, fed as they are
        return batch.astype(checks.float_dtype(batch), copy=False)
    return layout.cast(batch, checks.float_dtype)


def _run(
    source, model, method, force, jit_compile, spatial_axis, method_params,
    callback_list, progress, writer, keep_maps, target=None, rows_data=None, layout=None,
):  # fmt: skip
    """The loop of ``explain``: every batch through the step; scores (and maps) kept."""
    step = None
    all_scores, all_maps = [], []
    num_units = None
    sample_shape = None
    first_columns = None
    seen = 0
    index = 0
    if callback_list:
        callback_list.on_predict_begin()
    for xb, units in source:
        rows = len(xb)
        if rows == 0:
            continue
        if step is None:
            if layout is None:
                spatial_axis = _single_axes(model, xb, spatial_axis)
            ids_check = tokens.prepare(
                model, xb, layout, method_params.get("explained_inputs"),
                method_params.get("embedding"),
            )  # fmt: skip
            sample_shape = xb.shape[1:]
            num_units = checks.probe(model, _as_float(xb, layout), target)
            step = get_step(
                model, method, force=force, jit_compile=jit_compile,
                spatial_axis=spatial_axis, **method_params,
            )  # fmt: skip
        elif xb.shape[1:] != sample_shape:
            raise ValueError(
                f"Batch {index} of `x` has samples of shape {xb.shape[1:]}, but the first "
                f"batch had {sample_shape}; every batch must hold samples of one shape. "
                "Resize the inputs to one size (or explain each size in its own call)."
            )
        checks.check_finite(xb, seen)
        if index:
            ids_check(xb)
        if units is None and target is not None and target.needs_units:
            raise ValueError(_NEEDS_Y.format(target=target))
        units = checks.check_units(units, rows, num_units, seen, model.name)
        columns = None if units is None else units.shape[1]
        if index == 0:
            first_columns = columns
        elif columns != first_columns:
            raise ValueError(
                f"Batch {index} gives {columns or 'no'} units per sample but the first batch "
                f"gave {first_columns or 'none (all units)'}; every batch must explain the "
                "same number of units."
            )
        if callback_list:
            callback_list.on_predict_batch_begin(index)
        if index == 0:
            size = padded_size(step, source, xb, units)
        # One batch at a time: a memory-mapped `x` is read (and converted) a batch at
        # a time, never copied whole.
        xb = _as_float(xb, layout)
        batch_rows = _batch_rows(target, rows_data, seen, rows) if rows_data else ()
        scores, maps = run_padded(step, xb, units, size, batch_rows)
        # A copy of the few scores, not a view that would keep the batch's buffer alive.
        scores = np.array(scores)
        all_scores.append(scores)
        if keep_maps:
            all_maps.append(maps)
        if writer is not None:
            writer.write(maps)
        seen += rows
        if callback_list:
            shown = layout.pack(maps) if isinstance(maps, list) else maps
            callback_list.on_predict_batch_end(index, {"outputs": (scores, shown)})
        index += 1
        if progress is not None:
            progress.update(index)
        # Let go of this batch's maps now, not when the next batch's arrive: memory
        # holds one batch of maps at a time, not two.
        del scores, maps
    if step is None:
        raise ValueError(
            "`x` yielded no samples: there is nothing to explain. The dataset or generator "
            "is empty or already exhausted (a generator can be iterated only once: create "
            "a new one for each call)."
        )
    if progress is not None and progress.target is None:
        progress.update(index, finalize=True)
    return all_scores, all_maps
