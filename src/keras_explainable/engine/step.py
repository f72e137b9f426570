"""The engine's compiled steps: one cache, one jit policy, one padded batch run.

``explain`` and the metrics both run models through a :class:`CompiledStep`
from :func:`get_step`: the step is compiled once per (model, body, method,
parameters, jit setting) and input signature, and every batch is padded to the
compiled size (:func:`run_padded`), so a dataset of any length traces once.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable

import numpy as np
from keras import ops

from .. import backend, inspection, targets
from .._axes import SPATIAL_AXIS, positive_axes
from .._inputs import feature_map_axes, is_structure, leaves
from .._tokens import is_ids
from ..resizing import resize
from .data import Columns, pad_to
from .multi import takes_explained

_CACHE_SIZE = 32  # compiled steps kept per model: room to loop over every method
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.RLock()  # the cache is shared by every thread explaining a model

ACTIVATIONS = ("softmax", "sigmoid", None)


def jit_policy(jit_compile=None) -> bool:
    """The one jit policy: ``None`` means XLA on JAX only (TF graphs and eager torch
    elsewhere); otherwise what the caller asked."""
    if jit_compile is None:
        return backend.NAME == "jax"
    return bool(jit_compile)


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
    if is_structure(inputs):  # a multi-input model: see engine/multi.py
        return _structured_step(
            model, method, inputs, indices, spatial_axis, postprocessing, resizing, **params
        )
    scores, maps = method(model, inputs, indices=indices, spatial_axis=spatial_axis, **params)
    if is_ids(inputs):  # token ids (batch, tokens): maps (batch, tokens, units)
        maps = ops.cast(maps, "float32")
        if postprocessing is not None:
            maps = postprocessing(maps, axis=spatial_axis)
        if resizing is not None and resizing is not False:
            size = [inputs.shape[1]] if resizing is True else resizing
            maps = resize(maps, size, (-2,))
        return ops.cast(scores, "float32"), maps
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


def _structured_step(
    model, method, inputs, indices, spatial_axis, postprocessing, resizing,
    explained_inputs=None, resize_input=None, **params,
):  # fmt: skip
    """:func:`explain_step` for a list of inputs: a map per explained input, or one map.

    ``explained_inputs`` reaches methods that take it (gradient and perturbation
    methods); each of their maps is post-processed over its own spatial axes
    (a feature vector's map over its features). A single map (CAM methods) is
    post-processed over ``spatial_axis`` and resized to the input at
    ``resize_input`` (``None``: left at the layer's size).
    """
    if explained_inputs is not None and takes_explained(method):
        params["explained_inputs"] = explained_inputs
    scores, maps = method(model, inputs, indices=indices, spatial_axis=spatial_axis, **params)
    if not is_structure(maps):
        maps = ops.cast(maps, "float32")
        if postprocessing is not None:
            maps = postprocessing(maps, axis=spatial_axis)
        if resize_input is not None and resizing is not None and resizing is not False:
            target = leaves(inputs)[resize_input]
            axes = positive_axes(spatial_axis, len(maps.shape))
            size = [target.shape[a] for a in axes] if resizing is True else resizing
            maps = resize(maps, size, spatial_axis)
        return ops.cast(scores, "float32"), maps
    done = []
    for map_, input_ in zip(leaves(maps), leaves(inputs)):
        if map_ is not None:
            map_ = ops.cast(map_, "float32")
            if postprocessing is not None:
                map_ = postprocessing(map_, axis=feature_map_axes(len(input_.shape)))
        done.append(map_)
    return ops.cast(scores, "float32"), done


class CompiledStep:
    """A compiled step for one (model, method, parameters): ``step(inputs, indices, *rows)``.

    The body is :func:`explain_step` (``(scores, maps)``), or for the metrics'
    forward passes :func:`scores_step` (``method`` is then the activation).
    When the parameters hold a ``target`` with per-sample data
    (``target.per_sample()``, e.g. a segmentation mask), the batch's rows of
    each array follow ``indices``, in :attr:`row_names` order, and the body
    gets the target holding them (``target.with_rows``).

    Attributes:
        traces: how many times the step's Python body ran. On TensorFlow and JAX
            this is the number of traces (compilations); PyTorch runs eagerly
            and executes the body on every call.
        calls: how many batches it processed.
    """

    def __init__(self, model, method, params, jit_compile, body=None):
        self.traces = 0
        self.calls = 0
        self.method = method
        self._params = params  # keeps objects keyed by id alive
        # A weak reference: the cache is keyed (weakly) by the model, so a strong
        # one here would keep every explained model alive forever.
        self._model = weakref.ref(model)
        self._jit_compile = jit_compile
        self._body = explain_step if body is None else body
        target = targets.as_target(params.get("target"))
        #: the names of the target's per-sample arrays the step takes after ``indices``
        self.row_names = tuple(target.per_sample()) if target is not None else ()
        # One compiled function per input signature: tf.function's relaxed
        # retracing would otherwise turn the units axis into `None` when a later
        # call has another shape, and methods need static shapes.
        self._compiled: dict = {}
        self._lock = threading.Lock()
        # The error of a failed trace, per thread: threads share the step.
        self._local = threading.local()

    def _step(self, inputs, indices, *rows):
        self.traces += 1
        params = self._params
        if self.row_names:  # this batch's rows of the target's per-sample data
            target = targets.as_target(params["target"])
            params = {**params, "target": target.with_rows(dict(zip(self.row_names, rows)))}
        try:
            return self._body(self._model(), self.method, inputs, indices, **params)
        except Exception as error:
            self._local.failure = error  # the original, before the framework wraps it
            raise

    def signatures(self) -> list:
        """The ``(inputs, indices, *rows)`` signatures compiled so far: ``(shape, dtype)`` each."""
        with self._lock:
            return list(self._compiled)

    def __call__(self, inputs, indices, *rows):
        if len(rows) != len(self.row_names):
            raise ValueError(
                f"This step takes the rows of {list(self.row_names) or 'no'} per-sample "
                f"array(s) after `indices`; got {len(rows)}."
            )
        self.calls += 1
        signature = (_signature(inputs), _signature(indices), *map(_signature, rows))
        with self._lock:  # threads racing on a new shape share one compiled function
            run = self._compiled.get(signature)
            if run is None:
                run = backend.compile(self._step, self._model(), jit_compile=self._jit_compile)
                self._compiled[signature] = run
        self._local.failure = None
        try:
            return run(inputs, indices, *rows)
        except Exception as error:
            failure, self._local.failure = getattr(self._local, "failure", None), None
            if failure is None or failure is error:
                raise
            # tf.function re-raises errors of the traced code with its own
            # "in user code:" preamble; hand the user the original error.
            raise failure.with_traceback(failure.__traceback__) from None
        finally:
            self._local.failure = None


def padded_size(step, source, xb, units) -> int:
    """The rows every batch is padded to: the source's batch size, or a larger one
    (at most the requested ``batch_size``) for which ``step`` is already compiled.

    An array shorter than ``batch_size`` runs as one batch of its own length, so 4
    samples don't pay for 32; but when the step was compiled for a size between the
    two, padding to it costs less than tracing again.
    """
    size = source.batch_size
    limit = source.requested_batch_size
    if not limit or size >= limit or not backend.is_compiled_per_shape():
        return size
    columns = None if units is None else units.shape[1:]
    sample = _rows_and_sample(_signature(_as_list(xb)))[1]
    sizes = [
        rows
        for inputs, indices, *_ in step.signatures()
        for rows, shapes in [_rows_and_sample(inputs)]
        if shapes == sample
        and (None if indices is None else indices[0][1:]) == columns
        and size <= rows <= limit
    ]  # fmt: skip
    return min(sizes, default=size)


def _signature(tensor):
    if tensor is None:
        return None
    if isinstance(tensor, dict):  # a keyed model's batch: its names are fixed
        tensor = list(tensor.values())
    if isinstance(tensor, (list, tuple)):  # a multi-input batch: one signature per input
        return tuple(_signature(t) for t in tensor)
    return tuple(tensor.shape), str(tensor.dtype)


def _rows_and_sample(signature):
    """``(rows, per-sample signature)`` of an inputs signature (structured or not)."""
    if isinstance(signature[0][0], tuple):  # one (shape, dtype) per input
        return signature[0][0][0], tuple(shape[1:] for shape, _ in signature)
    return signature[0][0], tuple(signature[0][1:])


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
    return _cached(model, explain_step, method, params, force, jit_compile)


def scores_step(model, activation, inputs, indices=None, target=None):
    """The activated scores of ``model`` (``(batch, classes)`` float32), no gradients.

    ``activation`` is ``"softmax"``, ``"sigmoid"``, ``None`` (raw outputs) or a
    function of the logits; ``indices`` is unused (the step's common signature).
    Without a ``target`` the scores are the first output; with one (see
    :mod:`keras_explainable.targets`) they are ``target(outputs, None)``, every
    unit it scores: the softmax applies when those are a class vector
    (``target.scores_classes``) and is skipped otherwise (a regression value),
    a sigmoid or a function always applies.
    """
    if target is None:
        outputs, _ = backend.forward(model, inputs)
        logits = ops.cast(inspection.first_output(outputs), "float32")
        classwise = True
    else:
        target = targets.bound(target, model)
        outputs, _ = backend.forward(targets.model_to_run(model, target), inputs)
        logits = ops.cast(targets.selector(target, None)(outputs, ()), "float32")
        classwise = target.scores_classes
    if activation == "softmax":
        if logits.shape[-1] == 1 or not classwise:
            return logits  # a softmax over one unit is 1: the metrics raise
        return ops.softmax(logits, axis=-1)
    if activation == "sigmoid":
        return ops.sigmoid(logits)
    if callable(activation):
        return activation(logits)
    return logits


def get_scores_step(model, activation="softmax", jit_compile=None, target=None) -> CompiledStep:
    """The cached compiled :func:`scores_step` of ``model`` (the metrics' forward pass).

    It lives in the same cache as the explaining steps: every metric call on a
    model reuses one program per activation (and target).
    """
    if activation not in ACTIVATIONS and not callable(activation):
        raise ValueError(
            f"`activation` is 'softmax', 'sigmoid', None (raw outputs) or a function; "
            f"got {activation!r}."
        )
    params = {}
    if target is not None:
        target = targets.as_target(target)
        if target.needs_units:
            raise ValueError(
                f"The metrics score every unit of the perturbed images at once, which the "
                f"target {target!r} cannot (it scores the units of y only); use a target "
                "such as ke.targets.output(name) or regression()."
            )
        if target.per_sample():
            raise ValueError(
                f"The metrics score perturbed copies of the images, which a target's "
                f"per-sample data ({', '.join(target.per_sample())} of {target!r}) cannot "
                "follow; use a target that reads the outputs only."
            )
        params["target"] = target
    return _cached(model, scores_step, activation, params, False, jit_compile)


def _cached(model, body: Callable, method, params, force, jit_compile) -> CompiledStep:
    jit_compile = jit_policy(jit_compile)
    key = (body, method, _freeze(params), jit_compile)
    with _LOCK:
        try:
            steps = _STEPS.setdefault(model, collections.OrderedDict())
        except TypeError:  # an unhashable or non-weakref-able model: no cache
            steps = collections.OrderedDict()
        if force or key not in steps:
            steps[key] = CompiledStep(model, method, params, jit_compile, body=body)
            while len(steps) > _CACHE_SIZE:
                steps.popitem(last=False)
        steps.move_to_end(key)
        return steps[key]


def run_padded(step: CompiledStep, inputs: np.ndarray, indices, size: int, rows_data=()):
    """One numpy batch through ``step``, padded to ``size`` rows and sliced back.

    Padding to the size the step was compiled for keeps a partial batch from
    tracing again. ``rows_data`` are the batch's rows of the target's
    per-sample arrays (:attr:`CompiledStep.row_names` order), padded alike.
    Returns numpy outputs (a tuple for a tuple-valued step) of ``len(inputs)``
    rows; they may be views of the step's output buffers.
    """
    rows = len(inputs)
    inputs = pad_to(inputs, size)
    if isinstance(inputs, Columns):  # a multi-input model takes a list, in model.inputs order
        inputs = inputs.feed(ops.convert_to_tensor)  # a list, or a dict for a keyed model
    else:
        inputs = ops.convert_to_tensor(inputs)
    if indices is not None:
        indices = ops.convert_to_tensor(pad_to(indices, size))
    extra = [ops.convert_to_tensor(pad_to(np.asarray(array), size)) for array in rows_data]
    outputs = step(inputs, indices, *extra)
    if isinstance(outputs, (tuple, list)):
        return tuple(_rows_of(output, rows) for output in outputs)
    return ops.convert_to_numpy(outputs)[:rows]


def _rows_of(output, rows):
    if isinstance(output, (tuple, list)):  # a multi-input model's maps, one per input
        return [_rows_of(part, rows) for part in output]
    return None if output is None else ops.convert_to_numpy(output)[:rows]


def _as_list(batch):
    return batch.arrays if isinstance(batch, Columns) else batch
