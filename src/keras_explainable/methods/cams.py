"""Class activation map (CAM) methods.

Every method here shares one path (:func:`_class_activation_map`): one forward
pass records the activations ``A`` of an intermediate layer (``(batch,
*spatial, channels)``) and, for the gradient-based methods, the gradient ``g``
of every explained unit w.r.t. them (``(batch, *spatial, channels, units)``).
A method is then only its **weighting rule**: it returns channel weights
``w`` (``(batch, channels, units)``, the map is ``sum_k w_k A^k``) or, for the
per-position methods (LayerCAM, HiResCAM), position-wise weights
(``(batch, *spatial, channels, units)``, the map is ``sum_k w_ijk A_ijk``).
Every method returns ``(scores, maps)``: ``(batch, units)`` and
``(batch, *activation_spatial, units)``; the ReLU of the papers and the
resizing to the input are the ``postprocessing`` / ``resizing`` of
:func:`ke.explain` (``ke.filters.positive_normalize`` and ``True`` in the
shortcuts).

=================  ================================================================
method             channel weight of unit ``u`` (``g = d score_u / d A``)
=================  ================================================================
``cam``            the classifier's weight ``W[k, u]``
``gradcam``        ``mean_ij g_ij^k``
``gradcampp``      ``sum_ij alpha_ij^k relu(g_ij^k)`` (closed-form ``alpha``)
``xgradcam``       ``sum_ij (A_ij^k / sum_ab A_ab^k) g_ij^k``
``layercam``       per position: ``relu(g_ij^k)``
``hirescam``       per position: ``g_ij^k``
``eigencam``       the first right singular vector of ``A`` (``(h*w, K)``)
``scorecam``       softmax over channels of the unit's score on ``x * mask_k``
``ablationcam``    ``(y - y_k) / y``, ``y_k`` the score with channel ``k`` zeroed
=================  ================================================================

The perturbation methods (``scorecam``, ``ablationcam``) run their ``K``
extra forward passes in chunks of ``chunk_size`` channels per sample, inside a
``keras.ops.fori_loop``: the compiled step holds one copy of the model
whatever ``K`` is, shapes stay static (``K`` is padded to a multiple of the
chunk), and nothing records gradients (``backend.forward``).
"""

from __future__ import annotations

from keras import ops

from .._axes import SPATIAL_AXIS
from ._cam_gradient_free import _classifier_kernel, cam, eigencam  # noqa: F401
from ._cam_path import (  # noqa: F401  (re-exported: the shared CAM path)
    _class_activation_map,
    _safe_divide,
    _Signal,
    _single_activation,
    _spatial_activation_axes,
    combine,
)
from ._cam_perturbation import ablationcam, scorecam

# --------------------------------------------------------------------------- gradient rules


def _gradcam_weights(signal):
    return ops.mean(signal.gradients, axis=signal.axes)


def _gradcampp_weights(signal):
    g = signal.gradients
    g2 = g * g
    # sum_ab A_ab^k, broadcast against g: (batch, 1.., K, 1)
    total = ops.expand_dims(ops.sum(signal.activations, axis=signal.axes, keepdims=True), -1)
    alpha = _safe_divide(g2, 2.0 * g2 + total * g2 * g)
    return ops.sum(alpha * ops.relu(g), axis=signal.axes)


def _xgradcam_weights(signal):
    activations = signal.activations
    total = ops.sum(activations, axis=signal.axes, keepdims=True)
    share = _safe_divide(activations, total)
    return ops.sum(ops.expand_dims(share, -1) * signal.gradients, axis=signal.axes)


def _layercam_weights(signal):
    return ops.relu(signal.gradients)


def _hirescam_weights(signal):
    return signal.gradients


_ARGS_DOC = """model: an exposed model (:func:`ke.inspection.expose`), a model with
            outputs ``[logits, activations]``, or any model (the input of its last
            global pooling / ``Flatten`` layer is explained).
        inputs: a batch ``(batch, *spatial, channels)`` (numpy or backend tensor).
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes (of the inputs and of the activations).
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units (the logits)."""


def gradcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
):
    """Grad-CAM: channels weighted by the spatial mean of the unit's gradient.

    ``w_k = mean_ij d score / d A_ij^k`` and ``map = sum_k w_k A^k`` (the ReLU
    of the paper is the default ``postprocessing`` of :func:`ke.gradcam`).

    Args:
        model: an exposed model (:func:`ke.inspection.expose`) or any model, in
            which case the default signal of ``expose`` is used.
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes (of the inputs and of the activations).
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units (the logits).

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> model = ke.inspection.expose(model)
        >>> scores, cams = ke.methods.cams.gradcam(model, x, np.array([[16, 32]]))

    References:
        Selvaraju et al. (2017). Grad-CAM: Visual Explanations from Deep
        Networks via Gradient-based Localization. ICCV. arXiv:1610.02391.
    """
    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _gradcam_weights,
        target=target,
    )  # fmt: skip


