"""The :class:`Target` base class and the plumbing every method shares.

See the package docstring (:mod:`keras_explainable.targets`) for the contract.
Framework-free: ``keras.ops`` only.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from .. import inspection
from .._precision import widen
from .._units import first_output, gather_units


class Target:
    """What a method explains: ``target(outputs, units) -> scores (batch, U)``.

    Subclass it (or pass any function of that signature as ``target=``) to
    explain something else than the classes of the first output. Only
    ``__call__`` is required; the other hooks have working defaults.

    Hooks:
        ``__call__(outputs, units)``: the scores, written with ``keras.ops``
            (it runs inside the compiled step, on backend tensors). ``outputs``
            is what the model returns (a tensor, a list or a dict); ``units``
            is ``None`` or the ``(batch, U)`` int32 ``y``. Return float scores
            ``(batch, U)`` (``U = units.shape[1]`` when ``units`` is given).
        ``bind(model)``: called once per method call before the model runs:
            resolve names against ``model`` (:func:`output_names`,
            :func:`closest`) and raise clear errors early. Return ``self`` or a
            modified copy (``copy.copy``); never change ``self``.
        ``per_sample()``: arrays with one row per sample of ``x`` (a mask, a
            box). The engine slices, pads and batches them with ``x`` and passes
            the batch's rows into the compiled step; read them in ``__call__``
            with :meth:`rows`. Methods that copy samples (SmoothGrad, the
            perturbation methods) copy these rows alike.

    Attributes:
        needs_units: ``y`` must be given (``explain`` raises a clear error when
            it is ``None``).
        scores_classes: the scores with ``units=None`` are a class vector, so a
            metric's ``activation="softmax"`` applies to them.
        reads_model_outputs: ``False`` only for :func:`classes`, which on an
            exposed model (``ke.inspection.expose``) gathers the exposed logits;
            every other target sees the outputs of the exposed model's own model.
    """

    needs_units = False
    scores_classes = False
    reads_model_outputs = True

    def __call__(self, outputs, units):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(outputs, units).")

    def bind(self, model) -> Target:
        del model
        return self

    def per_sample(self) -> Mapping[str, np.ndarray]:
        return {}

    # ------------------------------------------------------------------ per-sample rows

    def rows(self, name: str):
        """This batch's rows of the per-sample array ``name`` (a backend tensor)."""
        batch = self.__dict__.get("_batch_rows")
        if batch is not None:
            return batch[name]
        return ops.convert_to_tensor(self.per_sample()[name])

    def with_rows(self, rows: Mapping) -> Target:
        """A copy of this target that reads ``rows`` (one batch) in :meth:`rows`."""
        if not rows:
            return self
        clone = copy.copy(self)
        clone.__dict__["_batch_rows"] = dict(rows)
        return clone

    def _current_rows(self) -> dict:
        batch = self.__dict__.get("_batch_rows")
        if batch is not None:
            return batch
        return {name: ops.convert_to_tensor(value) for name, value in self.per_sample().items()}

    def tiled(self, groups: int) -> Target:
        """The target for ``groups`` copies of the batch, group-major (``tile_batch``)."""
        if groups == 1 or not self.per_sample():
            return self
        return self.with_rows(
            {
                name: ops.tile(value, (groups,) + (1,) * (len(value.shape) - 1))
                for name, value in self._current_rows().items()
            }
        )

    def repeated(self, copies: int) -> Target:
        """The target for ``copies`` consecutive copies of every sample (sample-major)."""
        if copies == 1 or not self.per_sample():
            return self
        return self.with_rows(
            {
                name: ops.repeat(value, copies, axis=0)
                for name, value in self._current_rows().items()
            }
        )

    def units_of(self, outputs) -> int | None:
        """How many units ``y`` may pick from ``outputs`` (its indices are checked to be
        below it); ``None``: unknown, ``y`` is only checked to be non-negative.

        ``outputs`` may be symbolic (``keras.KerasTensor``): use shapes only.
        """
        del outputs
        return None

    def __repr__(self):
        return f"{type(self).__name__}()"


class Classes(Target):
    """The classes of the first output: ``outputs[0]`` gathered at ``units`` (the default).

    On an exposed model the exposed logits are gathered (what ``target=None`` does).
    """

    reads_model_outputs = False
    scores_classes = True

    def __call__(self, outputs, units):
        return gather_units(first_output(outputs), units)

    def units_of(self, outputs) -> int | None:
        logits = first_output(outputs)
        if len(logits.shape) != 2:
            raise ValueError(
                f"The explained output has shape {tuple(logits.shape)}; classes() explains "
                "(batch, units) outputs. Pick another output with ke.targets.output(name), "
                "explain a region of a (batch, h, w, classes) output with "
                "ke.targets.segmentation(), or expose the logits layer."
            )
        return int(logits.shape[-1])


class FunctionTarget(Target):
    """A user function ``f(outputs, units) -> (batch, U)`` used as a target."""

    def __init__(self, function):
        self.function = function

    def __call__(self, outputs, units):
        return self.function(outputs, units)

    def __repr__(self):
        name = getattr(self.function, "__qualname__", type(self.function).__name__)
        return f"<target function {name}>"


def as_target(target) -> Target | None:
    """``target`` as a :class:`Target` (``None`` stays ``None``: the default)."""
    if target is None or isinstance(target, Target):
        return target
    if isinstance(target, type) and issubclass(target, Target):
        raise TypeError(
            f"target= got the class {target.__name__}; pass an instance, e.g. "
            f"target={target.__name__}(...) (or ke.targets.classes())."
        )
    if not callable(target):
        raise TypeError(
            f"target= takes a ke.targets.Target (ke.targets.classes(), output(name), "
            f"regression(), segmentation(...)) or a function (outputs, units) -> (batch, U) "
            f"scores; got a {type(target).__name__}."
        )
    return FunctionTarget(target)


