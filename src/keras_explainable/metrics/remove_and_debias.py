"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022).

A fraction of the pixels is removed — the most relevant first (MoRF) or the
least relevant first (LeRF) — and filled in by *noisy linear imputation*, so
that the shape of the removed region does not itself tell the model the
class. The model is not retrained.

Noisy linear imputation: every removed pixel ``i`` takes the weighted mean of
its in-image 8-neighbours ``j``, with weight ``1/6`` for the 4 edge neighbours
and ``1/12`` for the 4 diagonal ones:

    (sum_j w_ij) u_i - sum_{j removed} w_ij u_j = sum_{j kept} w_ij x_j,

a sparse symmetric positive-definite system (one per image and channel) as
soon as some pixel is kept. It is solved here with preconditioned conjugate
gradients in numpy (no SciPy needed), then Gaussian noise of standard
deviation ``noise`` (default 0.01) is added to the imputed pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._common import Scorer, as_images, as_maps, fractions_in, pixel_ranks

#: The removal fractions of the ROAD paper and pytorch-grad-cam: 10%, 20%, ..., 90%.
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

_NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)


def _neighbour_sum(field: np.ndarray) -> np.ndarray:
    """``sum_j w_ij field_j`` over the in-image 8-neighbours of every pixel (B, H, W, C)."""
    height, width = field.shape[1:3]
    padded = np.pad(field, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = np.zeros(field.shape, dtype=np.float64)
    for dy, dx, weight in _NEIGHBOURS:
        total += weight * padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    return total


def linear_imputation(images, masks, tolerance: float = 1e-8, max_iterations=None) -> np.ndarray:
    """Fill the masked pixels with the solution of ROAD's linear system (no noise).

    Args:
        images: ``(B, H, W, C)`` images.
        masks: ``(B, H, W)`` bool, True where a pixel is removed.
        tolerance: relative residual at which conjugate gradients stop.
        max_iterations: at most this many iterations (default ``H * W``, the
            exact-arithmetic bound).

    Returns:
        float64 ``(B, H, W, C)``: kept pixels unchanged, removed ones imputed. An
        image with every pixel removed has no kept pixel to interpolate and
        becomes zeros.

    Example:
        >>> filled = ke.metrics.linear_imputation(x, removed)  # removed: (B, H, W) bool

    References:
        Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
        Methods" (ROAD), ICML 2022.
    """
    images = np.asarray(images, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if images.ndim != 4 or masks.shape != images.shape[:3]:
        raise ValueError(
            f"Imputation takes images (B, H, W, C) and masks (B, H, W); got {images.shape} "
            f"and {masks.shape}."
        )
    missing = masks[..., None].astype(np.float64)
    known = 1.0 - missing
    weight_sum = _neighbour_sum(np.ones((1,) + images.shape[1:3] + (1,)))  # (1, H, W, 1)

    def apply(u):  # the system's matrix on the removed pixels
        return missing * (weight_sum * u - _neighbour_sum(u))

    rhs = missing * _neighbour_sum(known * images)
    solution = np.zeros_like(images)
    residual = rhs.copy()
    preconditioned = residual / weight_sum
    direction = preconditioned.copy()
    axes = (1, 2)
    rho = (residual * preconditioned).sum(axis=axes, keepdims=True)
    target = tolerance * np.sqrt((rhs**2).sum(axis=axes, keepdims=True))
    limit = max_iterations if max_iterations is not None else images.shape[1] * images.shape[2]
    for _ in range(int(limit)):
        if np.all(np.sqrt((residual**2).sum(axis=axes, keepdims=True)) <= target):
            break
        product = apply(direction)
        curvature = (direction * product).sum(axis=axes, keepdims=True)
        step = np.where(curvature > 0, rho / np.where(curvature > 0, curvature, 1.0), 0.0)
        solution += step * direction
        residual -= step * product
        preconditioned = residual / weight_sum
        rho_next = (residual * preconditioned).sum(axis=axes, keepdims=True)
        beta = np.where(rho > 0, rho_next / np.where(rho > 0, rho, 1.0), 0.0)
        direction = preconditioned + beta * direction
        rho = rho_next
    return known * images + missing * solution


def noisy_linear_imputation(images, masks, noise: float = 0.01, seed=None) -> np.ndarray:
    """ROAD's noisy linear imputation of the masked pixels.

    Each removed pixel is the weighted mean of its 8 neighbours (1/6 for the 4
    edge neighbours, 1/12 for the diagonals), solved jointly over all removed
    pixels, plus ``N(0, noise**2)`` noise (standard deviation ``noise``).

    Args:
        images: ``(B, H, W, C)`` images.
        masks: ``(B, H, W)`` bool, True where a pixel is removed.
        noise: the noise's standard deviation (0 turns it off).
        seed: seed of the noise (``None``: fresh entropy).

    Returns:
        float64 ``(B, H, W, C)``.

    Example:
        >>> filled = ke.metrics.noisy_linear_imputation(x, maps > 0.5, noise=0.0)

    References:
        Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
        Methods" (ROAD), ICML 2022.
    """
    filled = linear_imputation(images, masks)
    if noise:
        rng = np.random.default_rng(seed)
        filled = filled + np.asarray(masks)[..., None] * rng.normal(0.0, noise, filled.shape)
    return filled


class RoadCurve(NamedTuple):
    """The result of :func:`road`.

    Attributes:
        scores: ``(N, P)`` class score after removing each fraction.
        original: ``(N,)`` class score on the intact image.
        fractions: ``(P,)`` the removed fractions.
        units: ``(N,)`` the explained classes.
        order: ``"morf"`` or ``"lerf"``.
    """

    scores: np.ndarray
    original: np.ndarray
    fractions: np.ndarray
    units: np.ndarray
    order: str


def _removal_masks(ranks, counts, order):
    pixels = ranks.shape[1] * ranks.shape[2]
    if order == "morf":
        return ranks < counts[:, None, None]
    return ranks >= (pixels - counts)[:, None, None]


def road(
    model,
    x,
    maps,
    y=None,
    order: str = "morf",
    fractions=DEFAULT_FRACTIONS,
    noise: float = 0.01,
    seed: int = 0,
    activation="softmax",
    batch_size: int = 64,
    jit_compile=None,
    target=None,
) -> RoadCurve:
    """ROAD: class score after removing a fraction of pixels with noisy linear imputation.

    For each fraction ``p`` the ``round(p * H * W)`` most (``order="morf"``) or
    least (``"lerf"``) salient pixels (ranked by the map, ties in raster order)
    are removed and imputed (see :func:`noisy_linear_imputation`); the score
    ``f_c`` of the imputed image is recorded. A faithful map makes the MoRF
    score fall fast and the LeRF score stay high.

    Defaults: fractions 10%..90% (the paper's), noise 0.01, softmax
    probabilities, ``c`` = the top-1 class. The noise of image ``i`` at
    fraction index ``k`` is seeded by ``(seed, i, k)``: results do not depend
    on ``batch_size``.

    Args:
        model: a Keras model whose first output is ``(batch, classes)`` logits.
        x: images ``(N, H, W, C)`` as the model takes them.
        maps: saliency ``(N, h, w)`` or ``(N, h, w, 1)``.
        y: ``(N,)`` classes; ``None`` = the top-1 prediction.
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least).
        fractions: the removed fractions, in [0, 1].
        noise: standard deviation of the imputation noise.
        seed: seed of the noise.
        activation: ``"softmax"``, ``"sigmoid"``, ``None`` or a function.
        batch_size: images per forward pass (and per imputation batch).
        jit_compile: compile the forward pass with XLA (default: on JAX only).
        target: what is scored (:mod:`ke.targets`), as in ``ke.metrics.deletion``.

    Returns:
        :class:`RoadCurve` ``(scores, original, fractions, units, order)``.

    Example:
        >>> morf = ke.metrics.road(model, x, maps, y, order="morf")
        >>> morf.scores.mean(axis=0)  # one point per fraction

    References:
        Rong, Leemann, Borisov, Kasneci & Kasneci, "A Consistent and Efficient
        Evaluation Strategy for Attribution Methods", ICML 2022.
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"`order` is 'morf' (most relevant first) or 'lerf'; got {order!r}.")
    x = as_images(x)
    n, height, width, _ = x.shape
    maps = as_maps(maps, n, size=(height, width))
    fractions = fractions_in(fractions, "fractions")
    counts = np.round(fractions * height * width).astype(np.int64)
    ranks = pixel_ranks(maps)
    scorer = Scorer(model, activation, batch_size, jit_compile, target)
    units = scorer.units(x, y)
    points = len(fractions)

    def build(start, stop):
        rows = np.arange(start, stop)
        image, level = rows // points, rows % points
        masks = _removal_masks(ranks[image], counts[level], order)
        filled = linear_imputation(x[image], masks)
        if noise:
            for r, (i, k) in enumerate(zip(image, level)):
                rng = np.random.default_rng((seed, int(i), int(k)))
                filled[r] += masks[r][..., None] * rng.normal(0.0, noise, filled.shape[1:])
        return filled.astype(x.dtype)

    scores = scorer.scores_of_rows(n * points, build, np.repeat(units, points))
    original = scorer(x)[np.arange(n), units]
    return RoadCurve(scores.reshape(n, points), original, fractions, units, order)


class RoadCombined(NamedTuple):
    """The result of :func:`road_combined`.

    Attributes:
        score: ``(N,)`` ``mean_p (LeRF_p - MoRF_p) / 2`` per image (higher is better).
        morf: the :class:`RoadCurve` of the most-relevant-first removal.
        lerf: the :class:`RoadCurve` of the least-relevant-first removal.
    """

    score: np.ndarray
    morf: RoadCurve
    lerf: RoadCurve


def road_combined(model, x, maps, y=None, fractions=DEFAULT_FRACTIONS, **params) -> RoadCombined:
    """ROAD combined score: half the gap between LeRF and MoRF, averaged over fractions.

    ``score_i = mean_p (f_c(LeRF_p(x_i)) - f_c(MoRF_p(x_i))) / 2`` — the
    ``ROADCombined`` of pytorch-grad-cam, where each term is a confidence change
    relative to the intact image (the intact score cancels). Higher is better.

    Args:
        model: as :func:`road`.
        x: as :func:`road`.
        maps: as :func:`road`.
        y: as :func:`road`.
        fractions: as :func:`road`.
        **params: ``noise``, ``seed``, ``activation``, ``batch_size``,
            ``jit_compile``, ``target`` (see :func:`road`).

    Returns:
        :class:`RoadCombined` ``(score, morf, lerf)``.

    Example:
        >>> ke.metrics.road_combined(model, x, maps, y).score.mean()

    References:
        Rong et al., ICML 2022; Gildenblat et al., pytorch-grad-cam (ROADCombined).
    """
    x = as_images(x)
    if y is None:
        y = Scorer(
            model, params.get("activation", "softmax"), params.get("batch_size", 64),
            params.get("jit_compile"), params.get("target"),
        ).units(x, None)  # fmt: skip
    morf = road(model, x, maps, y, order="morf", fractions=fractions, **params)
    lerf = road(model, x, maps, y, order="lerf", fractions=fractions, **params)
    return RoadCombined(((lerf.scores - morf.scores) / 2).mean(axis=1), morf, lerf)
