"""``explain``: run an explaining method over a batch or a whole dataset."""

from __future__ import annotations

import collections
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from .. import backend, inspection
from ..filters import SPATIAL_AXIS
from ..methods._common import positive_axes
from ..resizing import resize
from .data import Source, pad_to

_CACHE_SIZE = 8
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explain_step(
    model,
    method: Callable,
    inputs,
    indices=None,
    spatial_axis=SPATIAL_AXIS,
    postprocessing: Callable | None = None,
    resizing: bool | tuple = True,
    **params,
):
    """One batch: the method, then ``postprocessing``, then resizing to the inputs.

    Args:
        model: the model being explained.
        method: an explaining method (see :mod:`keras_explainable.methods`).
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: ``(batch, units)`` unit indices, or ``None`` for all units.
        spatial_axis: the spatial axes of ``inputs`` and of the maps.
        postprocessing: ``f(maps, axis=spatial_axis)`` applied to the raw maps.
        resizing: ``True`` resizes the maps (bilinear) to the inputs' spatial
            size, a tuple to that size, ``False`` leaves them as they are.
        **params: the method's own parameters.

    Returns:
        ``(scores, maps)`` tensors, maps as float32.
    """
    scores, maps = method(model, inputs, indices=indices, spatial_axis=spatial_axis, **params)
    if len(maps.shape) != len(inputs.shape):
        raise ValueError(
            f"The method returned maps of shape {tuple(maps.shape)} for inputs of shape "
            f"{tuple(inputs.shape)}; maps must be (batch, *spatial, units)."
        )
    maps = ops.cast(maps, "float32")
    if postprocessing is not None:
        maps = postprocessing(maps, axis=spatial_axis)
    if resizing is not None and resizing is not False:
        axes = positive_axes(spatial_axis, len(inputs.shape))
        size = [inputs.shape[a] for a in axes] if resizing is True else resizing
        maps = resize(maps, size, spatial_axis)
    return ops.cast(scores, "float32"), maps


class CompiledStep:
    """A compiled ``explain_step`` for one (model, method, parameters).

    Attributes:
        traces: how many times the step's Python body ran. On TensorFlow and JAX
            this is the number of traces (compilations); PyTorch runs eagerly
            and executes the body on every call.
        calls: how many batches it processed.
    """

    def __init__(self, model, method, params, jit_compile):
        self.traces = 0
        self.calls = 0
        self.method = method
        self._params = params  # keeps objects keyed by id alive
        self._model = model
        self._jit_compile = jit_compile
        # One compiled function per input signature: tf.function's relaxed
        # retracing would otherwise turn the units axis into `None` when a later
        # call has another shape, and methods need static shapes.
        self._compiled: dict = {}

    def _step(self, inputs, indices):
        self.traces += 1
        return explain_step(self._model, self.method, inputs, indices, **self._params)

    def __call__(self, inputs, indices):
        self.calls += 1
        signature = (_signature(inputs), _signature(indices))
        run = self._compiled.get(signature)
        if run is None:
            run = backend.compile(self._step, self._model, jit_compile=self._jit_compile)
            self._compiled[signature] = run
        return run(inputs, indices)


def _signature(tensor):
    if tensor is None:
        return None
    return tuple(tensor.shape), str(tensor.dtype)


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def get_step(model, method, force=False, jit_compile=None, **params) -> CompiledStep:
    """The cached compiled step for ``(model, method, params)``, built on first use.

    The key holds the method and every parameter, so a step is never reused for
    another method or other settings (the original cached one per model).
    """
    key = (method, _freeze(params), jit_compile)
    try:
        steps = _STEPS.setdefault(model, collections.OrderedDict())
    except TypeError:  # an unhashable or non-weakref-able model: no cache
        steps = collections.OrderedDict()
    if force or key not in steps:
        if jit_compile is None:
            jit_compile = backend.NAME == "jax"
        steps[key] = CompiledStep(model, method, params, jit_compile)
        while len(steps) > _CACHE_SIZE:
            steps.popitem(last=False)
    steps.move_to_end(key)
    return steps[key]


