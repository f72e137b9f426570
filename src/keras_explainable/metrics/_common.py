"""Helpers shared by the metrics: input checks, pixel ranking, AUC, batched scoring.

Nothing here imports a framework or the backend: models run through the
engine's scores-only step (no gradient tracking), compiled and cached like the
explaining steps; ``y`` goes through the engine's one validator.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from .. import targets
from ..engine.checks import check_units
from ..engine.data import Columns, to_numpy
from ..engine.step import get_scores_step, run_padded

# --------------------------------------------------------------------------- checks


def as_images(x, name: str = "x") -> np.ndarray:
    """``x`` as a float numpy batch of images ``(N, H, W, C)``."""
    if x is None:
        raise TypeError(f"`{name}` is required: pass a batch of images (N, H, W, C).")
    x = to_numpy(x)
    if x.ndim != 4:
        hint = " For a single image, add the batch axis: x[None]." if x.ndim == 3 else ""
        raise ValueError(
            f"`{name}` must be a batch of images (N, H, W, C), channels last; got shape "
            f"{x.shape}.{hint}"
        )
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise TypeError(f"`{name}` holds {x.dtype} values; pass numbers.")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(keras.config.floatx())
    if not np.isfinite(x).all():
        raise ValueError(f"`{name}` holds NaN or Inf values; clean them first.")
    return x


def as_maps(maps, count: int | None = None, size=None, name: str = "maps") -> np.ndarray:
    """Saliency maps as float64 numpy ``(N, H, W)``, resized (bilinear) to ``size``.

    Accepts ``(N, H, W)`` or ``(N, H, W, 1)`` — one map per image, as
    ``ke.explain`` returns for one unit per sample.
    """
    if maps is None:
        raise TypeError(f"`{name}` is required: pass one saliency map per image (N, H, W).")
    maps = to_numpy(maps)
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if maps.ndim != 3:
        more = ""
        if maps.ndim == 4:
            more = (
                f" It has {maps.shape[-1]} units per image: explain one unit per image "
                "(e.g. y = the labels) or select one, maps[..., k]."
            )
        raise ValueError(
            f"`{name}` must hold one map per image, (N, H, W) or (N, H, W, 1); got shape "
            f"{maps.shape}.{more}"
        )
    if count is not None and len(maps) != count:
        raise ValueError(f"`{name}` holds {len(maps)} maps for {count} images; give one per image.")
    if not np.issubdtype(maps.dtype, np.number) and maps.dtype != np.bool_:
        raise TypeError(f"`{name}` holds {maps.dtype} values; pass numbers.")
    maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        raise ValueError(f"`{name}` holds NaN or Inf values; clean them first.")
    if size is not None and tuple(maps.shape[1:]) != tuple(size):
        maps = resize_maps(maps, size)
    return maps


def resize_maps(maps: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` maps to ``size`` (keras.ops.image.resize)."""
    resized = ops.image.resize(
        ops.convert_to_tensor(maps[..., None].astype("float32")),
        tuple(int(s) for s in size),
        interpolation="bilinear",
        antialias=False,
        data_format="channels_last",
    )
    return np.asarray(ops.convert_to_numpy(resized), dtype=np.float64)[..., 0]


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    return int(value)


def fractions_in(values, name: str, low_open=False) -> np.ndarray:
    """A 1-D float array of fractions in [0, 1]."""
    try:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be numbers in [0, 1]; got {values!r}.") from None
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"`{name}` must be a non-empty list of fractions in [0, 1]; got {values}.")
    if low_open and np.any(values == 0):
        raise ValueError(f"`{name}` must be fractions in (0, 1]; got {values}.")
    return values


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max normalize each ``(N, ...)`` map to [0, 1]; a constant map becomes zeros."""
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


# --------------------------------------------------------------------------- ranking and AUC


def pixel_ranks(maps: np.ndarray) -> np.ndarray:
    """The rank of every pixel by decreasing saliency: 0 is the most salient.

    Ties are broken by raster order (a stable sort), so the result is
    deterministic. ``maps`` is ``(N, H, W)``; the result is int ``(N, H, W)``.
    """
    n = len(maps)
    flat = maps.reshape(n, -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks.reshape(maps.shape)


def normalized_auc(curves) -> np.ndarray:
    """Area under equally spaced curves on [0, 1], by the trapezoid rule.

    ``auc = (sum(p) - p[0] / 2 - p[-1] / 2) / (len(p) - 1)`` along the last
    axis: the normalisation of the RISE reference code (Petsiuk et al., 2018).

    Args:
        curves: ``(..., points)`` with at least two points.

    Returns:
        the areas, ``curves.shape[:-1]``.

    Example:
        >>> ke.metrics.normalized_auc([1.0, 0.5, 0.0])
        0.5

    References:
        Petsiuk, Das & Saenko, "RISE", BMVC 2018 (evaluation code, ``auc``).
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 0 or curves.shape[-1] < 2:
        raise ValueError(f"A curve needs at least two points; got shape {curves.shape}.")
    total = curves.sum(axis=-1) - curves[..., 0] / 2 - curves[..., -1] / 2
    return total / (curves.shape[-1] - 1)