def gradcampp(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
):
    """Grad-CAM++: channels weighted by pixel-wise weighted positive gradients.

    With ``g = d score / d A`` (the score is the unit's logit) and
    ``S_k = sum_ab A_ab^k``::

        alpha_ij^k = g_ij^k ** 2 / (2 (g_ij^k) ** 2 + S_k (g_ij^k) ** 3)
        w_k        = sum_ij alpha_ij^k relu(g_ij^k)
        map        = sum_k w_k A^k

    ``alpha`` is 0 where its denominator is 0 (where ``g = 0``).

    The paper explains ``Y = exp(score)`` so that the higher derivatives have a
    closed form: ``dY/dA = e^S g`` and, for a network that is piecewise linear
    after ``A``, ``d2Y/dA2 = e^S g^2`` and ``d3Y/dA3 = e^S g^3``. The factor
    ``e^S`` cancels in ``alpha``, and in ``w_k`` it is one positive factor per
    (sample, unit) map, ``relu(e^S g) = e^S relu(g)``. This function returns
    the map without it: the paper's map equals ours times ``exp(score)``, the
    same after any normalization, and nothing here computes an exponential, so
    logits of 500 (where ``exp`` overflows float32, as the original library
    did) give finite maps.

    Args:
        {args}

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.gradcampp(model, x, np.array([3, 1]))

    References:
        Chattopadhay, Sarkar, Howlader & Balasubramanian (2018). Grad-CAM++:
        Generalized Gradient-based Visual Explanations for Deep Convolutional
        Networks. WACV. arXiv:1710.11063.
    """
    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _gradcampp_weights,
        target=target,
    )  # fmt: skip


def xgradcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
):
    """XGrad-CAM: gradients averaged with the channel's own activations as weights.

    ``w_k = sum_ij (A_ij^k / sum_ab A_ab^k) g_ij^k`` and ``map = sum_k w_k A^k``
    (a channel whose activations sum to 0 gets ``w_k = 0``). With a
    GlobalAveragePooling -> Dense head the gradient is spatially constant and
    XGrad-CAM equals Grad-CAM.

    Args:
        {args}

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.xgradcam(model, x, np.array([3, 1]))

    References:
        Fu, Hu, Dong, Guo, Gao & Li (2020). Axiom-based Grad-CAM: Towards
        Accurate Visualization and Explanation of CNNs. BMVC. arXiv:2008.02312.
    """
    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _xgradcam_weights,
        target=target,
    )  # fmt: skip


def layercam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
):
    """LayerCAM: every position weighted by its own positive gradient.

    ``map_ij = sum_k relu(g_ij^k) A_ij^k``. The paper also fuses the maps of
    several layers (scaling shallow ones with ``tanh``); this function explains
    one layer, so run it per layer and fuse the results if you need that.

    Args:
        {args}

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.layercam(model, x, np.array([3, 1]))

    References:
        Jiang, Zhang, Hou, Cheng & Wei (2021). LayerCAM: Exploring Hierarchical
        Class Activation Maps for Localization. IEEE Transactions on Image
        Processing 30, 5875-5888.
    """
    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _layercam_weights,
        target=target,
    )  # fmt: skip


def hirescam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
):
    """HiResCAM: the gradient times the activation, summed over channels.

    ``map_ij = sum_k g_ij^k A_ij^k``: unlike Grad-CAM the gradient is not
    averaged over positions first, so the map shows where the activations
    actually raised the score. With a GlobalAveragePooling -> Dense head
    (``g_ij^k = W[k, u] / (h w)``) HiResCAM equals Grad-CAM, and CAM
    (``sum_k W[k, u] A^k``) equals HiResCAM times ``h * w``.

    Args:
        {args}

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.hirescam(model, x, np.array([3, 1]))

    References:
        Draelos & Carin (2020). Use HiResCAM instead of Grad-CAM for faithful
        explanations of convolutional neural networks. arXiv:2011.08891.
    """
    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _hirescam_weights,
        target=target,
    )  # fmt: skip


for _method in (gradcampp, xgradcam, layercam, hirescam, eigencam, scorecam, ablationcam):
    if _method.__doc__:  # None under python -OO
        _method.__doc__ = _method.__doc__.replace("{args}", _ARGS_DOC)
del _method

__all__ = [
    "ablationcam",
    "cam",
    "combine",
    "eigencam",
    "gradcam",
    "gradcampp",
    "hirescam",
    "layercam",
    "scorecam",
    "xgradcam",
]
