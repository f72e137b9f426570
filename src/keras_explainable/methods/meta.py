"""Meta methods: they take an explaining method and return another one.

- :func:`smooth` — SmoothGrad, SquareGrad and VarGrad: the method applied to
  noisy copies of the inputs, aggregated;
- :func:`tta` — test-time augmentation: the method applied to rescaled and
  flipped copies, brought back to the base map size and averaged.

The returned methods have the standard signature, so they work with every
method (``gradients``, ``gradcam``, ...), directly or through
:func:`ke.explain`. Their extra passes are batched: the copies are stacked
along the batch axis and go through the wrapped method together.
"""

from __future__ import annotations

import keras
from keras import ops

from .._axes import SPATIAL_AXIS
from .._inputs import is_float, is_structure, leaves, pack
from ..targets import as_target
from ._common import (
    as_inputs,
    check_chunk_size,
    chunked,
    positive_axes,
    tile_batch,
    tile_indices,
    tile_target,
    ungroup,
    widen,
)
from ._tokens import is_ids, noisy_model
from ._tta import tta
from ._wrapping import check_maps as _check_maps
from ._wrapping import describe as _describe

_NOISE_TYPES = ("relative", "absolute")
_AGGREGATIONS = ("mean", "square", "variance")


def _is_jax_tracer(value) -> bool:
    return keras.backend.backend() == "jax" and any(
        klass.__name__.endswith("Tracer") for klass in type(value).__mro__
    )


def _normal(shape, dtype, generator):
    """Standard normal noise from ``generator``, advancing it where that is possible.

    The draw runs in its own ``keras.StatelessScope`` so that the generator's
    state update is caught instead of written into the variable. It is then
    applied when it is a concrete value (eager) or a graph op (TensorFlow's
    ``tf.function``); inside a JAX trace it is a tracer that must not leak
    into the variable, so the state stays where it is for that trace.
    """
    with keras.StatelessScope() as scope:
        noise = keras.random.normal(shape, dtype=dtype, seed=generator)
    state = scope.get_current_value(generator.state)
    if state is not None and not _is_jax_tracer(state):
        generator.state.assign(state)
    return noise