# --------------------------------------------------------------------------- scoring


def _model_dtype(array: np.ndarray):
    """float32 for a float input, the integers of an integer one (token ids, codes)."""
    return np.float32 if np.issubdtype(array.dtype, np.floating) else array.dtype


class Scorer:
    """Batched, compiled forward passes returning the model's activated outputs.

    The forward pass is the engine's scores-only step
    (:func:`keras_explainable.engine.step.get_scores_step`): the same step cache,
    jit policy and padded batch run as ``explain``, so every metric call on a
    model reuses one compiled program.

    Args:
        model: a Keras model whose first output is ``(batch, classes)``.
        activation: ``"softmax"`` (class probabilities from logits),
            ``"sigmoid"``, ``None`` (raw outputs) or a function of a tensor.
        batch_size: rows per forward pass; the last batch is padded so one
            compiled program serves every call.
        jit_compile: as ``ke.explain`` (default: XLA on JAX only).
        target: what is scored (:mod:`ke.targets`): ``target(outputs, None)``,
            every unit it scores, takes the place of the first output (the
            softmax applies to a class vector only, see
            :func:`~keras_explainable.engine.step.scores_step`).
    """

    def __init__(
        self, model, activation="softmax", batch_size: int = 64, jit_compile=None, target=None
    ):
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(
                f"`model` must be a Keras 3 model; got a {type(model).__name__}. Metrics take "
                "(model, x, maps, ...)."
            )
        self.model = model
        self.activation = activation
        bound = targets.bound(target, model)  # names checked now
        self._classwise = bound is None or bound.scores_classes
        self._step = get_scores_step(model, activation, jit_compile, target)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.classes = None

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Activated outputs ``(rows, classes)`` of a numpy batch of any length."""
        results = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            if isinstance(chunk, Columns):  # a multi-input model: integer inputs kept
                chunk = chunk.map(lambda a: np.ascontiguousarray(a, _model_dtype(a)))
            else:
                chunk = np.ascontiguousarray(chunk, dtype=np.float32)
            out = np.asarray(run_padded(self._step, chunk, None, self.batch_size), np.float64)
            if out.ndim != 2:
                raise ValueError(
                    f"The first output of '{self.model.name}' has shape {out.shape}; metrics need "
                    "(batch, classes) scores: pick another output with "
                    "target=ke.targets.output(name)."
                )
            if self.activation == "softmax" and out.shape[-1] == 1 and self._classwise:
                raise ValueError(
                    f"'{self.model.name}' has a single output unit: a softmax over it is always "
                    "1. Pass activation='sigmoid' (binary classifier) or activation=None."
                )
            results.append(out)
        scores = np.concatenate(results)
        self.classes = scores.shape[-1]
        return scores

    def units(self, x: np.ndarray, y) -> np.ndarray:
        """The explained class of every image: ``y`` checked, or the top-1 prediction.

        ``y`` goes through the engine's one validator (:func:`check_units`):
        integers (or integral floats; not one-hot rows), one per image, in range.
        """
        if y is None:
            return self(x).argmax(axis=-1)
        classes = self.classes or self(x[:1]).shape[-1]
        units = check_units(
            to_numpy(y), len(x), classes, model_name=self.model.name, one_per_sample=True
        )
        return units[:, 0].astype(np.int64)

    def scores_of_rows(
        self, total: int, build: Callable[[int, int], np.ndarray], units: np.ndarray
    ) -> np.ndarray:
        """Scores of ``units[r]`` for ``total`` rows built lazily by ``build(start, stop)``.

        Only ``batch_size`` perturbed inputs exist at a time.
        """
        scores = np.empty(total, dtype=np.float64)
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            probabilities = self(build(start, stop))
            scores[start:stop] = probabilities[np.arange(stop - start), units[start:stop]]
        return scores
