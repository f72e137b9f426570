"""The engine's checks: arguments, inputs, the model's outputs and the units ``y``.

Every check raises early with a message saying what is wrong and how to fix
it. :func:`check_units` is the one validator of ``y`` (unit or class indices),
used by ``explain`` and by every metric that takes ``y``.
"""

from __future__ import annotations

import inspect
import os
import re
import weakref
from pathlib import Path

import keras
import numpy as np

from .. import backend, inspection, targets
from .._axes import positive_axes
from .data import Columns

_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_arguments(method, model):
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


def check_takes_target(method):
    """A method given ``target=`` must take it (every method of the package does)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call tell
        return
    if not any(p.name == "target" or p.kind is p.VAR_KEYWORD for p in parameters):
        name = getattr(method, "__name__", type(method).__name__)
        raise TypeError(
            f"The method {name!r} takes no `target=`: add a `target=None` parameter to it and "
            "score the model's outputs with the target (every method of ke.methods does), or "
            "explain without target=."
        )


def check_verbose(verbose):
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_)) or verbose in (0, 1, 2):
        return int(verbose)
    raise ValueError(f'`verbose` is "auto", 0 (silent), 1 or 2; got {verbose!r}.')


def check_callbacks(callbacks):
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


def check_inputs(model, shape: tuple, dtype, spatial_axis):
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
    if isinstance(sample, Columns):  # a multi-input model: a list of specs
        spec = sample.feed(lambda a: keras.KerasTensor((1, *a.shape[1:]), dtype=str(a.dtype)))
    else:
        spec = keras.KerasTensor((1,) + tuple(sample.shape[1:]), dtype=str(sample.dtype))
    try:
        return model.compute_output_spec(spec)
    except Exception:
        return None


def probe(model, sample: np.ndarray, target=None) -> int | None:
    """The number of units the model outputs for samples like ``sample``.

    Found symbolically when the model is built (free), else by running one
    sample, which also builds an unbuilt model. With a bound ``target`` (see
    :mod:`keras_explainable.targets`) it is ``target.units_of(outputs)``:
    ``None`` when the target cannot tell (``y`` is then only checked to hold
    non-negative integers).
    """
    if target is not None:
        model = targets.model_to_run(model, target)
    key = tuple(sample.shape[1:])
    try:
        cached = _PROBES.setdefault(model, {})
    except TypeError:
        cached = {}
    if key not in cached:
        outputs = _symbolic_outputs(model, sample) if model.built else None
        try:
            if outputs is None:  # unbuilt or not traceable symbolically: run one sample
                first = sample[:1]
                outputs, _ = backend.forward(
                    model, first.feed() if isinstance(first, Columns) else first
                )
        except Exception as error:  # the framework's message, with our context first
            detail = _ANSI.sub("", str(error)).strip()
            raise ValueError(
                f"'{model.name}' could not run on inputs of shape {sample.shape[1:]} (samples "
                "of `x`). Pass inputs shaped like the ones the model was built for, "
                f"(samples, *spatial, channels). The model raised {type(error).__name__}: "
                f"{detail}"
            ) from error
        cached[key] = outputs
    outputs = cached[key]
    if target is not None:
        return target.units_of(outputs)
    logits = inspection.first_output(outputs)
    if len(logits.shape) != 2:
        raise ValueError(
            f"The explained output of '{model.name}' has shape {tuple(logits.shape)}; it "
            "must be (batch, units). Expose the logits layer, add a pooling head, or explain "
            "another output with target= (ke.targets.output, ke.targets.segmentation, ...)."
        )
    return int(logits.shape[-1])


def _looks_one_hot(units: np.ndarray) -> bool:
    """Float rows of zeros with a single one each: labels, not unit indices."""
    return (
        units.ndim == 2
        and units.shape[1] > 1
        and units.size > 0
        and np.issubdtype(units.dtype, np.floating)
        and bool(np.isin(units, (0.0, 1.0)).all())
        and bool(np.all(units.sum(axis=1) == 1))
    )


def _integral_units(units: np.ndarray) -> np.ndarray:
    """``units`` as integers: integral floats are converted, anything else raises."""
    if units.dtype != np.bool_ and np.issubdtype(units.dtype, np.integer):
        return units
    numeric = np.issubdtype(units.dtype, np.floating)
    if numeric and _looks_one_hot(units):
        raise TypeError(
            f"`y` looks like one-hot labels ({units.dtype} rows of shape {units.shape} with "
            "a single 1 each), but `y` holds unit indices: it would explain the units 0 and 1 "
            "of every sample. Pass the class indices, `labels.argmax(-1)`; if these really are "
            "unit indices, pass `y.astype(int)`."
        )
    if numeric and np.isfinite(units).all() and np.all(np.mod(units, 1) == 0):
        return units.astype(np.int64)
    bad = ""
    if numeric:
        flat = units.reshape(-1)
        odd = flat[~np.isfinite(flat) | (np.mod(np.nan_to_num(flat), 1) != 0)]
        bad = f" such as {odd[0].item()!r}" if odd.size else ""
    raise TypeError(
        f"`y` holds unit indices, which must be integers; got {units.dtype} values{bad}. "
        "Pass integer class indices (for one-hot labels or probabilities, "
        "`labels.argmax(-1)`)."
    )


def check_units(
    units,
    rows: int,
    num_units: int | None,
    offset: int = 0,
    model_name: str = "model",
    one_per_sample: bool = False,
) -> np.ndarray | None:
    """The one validator of ``y``: ``(rows, units)`` int32 indices, or None for None.

    ``y`` must hold integers (integral floats are accepted; float one-hot rows,
    bools and fractions are rejected, naming ``labels.argmax(-1)``), one row
    per sample (``(rows,)`` means one unit each), every index in
    ``[0, num_units)``. ``offset`` is the first row's sample number (for
    messages); ``one_per_sample`` (the metrics) requires a single unit per sample.
    """
    if units is None:
        return None
    units = _integral_units(np.asarray(units))
    if one_per_sample:
        if units.ndim == 2 and units.shape[1] == 1:
            units = units[:, 0]
        if units.ndim != 1 or len(units) != rows:
            raise ValueError(
                f"`y` must hold one class index per image, shape ({rows},); got {units.shape}."
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
    if num_units is None:  # a target that cannot tell: non-negative is all we know
        negative = np.argwhere(units < 0)
        if len(negative):
            row, column = negative[0]
            raise ValueError(
                f"`y` holds the unit {units[row, column]} (sample {offset + row}); unit "
                "indices must be >= 0."
            )
        return units.astype(np.int32)
    outside = (units < 0) | (units >= num_units)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        fallback = "use the predicted classes" if one_per_sample else "explain every unit"
        raise ValueError(
            f"`y` holds the unit {units[row, column]} (sample {offset + row}), outside the "
            f"{num_units} units of '{model_name}': indices must be in [0, {num_units - 1}] "
            f"(negative indices are not allowed). Check the labels, or pass y=None to "
            f"{fallback}."
        )
    return units.astype(np.int32)


def check_finite(batch: np.ndarray, offset: int):
    if isinstance(batch, Columns):
        for column in batch.arrays:
            check_finite(column, offset)
        return
    if np.issubdtype(batch.dtype, np.floating) and not np.isfinite(batch).all():
        bad = int(np.argwhere(~np.isfinite(batch).reshape(len(batch), -1).all(axis=1))[0][0])
        raise ValueError(
            f"`x` holds NaN or Inf values (sample {offset + bad}); explanations of "
            "non-finite inputs are meaningless. Clean or impute them first (e.g. "
            "np.nan_to_num)."
        )


def check_maps_file(maps_file) -> Path | None:
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


def float_dtype(batch: np.ndarray):
    """The dtype a batch runs in: its own when floating, else Keras' ``floatx``."""
    if np.issubdtype(batch.dtype, np.floating):
        return batch.dtype
    return np.dtype(keras.config.floatx())
