"""Faithfulness metrics that perturb the inputs along a saliency map.

- :func:`deletion` and :func:`insertion` — the causal metrics of RISE
  (Petsiuk, Das & Saenko, BMVC 2018);
- :func:`confidence_change`, :func:`average_drop`,
  :func:`increase_in_confidence` — Average Drop % and Increase in Confidence %
  of Grad-CAM++ (Chattopadhay et al., WACV 2018).

Every perturbed image of every step of every image goes through the model in
batches of ``batch_size`` rows, compiled once, without gradient tracking.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from keras import ops

from ._common import Scorer, as_images, normalize_maps, normalized_auc, pixel_ranks
from ._common import positive_int as _positive_int
from ._inputs import as_inputs

#: RISE's blur for the insertion substrate: an 11×11 Gaussian kernel, sigma 5.
BLUR_KERNEL = 11
BLUR_SIGMA = 5.0


class CausalCurves(NamedTuple):
    """The result of :func:`deletion` / :func:`insertion`.

    Attributes:
        auc: ``(N,)`` normalised area under each image's curve (its mean is the
            AUC of the mean curve, the number RISE reports).
        curves: ``(N, steps + 1)`` score of the explained class after each step
            (column 0: nothing removed/inserted yet).
        fractions: ``(steps + 1,)`` fraction of pixels removed/inserted at each step.
        units: ``(N,)`` the explained class of each image.
    """

    auc: np.ndarray
    curves: np.ndarray
    fractions: np.ndarray
    units: np.ndarray


def gaussian_blur(x, kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Blur images with a normalised Gaussian kernel, zero padding at the borders.

    The insertion substrate of RISE's reference code (kernel 11, sigma 5, a
    per-channel convolution with zero padding), computed with
    ``keras.ops.image.gaussian_blur``.

    Args:
        x: images ``(N, H, W, C)``.
        kernel_size: the kernel's side (odd).
        sigma: the Gaussian's standard deviation, in pixels.

    Returns:
        the blurred images, numpy ``(N, H, W, C)``.

    Example:
        >>> start = ke.metrics.gaussian_blur(x)  # insertion's starting image

    References:
        Petsiuk, Das & Saenko, "RISE", BMVC 2018 (``gkern(klen=11, nsig=5)``).
    """
    x = as_images(x)
    blurred = ops.image.gaussian_blur(
        ops.convert_to_tensor(x.astype(np.float32)),
        kernel_size=(int(kernel_size), int(kernel_size)),
        sigma=(float(sigma), float(sigma)),
        data_format="channels_last",
    )
    return np.asarray(ops.convert_to_numpy(blurred), dtype=x.dtype)


def _substrate(substrate, x: np.ndarray, name: str) -> np.ndarray:
    """The image that pixels are replaced with (deletion) or revealed from (insertion).

    A feature vector (an input of a multi-input model) has no blur: ``"blur"``
    starts it from zeros.
    """
    if isinstance(substrate, str):
        if substrate != "blur":
            raise ValueError(
                f"`{name}` is a number, an array, a function or 'blur'; got {substrate!r}."
            )
        return gaussian_blur(x) if x.ndim == 4 else np.zeros_like(x)
    if callable(substrate):
        value = np.asarray(ops.convert_to_numpy(substrate(x)))
    else:
        value = np.asarray(ops.convert_to_numpy(substrate))
    try:
        return np.broadcast_to(value, x.shape).astype(x.dtype)
    except ValueError:
        raise ValueError(
            f"`{name}` of shape {value.shape} does not broadcast to the images {x.shape}: pass "
            "a number, a (C,), (H, W, C) or (N, H, W, C) array, or a function of the images."
        ) from None