def bound(target, model) -> Target | None:
    """``target`` checked and bound to ``model`` (``None``: the default target)."""
    target = as_target(target)
    if target is None:
        return None
    explained = model.explained_model if isinstance(model, inspection.ExposedModel) else model
    result = target.bind(explained) if target.reads_model_outputs else target.bind(model)
    if not isinstance(result, Target):
        raise TypeError(
            f"{type(target).__name__}.bind(model) must return a Target (self or a copy); "
            f"got a {type(result).__name__}."
        )
    return result


def model_to_run(model, target):
    """The model whose outputs ``target`` reads: an exposed model's own model, or ``model``.

    An :class:`~keras_explainable.inspection.ExposedModel` returns ``[logits,
    *activations]``; a target other than :func:`classes` must see what the
    user's model returns, so the methods run the model the exposure views (the
    exposure still says which layer a CAM method explains: its taps are layers
    of that model).
    """
    if target is not None and target.reads_model_outputs:
        if isinstance(model, inspection.ExposedModel):
            return model.explained_model
    return model


def batched_units(indices, indices_batch_dims, batch):
    """``indices`` as ``(batch, U)`` int32 (or ``None``): what a target's ``units`` are."""
    if indices is None:
        return None
    indices = ops.cast(ops.convert_to_tensor(indices), "int32")
    if indices_batch_dims == 0:
        if len(indices.shape) == 1:
            indices = indices[None]
        return ops.broadcast_to(indices, (batch,) + tuple(indices.shape[1:]))
    if len(indices.shape) == 1:
        return indices[:, None]
    return indices


def selector(target, indices, indices_axis=-1, indices_batch_dims=-1):
    """The ``score_fn(outputs, tap_values)`` the backends differentiate.

    ``target=None`` is the default: the first output (an exposed model's logits)
    gathered at ``indices``, exactly as before targets existed.
    """
    if target is None or type(target) is Classes:  # noqa: E721  (not a subclass)

        def select(outputs, tap_values):
            del tap_values
            logits = first_output(outputs)
            # gather first, then widen: only the explained units are cast
            return widen(gather_units(logits, indices, indices_axis, indices_batch_dims))

        return select

    def select_target(outputs, tap_values):
        del tap_values
        batch = _batch_size(outputs)
        units = batched_units(indices, indices_batch_dims, batch)
        if units is None and target.needs_units:
            raise ValueError(
                f"{target!r} explains one unit per sample: pass y (e.g. the class index of "
                "each sample, shape (samples,) or (samples, units)); y=None means every unit, "
                "which this target cannot score."
            )
        return check_scores(target(outputs, units), units, target)

    return select_target


def _batch_size(outputs):
    leaves = list(outputs.values()) if isinstance(outputs, Mapping) else outputs
    if isinstance(leaves, (list, tuple)):
        leaves = leaves[0] if leaves else None
        return _batch_size(leaves) if leaves is not None else None
    return ops.shape(outputs)[0]


def check_scores(scores, units, target):
    """``scores`` checked to be ``(batch, U)`` floats, widened to float32."""
    expected = "(batch, U)" if units is None else f"(batch, {units.shape[1]})"
    shape = getattr(scores, "shape", None)
    if shape is None or len(shape) != 2:
        got = "a " + type(scores).__name__ if shape is None else f"shape {tuple(shape)}"
        raise ValueError(
            f"The target {target!r} returned {got}; a target returns {expected} scores: one "
            "row per sample, one column per explained unit (reduce extra axes, e.g. with "
            "keras.ops.sum or keras.ops.mean)."
        )
    if units is not None and shape[1] is not None and shape[1] != units.shape[1]:
        raise ValueError(
            f"The target {target!r} returned scores of shape {tuple(shape)} for y of shape "
            f"{tuple(units.shape)}; it must return {expected}, one column per unit of y."
        )
    if units is not None and None not in (shape[0], units.shape[0]):
        if shape[0] != units.shape[0]:
            raise ValueError(
                f"The target {target!r} returned {shape[0]} rows for a batch of "
                f"{units.shape[0]}; it must return {expected}."
            )
    dtype = keras.backend.standardize_dtype(scores.dtype)
    if "float" not in dtype:
        raise TypeError(
            f"The target {target!r} returned {dtype} scores; it must return float {expected} "
            "scores (gradients of integers do not exist): cast them, e.g. "
            "keras.ops.cast(scores, 'float32')."
        )
    return widen(scores)


# --------------------------------------------------------------------------- names


def output_names(model) -> list[str] | None:
    """The names of ``model``'s outputs, in the order the model returns them.

    A dict output: its keys; a list output of a functional model: the names of
    the layers producing them (``model.output_names``). ``None`` when Keras
    cannot tell (a subclassed model): names are then checked when it runs.
    """
    try:
        structure = model.output
    except (AttributeError, ValueError):
        structure = None
    if isinstance(structure, Mapping):
        return [str(key) for key in structure]
    names = getattr(model, "output_names", None)
    if names:
        return [str(name) for name in names]
    return None


def closest(name: str, names) -> str:
    """`` Did you mean 'x'?`` for the closest of ``names`` (or an empty string)."""
    match = difflib.get_close_matches(str(name), [str(n) for n in names], n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""