def _check_arguments(method, model):
    if not callable(method):
        raise TypeError(
            f"`method` must be an explaining method such as ke.methods.cams.gradcam; got "
            f"{type(method).__name__}. (The order is explain(method, model, x, y).)"
        )
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")


def _check_inputs(model, sample: np.ndarray, spatial_axis):
    if not np.issubdtype(sample.dtype, np.number) and sample.dtype != np.bool_:
        raise TypeError(f"`x` holds {sample.dtype} values; pass numbers.")
    expected = inspection.input_shape_of(model)
    if expected is not None:
        expected = tuple(expected)
        if len(sample.shape) != len(expected) or any(
            e is not None and e != s for e, s in zip(expected[1:], sample.shape[1:])
        ):
            raise ValueError(
                f"`x` has samples of shape {sample.shape[1:]} but '{model.name}' expects "
                f"{expected[1:]} (inputs are (batch, *spatial, channels))."
            )
    positive_axes(spatial_axis, sample.ndim)


def _probe(model, sample: np.ndarray) -> int:
    """Run one sample eagerly: builds an unbuilt model, returns the number of units."""
    key = tuple(sample.shape[1:])
    try:
        cached = _PROBES.setdefault(model, {})
    except TypeError:
        cached = {}
    if key not in cached:
        try:
            outputs, _ = backend.forward(model, sample[:1])
        except Exception as error:  # the framework's message, with our context first
            raise ValueError(
                f"'{model.name}' could not run on inputs of shape {sample.shape[1:]}: {error}"
            ) from error
        logits = inspection.first_output(outputs)
        if len(logits.shape) != 2:
            raise ValueError(
                f"The explained output of '{model.name}' has shape {tuple(logits.shape)}; it "
                "must be (batch, units). Expose the logits layer or add a pooling head."
            )
        cached[key] = int(logits.shape[-1])
    return cached[key]


def _check_units(units: np.ndarray | None, rows: int, num_units: int, offset: int):
    if units is None:
        return None
    units = np.asarray(units)
    if units.dtype == np.bool_ or not np.issubdtype(units.dtype, np.integer):
        if np.issubdtype(units.dtype, np.floating) and np.all(np.mod(units, 1) == 0):
            units = units.astype(np.int64)
        else:
            raise TypeError(
                f"`y` holds unit indices (integers); got {units.dtype}. For one-hot labels "
                "pass `labels.argmax(-1)`."
            )
    if units.ndim == 1:
        units = units[:, None]
    if units.ndim != 2 or len(units) != rows:
        raise ValueError(
            f"`y` must be (samples, units) or (samples,) with one row per sample; got a batch "
            f"of shape {units.shape} for {rows} samples."
        )
    if units.size and (units.min() < 0 or units.max() >= num_units):
        bad = units[(units < 0) | (units >= num_units)][0]
        raise ValueError(
            f"`y` holds the unit {bad} (near sample {offset}), but the model has {num_units} "
            f"units: indices must be in [0, {num_units - 1}]."
        )
    return units.astype(np.int32)