def smooth(
    method,
    repetitions: int = 20,
    noise: float = 0.1,
    noise_type: str = "relative",
    aggregation: str = "mean",
    chunk_size: int | None = None,
    seed=None,
):
    """SmoothGrad (and SquareGrad, VarGrad) of any explaining method.

    The method runs on ``repetitions`` copies of each input with Gaussian
    noise added, and the maps are aggregated:

    - ``"mean"``: ``mean_r m_r`` (SmoothGrad);
    - ``"square"``: ``mean_r m_r**2`` (SquareGrad);
    - ``"variance"``: ``mean_r (m_r - mean_r m_r)**2`` (VarGrad, population variance).

    The noise standard deviation is ``noise * (max(x) - min(x))`` of each
    sample (over all its values) when ``noise_type="relative"``, as in the
    paper (``noise`` is the "noise level", 10-20% recommended), or ``noise``
    itself when ``"absolute"``; token ids get it on their embedding (docs/text.md).

    Batching: the clean batch and the noisy copies are stacked along the batch
    axis, ``chunk_size`` groups of ``batch`` rows per call of ``method``
    (``None``: all ``repetitions + 1`` groups in one call).

    Scores: the returned scores are ``method``'s scores on the clean inputs
    (the clean batch rides along as one extra group), not an average over the
    noisy copies.

    Randomness and reproducibility: the noise is drawn with ``keras.random``
    from a ``keras.random.SeedGenerator`` made when ``smooth`` is called
    (``seed`` an int or None; None follows ``keras.utils.set_random_seed``)
    or passed as ``seed``. Each eager call of the returned method draws fresh
    noise, so two methods made with the same int ``seed`` give the same
    results for the same sequence of calls. In compiled steps: on TensorFlow
    (``tf.function``) the generator's state is a variable and advances on
    every call; on JAX (``jax.jit``, which ``ke.explain`` uses) a traced step
    cannot update it, so the compiled step reuses one draw for every batch
    (each sample of a batch still gets its own noise) — reproducible, but the
    same noise pattern for batch 1 and batch 2.

    Args:
        method: the explaining method to smooth.
        repetitions: the number of noisy copies, >= 1.
        noise: the noise level (relative) or standard deviation (absolute), >= 0.
        noise_type: ``"relative"`` or ``"absolute"``.
        aggregation: ``"mean"``, ``"square"`` or ``"variance"``.
        chunk_size: groups (copies of the batch) per call of ``method``, or ``None``.
        seed: an int, ``None`` or a ``keras.random.SeedGenerator``.

    Returns:
        a method ``(model, inputs, indices=None, indices_axis=-1,
        indices_batch_dims=-1, spatial_axis=(-3, -2), **params) -> (scores, maps)``
        whose ``**params`` go to ``method``; a ``target`` (:mod:`ke.targets`) is
        passed on with its per-sample rows (a mask) copied with the samples.

    Example:
        >>> smoothgrad = ke.methods.meta.smooth(
        ...     ke.methods.gradient.gradients, repetitions=20, noise=0.1)
        >>> scores, maps = smoothgrad(model, x, y)
        >>> scores, maps = ke.explain(smoothgrad, model, x, y, postprocessing=ke.filters.normalize)

    References:
        Smilkov, Thorat, Kim, Viégas & Wattenberg (2017). SmoothGrad: removing
        noise by adding noise. arXiv:1706.03825.
        Adebayo, Gilmer, Goodfellow & Kim (2018). Local Explanation Methods for
        Deep Neural Networks Lack Sensitivity to Parameter Values.
        arXiv:1810.03307 (VarGrad).
    """
    if not callable(method):
        raise TypeError(f"smooth() wraps an explaining method; got {type(method).__name__}.")
    if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
        raise ValueError(f"repetitions is an int >= 1; got {repetitions!r}.")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise is a number >= 0; got {noise!r}.")
    if noise_type not in _NOISE_TYPES:
        raise ValueError(f"noise_type is one of {_NOISE_TYPES}; got {noise_type!r}.")
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation is one of {_AGGREGATIONS}; got {aggregation!r}.")
    check_chunk_size(chunk_size)
    if isinstance(seed, keras.random.SeedGenerator):
        generator = seed
    elif seed is None or (isinstance(seed, int) and not isinstance(seed, bool)):
        generator = keras.random.SeedGenerator(seed)
    else:
        raise TypeError(f"seed is an int, None or a keras.random.SeedGenerator; got {seed!r}.")
    noise = float(noise)

    def token_noise(shape, dtype):  # token ids: the noise goes on their embedding (_tokens.py)
        return _normal(shape, dtype, generator)

    def smoothed(
        model,
        inputs,
        indices=None,
        indices_axis: int = -1,
        indices_batch_dims: int = -1,
        spatial_axis=SPATIAL_AXIS,
        **params,
    ):
        inputs = as_inputs(inputs, structured=True, ids=True)
        # several inputs: noise on the float ones; token ids: on their embedding
        structured = is_structure(inputs)
        items = leaves(inputs) if structured else [inputs]
        if not structured and not is_ids(inputs):
            positive_axes(spatial_axis, len(inputs.shape))
        noisy = [is_float(item) for item in items]
        stddevs = [_stddev(item, noise, noise_type) for item in items]
        # a target's per-sample rows (a mask) are copied with the samples
        target = as_target(params.pop("target", None))
        scores = None
        noisy_maps = []
        # group 0 is the clean batch (for the scores), groups 1..repetitions are noisy
        for start, stop in chunked(repetitions + 1, chunk_size):
            copies = stop - max(start, 1)
            batch = []
            for item, stddev, is_noisy in zip(items, stddevs, noisy):
                parts = [item] if start == 0 else []
                if copies:
                    tiled = tile_batch(item, copies)
                    if is_noisy:
                        draw = _normal(ops.shape(tiled), item.dtype, generator)
                        scale = tile_batch(stddev, copies) if noise_type == "relative" else stddev
                        tiled = tiled + draw * scale
                    parts.append(tiled)
                batch.append(parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0))
            groups = stop - start
            if target is not None:
                params["target"] = tile_target(target, groups)
            chunk_scores, maps = method(
                noisy_model(model, inputs, params, start == 0, noise, noise_type, token_noise),
                pack(inputs, batch) if structured else batch[0],
                indices=tile_indices(indices, groups, indices_batch_dims),
                indices_axis=indices_axis,
                indices_batch_dims=indices_batch_dims,
                spatial_axis=spatial_axis,
                **params,
            )
            maps = leaves(maps) if is_structure(maps) else [maps]
            for one in maps:
                if one is not None:
                    _check_maps(one, chunk_scores, "smooth")
            maps = [None if one is None else ungroup(one, groups) for one in maps]
            if start == 0:
                scores = ungroup(chunk_scores, groups)[0]
                maps = [None if one is None else one[1:] for one in maps]
            if copies:
                noisy_maps.append(maps)
        aggregated = [
            None if parts[0] is None else _aggregate(parts, aggregation)
            for parts in zip(*noisy_maps)
        ]
        if is_structure(inputs) and len(aggregated) == len(items):
            return scores, pack(inputs, aggregated)
        return scores, aggregated[0]

    _describe(
        smoothed,
        method,
        "smooth",
        repetitions=repetitions,
        noise=noise,
        noise_type=noise_type,
        aggregation=aggregation,
    )
    return smoothed


def _stddev(inputs, noise, noise_type):
    """The noise's standard deviation: ``noise`` times each sample's value range, or ``noise``."""
    if noise_type != "relative" or not is_float(inputs):
        return noise
    axes = tuple(range(1, len(inputs.shape)))  # (batch, 1, ..., 1):
    return noise * (ops.max(inputs, axes, keepdims=True) - ops.min(inputs, axes, keepdims=True))


def _aggregate(parts, aggregation):
    stacked = widen(ops.concatenate(parts, axis=0))  # float16 squares and means overflow
    if aggregation == "mean":
        return ops.mean(stacked, axis=0)
    if aggregation == "square":
        return ops.mean(ops.square(stacked), axis=0)
    return ops.var(stacked, axis=0)


__all__ = ["smooth", "tta"]
