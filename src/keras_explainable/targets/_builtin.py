"""The built-in targets: ``classes``, ``output``, ``regression``, ``segmentation``."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from keras import ops

from .._precision import widen
from .._units import first_output, gather_units
from ._base import Classes, Target, as_target, closest, output_names


def classes() -> Target:
    """The default target: the first output's units gathered at ``y``.

    ``scores[b, j] = outputs[0][b, y[b, j]]`` (the logits of a classifier;
    ``y=None`` explains every unit). On an exposed model
    (``ke.inspection.expose``) the exposed logits are gathered. ``target=None``
    means this target, computed the same way bit for bit.

    Example:
        >>> scores, maps = ke.gradcam(model, x, y, target=ke.targets.classes())
    """
    return Classes()


class Output(Target):
    """One output of a multi-output model (by name or position), then ``then``."""

    def __init__(self, key, then):
        self.key = key
        self.then = then
        self._names = None

    @property
    def needs_units(self):
        return self.then.needs_units

    @property
    def scores_classes(self):
        return self.then.scores_classes

    def bind(self, model) -> Target:
        names = output_names(model)
        if names is not None:
            self._check_key(names)
        clone = copy.copy(self)
        clone._names = names
        clone.then = self.then.bind(model)
        return clone

    def _check_key(self, names):
        key = self.key
        if isinstance(key, str):
            if key not in names:
                raise ValueError(
                    f"The model has no output named {key!r}.{closest(key, names)} Its outputs "
                    f"are {names} (or pick one by position: ke.targets.output(0))."
                )
        elif not -len(names) <= key < len(names):
            raise ValueError(
                f"ke.targets.output({key}): the model has {len(names)} output(s), {names}; "
                f"pick a position in [0, {len(names) - 1}] or a name."
            )

    def pick(self, outputs):
        """The chosen output of ``outputs`` (a tensor, a list or a dict)."""
        key = self.key
        if isinstance(outputs, Mapping):
            names = [str(k) for k in outputs]
            self._check_key(names)
            return outputs[key] if isinstance(key, str) else outputs[list(outputs)[key]]
        if isinstance(outputs, (list, tuple)):
            if isinstance(key, str):
                names = self._names
                if names is None or len(names) != len(outputs):
                    raise ValueError(
                        f"ke.targets.output({key!r}): the model returns a list of "
                        f"{len(outputs)} outputs whose names Keras does not know (a subclassed "
                        "model); pick one by position, e.g. ke.targets.output(1)."
                    )
                return outputs[names.index(key)]
            self._check_key([f"output {i}" for i in range(len(outputs))])
            return outputs[key]
        names = self._names or ["output 0"]
        if key in (0, -1) or (isinstance(key, str) and key in names):
            return outputs
        raise ValueError(
            f"ke.targets.output({key!r}): the model has a single output"
            f"{f' ({names[0]!r})' if self._names else ''}; use ke.targets.output(0) or no "
            "target."
        )

    def __call__(self, outputs, units):
        return self.then(self.pick(outputs), units)

    def units_of(self, outputs) -> int | None:
        return self.then.units_of(self.pick(outputs))

    def per_sample(self):
        return self.then.per_sample()

    def with_rows(self, rows) -> Target:
        if not rows:
            return self
        clone = copy.copy(self)
        clone.then = self.then.with_rows(rows)
        return clone

    def _current_rows(self) -> dict:
        return self.then._current_rows()

    def __repr__(self):
        return f"ke.targets.output({self.key!r}, then={self.then!r})"


def output(name_or_index, then=None) -> Target:
    """One output of a multi-output model, explained with ``then``.

    Args:
        name_or_index: the output's name (a key of a dict output, or the name
            of the layer producing it, ``model.output_names``) or its position.
        then: the target applied to that output (default
            ``ke.targets.classes()``: its units gathered at ``y``); e.g.
            ``ke.targets.regression()`` for a regression head.

    Raises:
        ValueError: an unknown name (the message lists the outputs and the
            closest name) or a position out of range, when the method runs.

    Example:
        >>> scores, maps = ke.gradcam(model, x, y, target=ke.targets.output("species"))
        >>> scores, maps = ke.gradients(
        ...     model, x, target=ke.targets.output("box", then=ke.targets.regression(2)))
    """
    if isinstance(name_or_index, (bool, np.bool_)) or not isinstance(
        name_or_index, (str, int, np.integer)
    ):
        raise TypeError(
            f"ke.targets.output() takes an output name (str) or position (int); got "
            f"{name_or_index!r}."
        )
    if isinstance(name_or_index, np.integer):
        name_or_index = int(name_or_index)
    then = as_target(then)
    return Output(name_or_index, Classes() if then is None else then)


class Regression(Target):
    """A regression output (one column, or the columns ``y`` picks), with a sign."""

    def __init__(self, index, sign):
        self.index = index
        self.sign = sign

    @property
    def needs_units(self):
        return self.index is None

    def _values(self, outputs):
        values = first_output(outputs)
        if len(values.shape) == 1:
            values = ops.expand_dims(values, -1)
        if len(values.shape) != 2:
            raise ValueError(
                f"regression() scores a (batch, outputs) tensor; the explained output has shape "
                f"{tuple(values.shape)}. Pick another output with ke.targets.output(name, "
                "then=ke.targets.regression()) or write a custom target."
            )
        return values

    def __call__(self, outputs, units):
        values = self._values(outputs)
        if self.index is None:
            picked = gather_units(values, units)
        else:
            width = values.shape[-1]
            if width is not None and self.index >= width:
                raise ValueError(
                    f"regression(index={self.index}): the output has {width} value(s) per "
                    f"sample; pick an index in [0, {width - 1}]."
                )
            picked = values[:, self.index : self.index + 1]
        return picked if self.sign > 0 else -picked

    def units_of(self, outputs) -> int | None:
        return int(self._values(outputs).shape[-1])

    def __repr__(self):
        return f"ke.targets.regression(index={self.index!r}, sign={self.sign:+d})"


def regression(index: int | None = 0, sign: int = +1) -> Target:
    """A regression output as the score: ``sign * outputs[0][:, index]``, ``(batch, 1)``.

    The explained direction matters: ``sign=+1`` shows what raises the value,
    ``sign=-1`` what lowers it (a map of the raw output mixes both up when a
    method rectifies it, as the CAMs' ReLU does).

    Args:
        index: the column of the (first) output, ``(batch, outputs)`` or
            ``(batch,)``; ``None`` lets ``y`` pick the columns, as for classes.
        sign: ``+1`` or ``-1``.

    Example:
        >>> scores, maps = ke.gradients(model, x, target=ke.targets.regression(sign=-1))
    """
    if index is not None and (
        isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)) or index < 0
    ):
        raise ValueError(
            f"regression(index=...) is a column number >= 0 (or None: y picks); got {index!r}."
        )
    if isinstance(sign, (bool, np.bool_)) or sign not in (1, -1):
        raise ValueError(f"regression(sign=...) is +1 or -1; got {sign!r}.")
    return Regression(None if index is None else int(index), int(sign))


class Segmentation(Target):
    """Seg-Grad-CAM's score: a class's logits summed over a region of the image."""

    needs_units = True

    def __init__(self, mask):
        self._mask = mask

    def per_sample(self):
        return {} if self._mask is None else {"mask": self._mask}

    def __call__(self, outputs, units):
        logits = first_output(outputs)
        spatial = self._spatial(logits)
        rank = len(logits.shape)
        count = units.shape[1]
        shape = (-1,) + (1,) * len(spatial) + (count,)
        chosen = ops.broadcast_to(
            ops.reshape(units, shape), tuple(ops.shape(logits)[:-1]) + (count,)
        )
        # (batch, *spatial, U), float32 for a mixed-precision model: the sum covers every pixel
        picked = widen(ops.take_along_axis(logits, chosen, axis=-1))
        if self._mask is None:  # the pixels the model assigns to each explained class
            winner = ops.expand_dims(ops.cast(ops.argmax(logits, axis=-1), "int32"), -1)
            region = ops.cast(ops.equal(winner, chosen), picked.dtype)
        else:
            mask = self.rows("mask")
            if tuple(mask.shape[1:]) != tuple(spatial):
                raise ValueError(
                    f"segmentation(mask): the mask has shape {tuple(mask.shape)} but the "
                    f"explained output has shape {tuple(logits.shape)}; give one mask per "
                    f"sample of the output's spatial size, (samples, "
                    f"{', '.join(str(s) for s in spatial)})."
                )
            region = ops.expand_dims(ops.cast(mask, picked.dtype), -1)
        return ops.sum(picked * region, axis=tuple(range(1, rank - 1)))

    def _spatial(self, logits):
        if len(logits.shape) < 3:
            raise ValueError(
                f"segmentation() explains a (batch, h, w, classes) output; the explained output "
                f"has shape {tuple(logits.shape)}. Use ke.targets.classes() for a classifier, or "
                "pick the segmentation output with ke.targets.output(name, "
                "then=ke.targets.segmentation())."
            )
        return tuple(logits.shape[1:-1])

    def units_of(self, outputs) -> int | None:
        logits = first_output(outputs)
        self._spatial(logits)
        return int(logits.shape[-1])

    def __repr__(self):
        where = "argmax region" if self._mask is None else f"mask {self._mask.shape}"
        return f"ke.targets.segmentation({where})"


def segmentation(mask=None) -> Target:
    """Seg-Grad-CAM: the logits of class ``y`` summed over a region of the output.

    ``score[b, j] = sum_{p in R} logits[b, p, y[b, j]]`` for a
    ``(batch, *spatial, classes)`` output (Vinogradova et al., 2020). The
    region ``R`` is the ``mask`` given, or, with ``mask=None``, the pixels
    whose predicted class (argmax) is ``y[b, j]``. ``y`` is required.

    Args:
        mask: ``None``, or one mask per sample of ``x``, ``(samples, h, w)``
            (the output's spatial size): booleans, or numbers that weigh each
            pixel. The engine slices it into batches with ``x``.

    Raises:
        ValueError: a mask that is not ``(samples, *spatial)`` numbers, or whose
            spatial size differs from the output's (when the method runs).

    Example:
        >>> scores, maps = ke.gradcam(model, x, y=np.full(len(x), 3),
        ...                           target=ke.targets.segmentation(masks))

    References:
        Vinogradova, Dibrov & Myers (2020). Towards Interpretable Semantic
        Segmentation via Gradient-weighted Class Activation Mapping. AAAI
        (student abstract). arXiv:2002.11434.
    """
    if mask is not None:
        if hasattr(mask, "shape") and not isinstance(mask, np.ndarray):
            mask = ops.convert_to_numpy(mask)
        mask = np.asarray(mask)
        if mask.ndim < 2:
            raise ValueError(
                f"segmentation(mask) takes one mask per sample, (samples, h, w); got shape "
                f"{mask.shape}. For a single sample, add the batch axis: mask[None]."
            )
        if mask.dtype != np.bool_ and not np.issubdtype(mask.dtype, np.number):
            raise TypeError(
                f"segmentation(mask) holds {mask.dtype} values; pass booleans (or 0/1 weights)."
            )
        if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all():
            raise ValueError("segmentation(mask) holds NaN or Inf values; clean them first.")
    return Segmentation(mask)
