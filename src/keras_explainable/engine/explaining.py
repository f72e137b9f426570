"""``explain``: run an explaining method over a batch or a whole dataset."""

from __future__ import annotations

import collections
import os
import re
import secrets
import struct
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from .. import backend, inspection
from ..filters import SPATIAL_AXIS
from ..methods._common import positive_axes
from ..resizing import resize
from .data import Source, pad_to

_CACHE_SIZE = 32  # compiled steps kept per model: room to loop over every method
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
        # A weak reference: the cache is keyed (weakly) by the model, so a strong
        # one here would keep every explained model alive forever.
        self._model = weakref.ref(model)
        self._jit_compile = jit_compile
        # One compiled function per input signature: tf.function's relaxed
        # retracing would otherwise turn the units axis into `None` when a later
        # call has another shape, and methods need static shapes.
        self._compiled: dict = {}
        self._failure = None

    def _step(self, inputs, indices):
        self.traces += 1
        try:
            return explain_step(self._model(), self.method, inputs, indices, **self._params)
        except Exception as error:
            self._failure = error  # the original, before the framework wraps it
            raise

    def signatures(self) -> list:
        """The ``(inputs, indices)`` signatures compiled so far: ``(shape, dtype)`` each."""
        return list(self._compiled)

    def __call__(self, inputs, indices):
        self.calls += 1
        signature = (_signature(inputs), _signature(indices))
        run = self._compiled.get(signature)
        if run is None:
            run = backend.compile(self._step, self._model(), jit_compile=self._jit_compile)
            self._compiled[signature] = run
        self._failure = None
        try:
            return run(inputs, indices)
        except Exception as error:
            failure, self._failure = self._failure, None
            if failure is None or failure is error:
                raise
            # tf.function re-raises errors of the traced code with its own
            # "in user code:" preamble; hand the user the original error.
            raise failure.with_traceback(failure.__traceback__) from None
        finally:
            self._failure = None


def _padded_size(step, source, xb, units) -> int:
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
    sizes = [
        inputs[0][0]
        for inputs, indices in step.signatures()
        if inputs[0][1:] == tuple(xb.shape[1:])
        and (None if indices is None else indices[0][1:]) == columns
        and size <= inputs[0][0] <= limit
    ]  # fmt: skip
    return min(sizes, default=size)


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
    if isinstance(method, keras.layers.Layer) and not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"explain() takes the method first: explain(method, model, x, y). It got the model "
            f"'{method.name}' as `method` and a {type(model).__name__} as `model`; swap them."
        )
    if not callable(method):
        raise TypeError(
            f"`method` must be an explaining method such as ke.methods.cams.gradcam; got a "
            f"{type(method).__name__}. Call explain(method, model, x, y), or a shortcut such "
            "as ke.gradcam(model, x, y)."
        )
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"`model` must be a Keras 3 model (keras.Model / keras.Sequential); got a "
            f"{type(model).__name__}. Build or load the model with Keras 3 (`import keras`)."
        )


def _check_verbose(verbose):
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)) or verbose in (0, 1, 2):
        return int(verbose)
    raise ValueError(f'`verbose` is "auto", 0 (silent), 1 or 2; got {verbose!r}.')


def _check_callbacks(callbacks):
    if callbacks is None:
        return None
    if isinstance(callbacks, keras.callbacks.Callback):
        callbacks = [callbacks]
    callbacks = list(callbacks)
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise TypeError(
                f"`callbacks` must be a list of keras.callbacks.Callback; got a "
                f"{type(callback).__name__}. Subclass keras.callbacks.Callback and override "
                "its on_predict_* methods."
            )
    return callbacks