def _check_finite(batch: np.ndarray, offset: int):
    if np.issubdtype(batch.dtype, np.floating) and not np.isfinite(batch).all():
        bad = int(np.argwhere(~np.isfinite(batch).reshape(len(batch), -1).all(axis=1))[0][0])
        raise ValueError(
            f"`x` holds NaN or Inf values (sample {offset + bad}); explanations of "
            "non-finite inputs are meaningless. Clean or impute them first."
        )


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
    **method_params: Any,
):
    """Explain ``model``'s outputs on ``x`` with an explaining ``method``.

    The step (method + postprocessing + resizing) is compiled once per method,
    parameters and batch shape: the last partial batch is padded to the batch
    size, so a dataset of any length is traced once, and later calls with the
    same method and parameters reuse the step.

    Args:
        method: an explaining method, e.g. ``ke.methods.cams.gradcam``.
        model: the model to explain (never modified).
        x: inputs ``(samples, *spatial, channels)``: a numpy array, a backend
            tensor, a ``tf.data.Dataset``, a ``keras.utils.PyDataset``, a torch
            ``DataLoader`` or a generator (with ``steps``). Dataset elements are
            ``x`` or ``(x, units)``.
        y: the units to explain: ``(samples, units)`` integers, ``(samples,)``
            (one unit per sample) or ``None`` (every unit).
        batch_size: samples per step (default 32 for arrays; for datasets, their
            own batch size).
        verbose: ``"auto"``/``1`` shows a ``keras.utils.Progbar``, ``0`` is silent.
        steps: the number of batches to draw from a dataset or generator.
        callbacks: Keras callbacks; their ``on_predict_begin/end`` and
            ``on_predict_batch_begin/end`` hooks are called (the batch logs hold
            ``"outputs": (scores, maps)``).
        max_queue_size: kept for signature compatibility; in Keras 3, set
            ``workers``/``max_queue_size`` on your ``PyDataset``.
        workers: as ``max_queue_size``.
        use_multiprocessing: as ``max_queue_size``.
        force: rebuild (retrace) the step even if a cached one matches.
        **method_params: ``spatial_axis``, ``postprocessing`` (``f(maps, axis)``),
            ``resizing`` (``True``, a size tuple or ``False``), ``jit_compile``
            and the method's own parameters.

    Returns:
        ``(scores, maps)`` numpy arrays: ``(samples, units)`` and
        ``(samples, *spatial, units)``.

    Example:
        >>> scores, maps = ke.explain(
        ...     ke.methods.gradient.gradients, model, x, y,
        ...     postprocessing=ke.filters.absolute_normalize)
    """
    _check_arguments(method, model)
    if (max_queue_size, workers, use_multiprocessing) != (10, 1, False):
        warnings.warn(
            "`max_queue_size`, `workers` and `use_multiprocessing` are ignored: in Keras 3 "
            "they are options of keras.utils.PyDataset.",
            stacklevel=2,
        )
    spatial_axis = method_params.pop("spatial_axis", SPATIAL_AXIS)
    jit_compile = method_params.pop("jit_compile", None)
    method_params.setdefault("resizing", True)
    method_params.setdefault("postprocessing", None)
    source = Source(x, y, batch_size=batch_size, steps=steps)
    if verbose == "auto":
        verbose = 1
    progress = keras.utils.Progbar(source.num_batches, verbose=verbose) if verbose else None
    callback_list = keras.callbacks.CallbackList(callbacks, model=model) if callbacks else None

    step = None
    all_scores, all_maps = [], []
    num_units = None
    seen = 0
    if callback_list:
        callback_list.on_predict_begin()
    for index, (xb, units) in enumerate(source):
        rows = len(xb)
        if rows == 0:
            continue
        if step is None:
            _check_inputs(model, xb, spatial_axis)
            num_units = _probe(model, xb.astype(_float_dtype(xb), copy=False))
            step = get_step(
                model, method, force=force, jit_compile=jit_compile,
                spatial_axis=spatial_axis, **method_params,
            )  # fmt: skip
        _check_finite(xb, seen)
        units = _check_units(units, rows, num_units, seen)
        if callback_list:
            callback_list.on_predict_batch_begin(index)
        size = source.batch_size
        xb = pad_to(xb.astype(_float_dtype(xb), copy=False), size)
        units = pad_to(units, size)
        scores, maps = step(
            ops.convert_to_tensor(xb), None if units is None else ops.convert_to_tensor(units)
        )
        scores = ops.convert_to_numpy(scores)[:rows]
        maps = ops.convert_to_numpy(maps)[:rows]
        all_scores.append(scores)
        all_maps.append(maps)
        seen += rows
        if callback_list:
            callback_list.on_predict_batch_end(index, {"outputs": (scores, maps)})
        if progress is not None:
            progress.update(index + 1)
    if step is None:
        raise ValueError("`x` yielded no samples: there is nothing to explain.")
    if callback_list:
        callback_list.on_predict_end()
    return np.concatenate(all_scores), np.concatenate(all_maps)


def _float_dtype(batch: np.ndarray):
    if np.issubdtype(batch.dtype, np.floating):
        return batch.dtype
    return np.dtype(keras.config.floatx())