def _causal_curves(
    mode, model, x, maps, y, steps, substrate, activation, batch_size, jit_compile, target
) -> CausalCurves:
    inputs = as_inputs(model, x, maps)
    parts = inputs.parts  # each explained input, perturbed by its own map at the same pace
    steps = min(_positive_int(steps, "steps"), max(part.positions for part in parts))
    bases = [_substrate(substrate, part.values, "substrate") for part in parts]
    scorer = Scorer(model, activation, batch_size, jit_compile, target)
    units = scorer.units(inputs.columns, y)
    counts = [(np.arange(steps + 1) * part.positions) // steps for part in parts]
    ranks = [pixel_ranks(part.maps) for part in parts]
    points = steps + 1

    def build(start, stop):
        rows = np.arange(start, stop)
        image, step = rows // points, rows % points
        replaced = {}
        for part, base, rank, count in zip(parts, bases, ranks, counts):
            at = rank[image]
            changed = part.spread(at < count[step].reshape((-1,) + (1,) * (at.ndim - 1)))
            first, second = (base, part.values) if mode == "deletion" else (part.values, base)
            replaced[part.position] = np.where(changed, first[image], second[image])
        return inputs.with_parts(image, replaced)

    n = len(parts[0].values)
    curves = scorer.scores_of_rows(n * points, build, np.repeat(units, points))
    curves = curves.reshape(n, points)
    return CausalCurves(normalized_auc(curves), curves, counts[0] / parts[0].positions, units)


def deletion(
    model,
    x,
    maps,
    y=None,
    steps: int = 224,
    substrate=0.0,
    activation="softmax",
    batch_size: int = 64,
    jit_compile=None,
    target=None,
) -> CausalCurves:
    """Deletion metric: how fast the class score falls as the most salient pixels go.

    Pixels are ranked by decreasing saliency (ties in raster order). At step
    ``k = 0..steps`` the first ``floor(k * H * W / steps)`` pixels (all channels)
    are replaced by the ``substrate``; ``p_k = f_c(x_k)`` is the score of class
    ``c``. The result is the normalised trapezoid area

        AUC = (sum_k p_k - p_0 / 2 - p_steps / 2) / steps.

    Lower is better (a faithful map destroys the evidence first).

    Defaults follow the RISE reference: zeros as the substrate (black *in the
    model's input space*), class probabilities (softmax of the first output),
    ``c`` = the top-1 class on the clean image, 224 steps (224 pixels per step
    on 224×224 images). ``steps`` is capped at the number of pixels.

    Args:
        model: a Keras model whose first output is ``(batch, classes)`` logits
            (pass ``activation=None`` if it already outputs probabilities).
        x: images ``(N, H, W, C)`` as the model takes them.
        maps: saliency ``(N, h, w)`` or ``(N, h, w, 1)``; resized (bilinear) to
            ``(H, W)`` when their size differs.
        y: ``(N,)`` class per image; ``None`` = the top-1 prediction.
        steps: the number of steps.
        substrate: what deleted pixels become: a number, an array broadcasting
            to ``x``, a function ``f(x) -> array`` or ``"blur"``.
        activation: ``"softmax"``, ``"sigmoid"``, ``None`` (raw outputs) or a
            function applied to the first output.
        batch_size: perturbed images per forward pass.
        jit_compile: compile the forward pass with XLA (default: on JAX only).
        target: what is scored (:mod:`ke.targets`), e.g. ``ke.targets.output(name)``
            for one output of a multi-output model; ``None``: the first output.
            The softmax applies to class scores only (a regression target is
            scored raw).

    Returns:
        :class:`CausalCurves` ``(auc, curves, fractions, units)``.

    Example:
        >>> _, maps = ke.gradcam(model, x, y)
        >>> result = ke.metrics.deletion(model, x, maps, y, steps=50)
        >>> result.auc.mean()

    References:
        Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
        Black-box Models", BMVC 2018.
    """
    return _causal_curves("deletion", **locals())  # locals(): exactly the arguments


def insertion(
    model,
    x,
    maps,
    y=None,
    steps: int = 224,
    substrate="blur",
    activation="softmax",
    batch_size: int = 64,
    jit_compile=None,
    target=None,
) -> CausalCurves:
    """Insertion metric: how fast the class score rises as salient pixels are revealed.

    Starts from the ``substrate`` — by default the image blurred with an 11×11
    Gaussian of sigma 5 (zero padding), as the RISE reference code — and at step
    ``k = 0..steps`` puts back the ``floor(k * H * W / steps)`` most salient
    pixels of the original image. With ``p_k = f_c(x_k)``,

        AUC = (sum_k p_k - p_0 / 2 - p_steps / 2) / steps.

    Higher is better. Other conventions as :func:`deletion`.

    Args:
        model: as :func:`deletion`.
        x: as :func:`deletion`.
        maps: as :func:`deletion`.
        y: as :func:`deletion`.
        steps: the number of steps (default 224, capped at the number of pixels).
        substrate: the starting image: ``"blur"`` (default), a number, an array
            broadcasting to ``x`` or a function ``f(x) -> array``.
        activation: as :func:`deletion`.
        batch_size: as :func:`deletion`.
        jit_compile: as :func:`deletion`.
        target: as :func:`deletion`.

    Returns:
        :class:`CausalCurves` ``(auc, curves, fractions, units)``.

    Example:
        >>> result = ke.metrics.insertion(model, x, maps, y, steps=50)
        >>> result.auc.mean()

    References:
        Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of
        Black-box Models", BMVC 2018.
    """
    return _causal_curves("insertion", **locals())  # locals(): exactly the arguments


class ConfidenceChange(NamedTuple):
    """The result of :func:`confidence_change`.

    Attributes:
        average_drop: Average Drop %, ``100 / N * sum(max(0, Y - O) / Y)``.
        increase_in_confidence: Increase in Confidence %, ``100 / N * sum(Y < O)``.
        original: ``(N,)`` ``Y``, the class score on the image.
        explained: ``(N,)`` ``O``, the class score on the explanation image.
        drop: ``(N,)`` ``max(0, Y - O) / Y``.
        increase: ``(N,)`` bool, ``Y < O``.
        units: ``(N,)`` the explained classes.
    """

    average_drop: float
    increase_in_confidence: float
    original: np.ndarray
    explained: np.ndarray
    drop: np.ndarray
    increase: np.ndarray
    units: np.ndarray


def confidence_change(
    model,
    x,
    maps,
    y=None,
    activation="softmax",
    batch_size: int = 64,
    jit_compile=None,
    target=None,
) -> ConfidenceChange:
    """Average Drop % and Increase in Confidence % of explanation images.

    The explanation image is ``E = x * S``, with the map ``S`` resized to the
    image and min-max normalised to [0, 1] per image (a constant map gives
    ``E = 0``). With ``Y_i = f_c(x_i)`` and ``O_i = f_c(E_i)`` (softmax
    probabilities by default; ``c`` the top-1 class unless ``y`` is given):

        Average Drop % = 100 / N * sum_i max(0, Y_i - O_i) / Y_i   (lower is better)
        Increase in Confidence % = 100 / N * sum_i 1[Y_i < O_i]     (higher is better)

    ``x`` is multiplied as the model receives it: zero is the "absent" value.

    Args:
        model: a Keras model whose first output is ``(batch, classes)`` logits.
        x: images ``(N, H, W, C)``.
        maps: saliency ``(N, h, w)`` or ``(N, h, w, 1)``.
        y: ``(N,)`` classes; ``None`` = the top-1 prediction.
        activation: ``"softmax"``, ``"sigmoid"``, ``None`` or a function.
        batch_size: images per forward pass.
        jit_compile: compile the forward pass with XLA (default: on JAX only).
        target: what is scored, as in :func:`deletion`.

    Returns:
        :class:`ConfidenceChange`.

    Example:
        >>> result = ke.metrics.confidence_change(model, x, maps, y)
        >>> result.average_drop, result.increase_in_confidence

    References:
        Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Generalized
        Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018.
    """
    inputs = as_inputs(model, x, maps)
    scorer = Scorer(model, activation, batch_size, jit_compile, target)
    units = scorer.units(inputs.columns, y)
    rows = np.arange(len(units))
    original = scorer(inputs.columns)[rows, units]
    replaced = {
        part.position: (part.values * part.spread(normalize_maps(part.maps))).astype(
            part.values.dtype
        )
        for part in inputs.parts
    }
    explained = scorer(inputs.with_parts(rows, replaced))[rows, units]
    drop = np.maximum(0.0, original - explained) / np.maximum(original, 1e-12)
    increase = original < explained
    return ConfidenceChange(
        float(100.0 * drop.mean()),
        float(100.0 * increase.mean()),
        original,
        explained,
        drop,
        increase,
        units,
    )


def average_drop(model, x, maps, y=None, **params) -> float:
    """Average Drop % (Chattopadhay et al., 2018); lower is better.

    ``100 / N * sum_i max(0, Y_i - O_i) / Y_i``; see :func:`confidence_change`
    for the definitions and parameters.

    Example:
        >>> ke.metrics.average_drop(model, x, maps, y)

    References:
        Chattopadhay et al., "Grad-CAM++", WACV 2018.
    """
    return confidence_change(model, x, maps, y, **params).average_drop


def increase_in_confidence(model, x, maps, y=None, **params) -> float:
    """Increase in Confidence % (Chattopadhay et al., 2018); higher is better.

    ``100 / N * sum_i 1[Y_i < O_i]``; see :func:`confidence_change`.

    Example:
        >>> ke.metrics.increase_in_confidence(model, x, maps, y)

    References:
        Chattopadhay et al., "Grad-CAM++", WACV 2018.
    """
    return confidence_change(model, x, maps, y, **params).increase_in_confidence