def _check_inputs(model, shape: tuple, dtype, spatial_axis):
    """Validate the inputs' dtype and shape against the model and ``spatial_axis``."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.number) and dtype != np.bool_:
        raise TypeError(
            f"`x` holds values of dtype {dtype}; pass numbers (e.g. x.astype('float32'))."
        )
    shape = tuple(shape)
    expected = inspection.input_shape_of(model)
    if expected is not None:
        expected = tuple(expected)
        wanted = "(samples, " + ", ".join("?" if d is None else str(d) for d in expected[1:]) + ")"
        if len(shape) != len(expected):
            hint = ""
            if len(shape) == len(expected) - 1:
                hint = " For a single sample, add the batch axis: x[None]."
            raise ValueError(
                f"`x` has shape {shape} (rank {len(shape)}), but '{model.name}' takes batches "
                f"of rank {len(expected)}: {wanted}.{hint}"
            )
        if any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            raise ValueError(
                f"`x` has samples of shape {shape[1:]} but '{model.name}' expects "
                f"{expected[1:]}. Resize or reshape the inputs to {wanted} "
                "(channels last)."
            )
    try:
        positive_axes(spatial_axis, len(shape))
    except ValueError:
        raise ValueError(
            f"`x` has shape {shape} (rank {len(shape)}), which has no spatial axes "
            f"spatial_axis={spatial_axis}: inputs are (samples, *spatial, channels). For a "
            "single sample, add the batch axis (x[None]); for other signals pass a matching "
            "spatial_axis, e.g. spatial_axis=(-2,) for (samples, length, channels)."
        ) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _symbolic_outputs(model, sample: np.ndarray):
    """The output spec of a built model, without running it (None if it can't tell).

    An eager forward pass costs little on TF and torch but, on JAX, compiles every
    op of the model one by one (seconds for a ResNet); shape inference is free.
    """
    spec = keras.KerasTensor((1,) + tuple(sample.shape[1:]), dtype=str(sample.dtype))
    try:
        return model.compute_output_spec(spec)
    except Exception:
        return None


def _probe(model, sample: np.ndarray) -> int:
    """The number of units the model outputs for samples like ``sample``.

    Found symbolically when the model is built (free), else by running one
    sample, which also builds an unbuilt model.
    """
    key = tuple(sample.shape[1:])
    try:
        cached = _PROBES.setdefault(model, {})
    except TypeError:
        cached = {}
    if key not in cached:
        outputs = _symbolic_outputs(model, sample) if model.built else None
        try:
            if outputs is None:  # unbuilt or not traceable symbolically: run one sample
                outputs, _ = backend.forward(model, sample[:1])
        except Exception as error:  # the framework's message, with our context first
            detail = _ANSI.sub("", str(error)).strip()
            raise ValueError(
                f"'{model.name}' could not run on inputs of shape {sample.shape[1:]} (samples "
                "of `x`). Pass inputs shaped like the ones the model was built for, "
                f"(samples, *spatial, channels). The model raised {type(error).__name__}: "
                f"{detail}"
            ) from error
        logits = inspection.first_output(outputs)
        if len(logits.shape) != 2:
            raise ValueError(
                f"The explained output of '{model.name}' has shape {tuple(logits.shape)}; it "
                "must be (batch, units). Expose the logits layer or add a pooling head."
            )
        cached[key] = int(logits.shape[-1])
    return cached[key]


def _check_units(
    units: np.ndarray | None, rows: int, num_units: int, offset: int, model_name: str = "model"
):
    if units is None:
        return None
    units = np.asarray(units)
    if units.dtype == np.bool_ or not np.issubdtype(units.dtype, np.integer):
        numeric = np.issubdtype(units.dtype, np.floating)
        if numeric and np.isfinite(units).all() and np.all(np.mod(units, 1) == 0):
            units = units.astype(np.int64)
        else:
            bad = ""
            if numeric:
                flat = units.reshape(-1)
                odd = flat[~np.isfinite(flat) | (np.mod(np.nan_to_num(flat), 1) != 0)]
                bad = f" such as {odd[0].item()!r}" if odd.size else ""
            raise TypeError(
                f"`y` holds unit indices, which must be integers; got {units.dtype} values"
                f"{bad}. Pass integer class indices (for one-hot labels or probabilities, "
                "`labels.argmax(-1)`)."
            )
    if units.ndim == 1:
        units = units[:, None]
    if units.ndim != 2:
        raise ValueError(
            f"`y` must be (samples, units) or (samples,) integers; got shape {units.shape}. "
            "Drop the extra axes, e.g. y.reshape(len(y), -1)."
        )
    if len(units) != rows:
        raise ValueError(
            f"`y` gives {len(units)} rows of units for {rows} samples; give one row per sample."
        )
    outside = (units < 0) | (units >= num_units)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise ValueError(
            f"`y` holds the unit {units[row, column]} (sample {offset + row}), but "
            f"'{model_name}' has {num_units} units: indices must be in [0, {num_units - 1}] "
            "(negative indices are not allowed). Check the labels, or pass y=None to explain "
            "every unit."
        )
    return units.astype(np.int32)


def _check_finite(batch: np.ndarray, offset: int):
    if np.issubdtype(batch.dtype, np.floating) and not np.isfinite(batch).all():
        bad = int(np.argwhere(~np.isfinite(batch).reshape(len(batch), -1).all(axis=1))[0][0])
        raise ValueError(
            f"`x` holds NaN or Inf values (sample {offset + bad}); explanations of "
            "non-finite inputs are meaningless. Clean or impute them first (e.g. "
            "np.nan_to_num)."
        )


def _check_maps_file(maps_file) -> Path | None:
    """``maps_file`` as a Path to a new ``.npy`` file in an existing folder (or None)."""
    if maps_file is None:
        return None
    if not isinstance(maps_file, (str, bytes, os.PathLike)):
        raise TypeError(
            f"`maps_file` must be a path (str or os.PathLike) to a .npy file, or None; got a "
            f"{type(maps_file).__name__}. Pass e.g. maps_file='maps.npy'."
        )
    path = Path(os.fsdecode(os.fspath(maps_file))).expanduser()
    if path.suffix.lower() != ".npy":
        raise ValueError(
            f"`maps_file` must name a .npy file (np.load reads it back); got '{path}'. Add the "
            f"suffix: maps_file='{path.with_name(path.name + '.npy')}'."
        )
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(
            f"`maps_file` is '{path}', but the folder '{folder}' does not exist. Create it first "
            f"(os.makedirs('{folder}', exist_ok=True)) or write the maps elsewhere."
        )
    if path.exists() or path.is_symlink():
        raise ValueError(
            f"`maps_file` '{path}' already exists; explain never overwrites a file. Remove it "
            "first (os.remove) or pick another name."
        )
    return path


def _npy_header(dtype: np.dtype, shape: tuple, length: int | None = None) -> bytes:
    """A .npy (format 1.0) header for a C-ordered array, padded to ``length`` bytes.

    Without ``length``, the header is padded to a multiple of 64 bytes (as numpy
    writes it); a header rewritten later with another shape keeps its size.
    """
    text = repr(
        {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(int(d) for d in shape),
        }
    )
    preamble = 10  # magic string, version and the uint16 length of the header text
    if length is None:
        length = -(-(preamble + len(text) + 1) // 64) * 64
    padding = length - preamble - len(text) - 1
    if padding < 0:  # cannot happen: the reserved header has room for 20 digits
        raise RuntimeError(f"The .npy header of shape {shape} does not fit in {length} bytes.")
    text = text + " " * padding + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


class _MapsWriter:
    """Writes maps batch by batch into a ``.npy`` file; memory stays one batch.

    The rows are appended to a temporary file next to ``path`` whose header
    reserves room for any number of samples; :meth:`close` writes the real shape
    into the header and moves the file to ``path``, so ``path`` only ever holds a
    complete, valid ``.npy``. Plain writes (rather than a writable memory map)
    keep the written pages out of the process' resident memory.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows = 0
        self._dtype = None
        self._sample_shape = None
        self._header_length = None
        # Created like np.save's files (0o666 less the umask), unlike mkstemp's 0o600.
        for _ in range(100):
            temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
            try:
                handle = os.open(temporary, _CREATE_FLAGS, 0o666)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 32 random bits
            raise FileExistsError(f"Could not create a temporary file next to '{path}'.")
        self._temporary = temporary
        self._file = os.fdopen(handle, "wb")

    def write(self, maps: np.ndarray) -> None:
        if self._dtype is None:
            self._dtype = maps.dtype
            self._sample_shape = tuple(maps.shape[1:])
            reserved = _npy_header(self._dtype, (10**20 - 1, *self._sample_shape))
            self._header_length = len(reserved)
            self._file.write(reserved)
        elif tuple(maps.shape[1:]) != self._sample_shape:  # the engine checks this before
            raise ValueError(
                f"Maps of shape {maps.shape[1:]} cannot follow maps of shape "
                f"{self._sample_shape} in one .npy file."
            )
        self._file.write(np.ascontiguousarray(maps, dtype=self._dtype).data)
        self.rows += len(maps)

    def close(self) -> np.memmap:
        """Finish the file; return it memory-mapped, read-only."""
        header = _npy_header(self._dtype, (self.rows, *self._sample_shape), self._header_length)
        self._file.seek(0)
        self._file.write(header)
        self._file.close()
        try:  # a hard link fails on an existing file: a file made meanwhile is kept
            os.link(self._temporary, self.path)
        except FileExistsError:
            raise ValueError(
                f"`maps_file` '{self.path}' was created by something else while explaining; "
                "explain never overwrites a file. Pick another name."
            ) from None
        except (OSError, AttributeError, NotImplementedError):  # no hard links here
            os.replace(self._temporary, self.path)
        else:
            os.remove(self._temporary)
        return np.load(self.path, mmap_mode="r")

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        self._file.close()
        try:
            os.remove(self._temporary)
        except OSError:
            pass


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
            ``x`` or ``(x, units)``.
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
        return_maps: ``False`` keeps no maps in memory and returns ``None`` for
            them (e.g. when a callback consumes each batch's maps, or only the
            file is wanted); the scores are always returned.
        **method_params: ``spatial_axis``, ``postprocessing`` (``f(maps, axis)``),
            ``resizing`` (``True``, a size tuple or ``False``), ``jit_compile``
            and the method's own parameters.

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
    verbose = _check_verbose(verbose)
    callbacks = _check_callbacks(callbacks)
    if not isinstance(return_maps, (bool, np.bool_)):
        raise TypeError(
            f"`return_maps` must be True or False; got {return_maps!r}. Pass return_maps=False "
            "to keep only the scores (callbacks still receive every batch's maps)."
        )
    path = _check_maps_file(maps_file)
    source = Source(x, y, batch_size=batch_size, steps=steps)
    if source.array is not None:  # the shape first: a wrong rank also miscounts y's rows
        _check_inputs(model, source.array.shape, source.array.dtype, spatial_axis)
    source.check_y_rows()
    progress = keras.utils.Progbar(source.num_batches, verbose=verbose) if verbose else None
    callback_list = keras.callbacks.CallbackList(callbacks, model=model) if callbacks else None
    writer = None if path is None else _MapsWriter(path)
    try:
        all_scores, all_maps = _run(
            source, model, method, force, jit_compile, spatial_axis, method_params,
            callback_list, progress, writer, keep_maps=return_maps and writer is None,
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
        maps = np.concatenate(all_maps)
    return np.concatenate(all_scores), maps


def _run(
    source, model, method, force, jit_compile, spatial_axis, method_params,
    callback_list, progress, writer, keep_maps,
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
            _check_inputs(model, xb.shape, xb.dtype, spatial_axis)
            sample_shape = xb.shape[1:]
            num_units = _probe(model, xb.astype(_float_dtype(xb), copy=False))
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
        _check_finite(xb, seen)
        units = _check_units(units, rows, num_units, seen, model.name)
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
            size = _padded_size(step, source, xb, units)
        # One batch at a time: a memory-mapped `x` is read (and converted) a batch at
        # a time, never copied whole.
        xb = pad_to(xb.astype(_float_dtype(xb), copy=False), size)
        units = pad_to(units, size)
        scores, maps = step(
            ops.convert_to_tensor(xb), None if units is None else ops.convert_to_tensor(units)
        )
        # A copy of the few scores, not a view that would keep the batch's buffer alive.
        scores = np.array(ops.convert_to_numpy(scores)[:rows])
        maps = ops.convert_to_numpy(maps)[:rows]
        all_scores.append(scores)
        if keep_maps:
            all_maps.append(maps)
        if writer is not None:
            writer.write(maps)
        seen += rows
        if callback_list:
            callback_list.on_predict_batch_end(index, {"outputs": (scores, maps)})
        index += 1
        if progress is not None:
            progress.update(index)
    if step is None:
        raise ValueError(
            "`x` yielded no samples: there is nothing to explain. The dataset or generator "
            "is empty or already exhausted (a generator can be iterated only once: create "
            "a new one for each call)."
        )
    if progress is not None and progress.target is None:
        progress.update(index, finalize=True)
    return all_scores, all_maps


def _float_dtype(batch: np.ndarray):
    if np.issubdtype(batch.dtype, np.floating):
        return batch.dtype
    return np.dtype(keras.config.floatx())
