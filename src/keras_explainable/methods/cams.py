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

from collections.abc import Callable
from typing import Any, NamedTuple

from keras import ops

from .. import backend, inspection
from .._taps import tapped
from ..filters import SPATIAL_AXIS
from ._common import as_indices, as_inputs, positive_axes, unit_selector

# --------------------------------------------------------------------------- shared path


def _single_activation(model, inputs):
    taps = inspection.activation_taps(model, input_shape=tuple(inputs.shape))
    if len(taps) != 1:
        raise ValueError(
            f"CAM methods explain one intermediate signal; the model exposes {len(taps)} "
            f"({', '.join(t.name for t in taps)}). Expose a single one."
        )
    return taps


def _spatial_activation_axes(activations, spatial_axis):
    rank = len(activations.shape)
    if rank < 3:
        raise ValueError(
            f"The explained activation has shape {tuple(activations.shape)}: it has no spatial "
            "axes. Expose a convolutional (spatial) layer instead."
        )
    return positive_axes(spatial_axis, rank)


class _Signal(NamedTuple):
    """What a weighting rule may look at (all tensors hold one batch)."""

    model: Any
    inputs: Any  # (batch, *spatial, channels)
    taps: tuple  # the single tap whose output is ``activations``
    scores: Any  # (batch, units): the explained units' scores on ``inputs``
    activations: Any  # (batch, *activation_spatial, K)
    gradients: Any  # (batch, *activation_spatial, K, units), or None
    axes: tuple  # the spatial axes of ``activations`` (positive)
    spatial_axis: Any  # as the caller gave it
    indices: Any
    indices_axis: int
    indices_batch_dims: int

    @property
    def units(self) -> int:
        return int(self.scores.shape[-1])


def _class_activation_map(
    model,
    inputs,
    indices,
    indices_axis,
    indices_batch_dims,
    spatial_axis,
    weigh: Callable[[_Signal], Any],
    gradients: bool = True,
):
    """The one CAM path: record ``A`` (and ``g``), weigh, combine.

    ``weigh(signal)`` returns the weights, or ``(weights, activations)`` when
    the map combines other activations than the recorded ones (a subset of
    channels, centred activations).
    """
    inputs = as_inputs(inputs)
    indices = as_indices(indices)
    taps = _single_activation(model, inputs)
    select = unit_selector(indices, indices_axis, indices_batch_dims)
    if gradients:
        result = backend.value_and_gradients(model, inputs, select, taps=taps, differentiate=(0,))
        scores, activations, grads = result.scores, result.tap_values[0], result.tap_gradients[0]
    else:
        outputs, values = backend.forward(model, inputs, taps=taps)
        scores, activations, grads = select(outputs, values), values[0], None
    axes = _spatial_activation_axes(activations, spatial_axis)
    signal = _Signal(
        model, inputs, tuple(taps), scores, activations, grads, axes, spatial_axis,
        indices, indices_axis, indices_batch_dims,
    )  # fmt: skip
    weights = weigh(signal)
    if isinstance(weights, tuple):
        weights, activations = weights
    return scores, combine(activations, weights)


def combine(activations, weights):
    """Weighted sum of the channels of ``activations``, one map per unit.

    Args:
        activations: ``(batch, *spatial, channels)``.
        weights: channel weights ``(batch, channels, units)``, or position-wise
            weights ``(batch, *spatial, channels, units)``.

    Returns:
        ``sum_k weights[..., k, u] * activations[..., k]``, shaped
        ``(batch, *spatial, units)``.
    """
    weights = ops.cast(weights, activations.dtype)
    if len(weights.shape) == len(activations.shape) + 1:  # position-wise
        return ops.sum(ops.expand_dims(activations, -1) * weights, axis=-2)
    shape = ops.shape(activations)
    flat = ops.reshape(activations, (shape[0], -1, shape[-1]))
    maps = ops.matmul(flat, weights)
    return ops.reshape(maps, tuple(shape[:-1]) + (ops.shape(weights)[-1],))


def _safe_divide(numerator, denominator, otherwise=0.0):
    """``numerator / denominator`` where ``denominator != 0``, else ``otherwise``."""
    nonzero = ops.not_equal(denominator, 0)
    quotient = numerator / ops.where(nonzero, denominator, ops.ones_like(denominator))
    return ops.where(nonzero, quotient, otherwise)


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
        spatial_axis: the spatial axes (of the inputs and of the activations)."""


def gradcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
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
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _gradcam_weights
    )


def gradcampp(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
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
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _gradcampp_weights
    )


def xgradcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
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
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _xgradcam_weights
    )


def layercam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
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
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _layercam_weights
    )


def hirescam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
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
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, _hirescam_weights
    )


# --------------------------------------------------------------------------- CAM


def _classifier_kernel(model, logits_layer):
    if logits_layer is None:
        if isinstance(model, inspection.ExposedModel):
            logits_layer = model.logits_tap.layer
        else:
            logits_layer = inspection.get_logits_layer(model)
    elif not hasattr(logits_layer, "kernel"):
        logits_layer = inspection.get_nested_layer(model, logits_layer)
    kernel = ops.convert_to_tensor(logits_layer.kernel)
    if len(kernel.shape) != 2:
        if any(d != 1 for d in kernel.shape[:-2]):
            raise ValueError(
                f"CAM needs a Dense or 1x1-convolution classifier; '{logits_layer.name}' has "
                f"a kernel of shape {tuple(kernel.shape)}."
            )
        kernel = ops.reshape(kernel, tuple(kernel.shape[-2:]))
    return kernel  # (channels, classes)


def cam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    logits_layer=None,
):
    """CAM: channels weighted by the classifier's weights for the unit.

    Valid for architectures ``activations -> global average pooling ->
    Dense/1x1-conv classifier``: ``map_u = sum_k W[k, u] A^k``.

    Args:
        model: an exposed model, or any model (default exposure).
        inputs: a batch ``(batch, *spatial, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes.
        logits_layer: the classifier layer (or its name); defaults to the
            exposed logits layer, or the last layer with a kernel.

    Returns:
        ``(scores, maps)``.

    Example:
        >>> scores, cams = ke.methods.cams.cam(model, x, np.array([3, 1]))

    References:
        Zhou et al. (2016). Learning Deep Features for Discriminative
        Localization. CVPR. arXiv:1512.04150.
    """

    def weigh(signal):
        activations = signal.activations
        kernel = _classifier_kernel(model, logits_layer)
        if kernel.shape[0] != activations.shape[-1]:
            raise ValueError(
                f"The classifier kernel has {kernel.shape[0]} input channels but the "
                f"activation has {activations.shape[-1]}; CAM needs activations -> GAP -> "
                "classifier."
            )
        batch = ops.shape(activations)[0]
        chosen = signal.indices
        if chosen is None:
            return ops.broadcast_to(kernel[None], (batch,) + tuple(kernel.shape))
        if indices_batch_dims == 0:
            chosen = ops.broadcast_to(chosen[None], (batch,) + tuple(chosen.shape))
        elif len(chosen.shape) == 1:
            chosen = chosen[:, None]
        return ops.transpose(ops.take(kernel, chosen, axis=1), (1, 0, 2))

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False,
    )  # fmt: skip


# --------------------------------------------------------------------------- Eigen-CAM


def eigencam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    center: bool = False,
):
    """Eigen-CAM: the activations projected on their first principal direction.

    Per sample, the activations form an ``(h*w, K)`` matrix ``M``; with ``v``
    its first right singular vector (``keras.ops.svd``), ``map = M v`` reshaped
    to ``(h, w)``. The map ignores the explained unit (no gradient, no score):
    every unit gets the same map, ``(batch, *spatial, units)`` like the other
    methods; the scores are still the units' scores.

    Sign: a singular vector is only defined up to its sign, so ``v`` is
    oriented to make ``sum_k v_k >= 0``, which is the same as making the map
    correlate non-negatively with the channel sum ``sum_k A^k`` (for ReLU
    activations and ``center=False``, ``v`` is then non-negative and so is the
    map).

    Args:
        {args}
        center: subtract each channel's spatial mean before the SVD (a PCA, as
            in pytorch-grad-cam's ``EigenCAM``); the paper (default) factorizes
            the activations as they are.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.eigencam(model, x, np.array([3, 1]))

    References:
        Muhammad & Yeasin (2020). Eigen-CAM: Class Activation Map using
        Principal Components. IJCNN. arXiv:2008.00299.
    """

    def weigh(signal):
        activations = signal.activations
        shape = ops.shape(activations)
        flat = ops.reshape(activations, (shape[0], -1, shape[-1]))  # (batch, h*w, K)
        if center:
            flat = flat - ops.mean(flat, axis=1, keepdims=True)
            activations = ops.reshape(flat, shape)
        _, _, right = ops.svd(flat, full_matrices=False)
        direction = right[:, 0, :]  # (batch, K)
        sign = ops.where(ops.sum(direction, axis=-1, keepdims=True) < 0, -1.0, 1.0)
        direction = direction * ops.cast(sign, direction.dtype)
        return ops.repeat(ops.expand_dims(direction, -1), signal.units, axis=-1), activations

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False,
    )  # fmt: skip


# --------------------------------------------------------------------------- perturbation


def _check_count(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def _select_repeated(signal, outputs, repeats, transform=None):
    """The explained units of outputs computed on ``repeats`` copies of each sample.

    ``outputs`` come from a batch ordered sample-major (``batch * repeats``
    rows); the result is ``(batch, repeats, units)``.
    """
    logits = inspection.first_output(outputs)
    if transform is not None:
        logits = transform(logits)
    chosen = signal.indices
    if chosen is not None and signal.indices_batch_dims != 0:
        chosen = ops.repeat(chosen, repeats, axis=0)
    units = inspection.gather_units(logits, chosen, signal.indices_axis, signal.indices_batch_dims)
    return ops.reshape(units, (-1, repeats, signal.units))


def _in_chunks(run, num_chunks: int, chunk: int, like):
    """Stack ``run(i)`` (each ``(batch, chunk, units)``) for ``i < num_chunks``.

    The chunks run inside ``keras.ops.fori_loop`` (one traced copy of the
    model, static shapes); the result is ``(batch, num_chunks * chunk, units)``.
    """
    if num_chunks == 1:
        return run(0)
    buffer = ops.expand_dims(ops.expand_dims(ops.zeros_like(like), 0), 2)  # (1, batch, 1, units)
    buffer = buffer + ops.zeros((num_chunks, 1, chunk, 1), dtype=like.dtype)
    slots = ops.reshape(ops.arange(num_chunks, dtype="int32"), (num_chunks, 1, 1, 1))

    def body(i, stacked):
        values = ops.cast(run(i), stacked.dtype)
        return ops.where(ops.equal(slots, i), ops.expand_dims(values, 0), stacked)

    stacked = ops.fori_loop(0, num_chunks, body, buffer)
    stacked = ops.transpose(stacked, (1, 0, 2, 3))
    return ops.reshape(stacked, (-1, num_chunks * chunk, stacked.shape[-1]))


def _chunking(channels: int, chunk_size: int):
    chunk = min(chunk_size, channels)
    num_chunks = -(-channels // chunk)
    return chunk, num_chunks


def _channel_chunks(activations, chunk, num_chunks):
    """``(batch, *s, K)`` -> ``(num_chunks, batch, *s, chunk)``, K zero-padded."""
    channels = activations.shape[-1]
    rank = len(activations.shape)
    padding = num_chunks * chunk - channels
    if padding:
        activations = ops.pad(activations, [[0, 0]] * (rank - 1) + [[0, padding]])
    shape = ops.shape(activations)
    split = ops.reshape(activations, tuple(shape[:-1]) + (num_chunks, chunk))
    return ops.transpose(split, (rank - 1,) + tuple(range(rank - 1)) + (rank,))


def _masked_softmax(values, valid, axis):
    """Softmax of ``values`` over ``axis`` among the ``valid`` entries (others: 0)."""
    lowest = ops.min(values, axis=axis, keepdims=True)
    peak = ops.max(ops.where(valid, values, lowest), axis=axis, keepdims=True)
    exponentials = ops.where(valid, ops.exp(values - peak), ops.zeros_like(values))
    total = ops.sum(exponentials, axis=axis, keepdims=True)
    return _safe_divide(exponentials, total)


def _top_variance_channels(activations, axes, top_n):
    """The ``top_n`` channels of highest spatial variance, per sample."""
    channels = activations.shape[-1]
    if top_n > channels:
        raise ValueError(
            f"top_n={top_n} exceeds the {channels} channels of the explained activation; "
            f"pass top_n <= {channels} (or None for every channel)."
        )
    variance = ops.var(activations, axis=axes)  # (batch, K)
    _, chosen = ops.top_k(variance, top_n, sorted=True)
    rank = len(activations.shape)
    chosen = ops.reshape(chosen, (-1,) + (1,) * (rank - 2) + (top_n,))
    chosen = ops.broadcast_to(chosen, tuple(ops.shape(activations)[:-1]) + (top_n,))
    return ops.take_along_axis(activations, chosen, axis=-1)


_SOFTMAX_MODES = ("channels", "classes", None)


def scorecam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    chunk_size: int = 8,
    top_n: int | None = None,
    softmax: str | None = "channels",
):
    """Score-CAM: channels weighted by the score of the input masked with them.

    For every channel ``k`` of the activations ``A`` (per sample):

    1. ``H_k``: ``A^k`` upsampled (bilinear, half-pixel centres, like
       ``keras.ops.image.resize``) to the input's spatial size, then min-max
       normalized to ``[0, 1]``;
    2. ``s_k``: the explained unit's score (the model's first output, e.g. its
       logit) on the masked input ``x * H_k`` (every input channel masked);
    3. the channel weight, by ``softmax``:

       - ``"channels"`` (default): ``w = softmax_k(s_k - s_b)`` over the
         channels, ``s_b`` the score of the baseline. This is the paper's
         "increase of confidence" followed by a softmax over channels, as in
         pytorch-grad-cam's ``ScoreCAM``. Since ``s_b`` is the same for every
         channel it cancels in the softmax, so the baseline is never run and
         its choice does not matter.
       - ``"classes"``: ``w_k = softmax(logits(x * H_k))[u]``, the unit's
         probability among the outputs on the masked input, without a baseline
         (the official code, haofanwang/Score-CAM). Meant for logit outputs.
       - ``None``: ``w_k = s_k - s_b``, the raw increase over the baseline
         ``x_b = 0`` (an all-zero input, one extra forward pass).
    4. ``map = sum_k w_k A^k`` at the activation's resolution (bilinear
       upsampling is linear, so this is the paper's map before resizing).

    A channel that is constant over space (e.g. a dead ReLU channel) has no
    mask: it gets ``w_k = 0`` and is left out of the softmax, like the official
    code skips it.

    The ``K`` masked inputs of each sample are evaluated ``chunk_size`` at a
    time: each forward pass runs ``batch * chunk_size`` inputs, and the
    ``ceil(K / chunk_size)`` passes run in a ``keras.ops.fori_loop`` (``K``
    padded to a multiple of the chunk; no gradient is recorded).

    Faster Score-CAM: ``top_n`` keeps, per sample, only the ``top_n`` channels
    of highest spatial variance (the criterion of Faster Score-CAM,
    tabayashi0117/Score-CAM); the others get no mask and no weight, so the
    cost drops to ``top_n`` forward passes. ``top_n = K`` gives Score-CAM.

    Args:
        {args}
        chunk_size: masked inputs per sample in one forward pass; lower it if
            memory runs short (each pass holds ``batch * chunk_size`` inputs).
        top_n: ``None`` (every channel), or the number of channels to keep
            (Faster Score-CAM).
        softmax: ``"channels"``, ``"classes"`` or ``None``, see above.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.scorecam(model, x, np.array([3, 1]), chunk_size=16)

    References:
        Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020). Score-CAM:
        Score-Weighted Visual Explanations for Convolutional Neural Networks.
        CVPR Workshops. arXiv:1910.01279.
    """
    _check_count("chunk_size", chunk_size)
    _check_count("top_n", top_n, allow_none=True)
    if softmax not in _SOFTMAX_MODES:
        raise ValueError(f"softmax must be one of {_SOFTMAX_MODES}; got {softmax!r}.")
    from ..resizing import resize  # resizing imports this package: import when used

    def weigh(signal):
        activations = signal.activations
        if top_n is not None:
            activations = _top_variance_channels(activations, signal.axes, top_n)
        inputs = signal.inputs
        if len(inputs.shape) != len(activations.shape):
            raise ValueError(
                f"Score-CAM masks the inputs {tuple(inputs.shape)} with the activations "
                f"{tuple(activations.shape)}: they need the same number of spatial axes."
            )
        input_axes = positive_axes(signal.spatial_axis, len(inputs.shape))
        size = [inputs.shape[a] for a in input_axes]
        channels = activations.shape[-1]
        chunk, num_chunks = _chunking(channels, chunk_size)
        chunks = _channel_chunks(activations, chunk, num_chunks)
        axes = signal.axes
        classes = ops.softmax if softmax == "classes" else None

        def run(i):
            block = ops.take(chunks, i, axis=0)  # (batch, *s, chunk)
            up = resize(block, size, signal.spatial_axis)  # (batch, *S, chunk)
            low = ops.min(up, axis=axes, keepdims=True)
            high = ops.max(up, axis=axes, keepdims=True)
            masks = _safe_divide(up - low, high - low)
            masks = ops.cast(ops.moveaxis(masks, -1, 1), inputs.dtype)  # (batch, chunk, *S)
            masked = ops.expand_dims(inputs, 1) * ops.expand_dims(masks, -1)
            masked = ops.reshape(masked, (-1,) + tuple(inputs.shape[1:]))
            outputs, _ = backend.forward(signal.model, masked)
            return _select_repeated(signal, outputs, chunk, classes)

        scores = _in_chunks(run, num_chunks, chunk, signal.scores)[:, :channels]
        spread = ops.max(activations, axis=axes) - ops.min(activations, axis=axes)
        valid = ops.expand_dims(spread > 0, -1)  # (batch, K, 1)
        if softmax == "channels":
            weights = _masked_softmax(scores, valid, axis=1)
        else:
            if softmax is None:
                outputs, _ = backend.forward(signal.model, ops.zeros_like(inputs))
                baseline = _select_repeated(signal, outputs, 1)  # (batch, 1, units)
                scores = scores - baseline
            weights = ops.where(valid, scores, ops.zeros_like(scores))
        return weights, activations

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False,
    )  # fmt: skip


def ablationcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    chunk_size: int = 8,
):
    """Ablation-CAM: channels weighted by the score lost when they are removed.

    ``w_k = (y - y_k) / y`` with ``y`` the unit's score and ``y_k`` its score
    when channel ``k`` of the explained activation is set to zero; ``map =
    sum_k w_k A^k``. Where ``y`` is exactly 0 the drop ``y - y_k`` is kept
    undivided. (Note the division flips the sign of every weight when
    ``y < 0``, as in the paper's formula.)

    How the ablated scores are computed: the whole model runs again on copies
    of the input while the explained layer's output is replaced by the ablated
    activations (a tap, see ``ke.inspection``). So the layers after the tap see
    the ablated channel and everything else sees the original values: a skip
    connection crossing the explained layer carries its original value, which
    is what zeroing the channel inside the model means. The price is that the
    layers before the tap run again too (``K`` full forward passes instead of
    ``K`` passes of the model's head). The ``K`` ablations of each sample run
    ``chunk_size`` at a time in a ``keras.ops.fori_loop``, without gradients.

    Args:
        {args}
        chunk_size: ablations per sample in one forward pass (each pass runs
            ``batch * chunk_size`` inputs); lower it if memory runs short.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.ablationcam(model, x, np.array([3, 1]))

    References:
        Desai & Ramaswamy (2020). Ablation-CAM: Visual Explanations for Deep
        Convolutional Network via Gradient-free Localization. WACV, 983-991.
    """
    _check_count("chunk_size", chunk_size)

    def weigh(signal):
        activations = signal.activations
        channels = activations.shape[-1]
        rank = len(activations.shape)
        chunk, num_chunks = _chunking(channels, chunk_size)
        copies = ops.repeat(signal.inputs, chunk, axis=0)  # sample-major
        every = ops.expand_dims(ops.arange(channels, dtype="int32"), 0)  # (1, K)

        def run(i):
            ablated_ids = i * chunk + ops.arange(chunk, dtype="int32")  # (chunk,)
            keep = ops.not_equal(every, ops.expand_dims(ablated_ids, -1))  # (chunk, K)
            keep = ops.reshape(
                ops.cast(keep, activations.dtype), (1, chunk) + (1,) * (rank - 2) + (channels,)
            )
            ablated = ops.expand_dims(activations, 1) * keep  # (batch, chunk, *s, K)
            ablated = ops.reshape(ablated, (-1,) + tuple(activations.shape[1:]))

            def replace(position, value):
                del position
                return ops.cast(ablated, value.dtype)

            with tapped(signal.taps, replace):
                outputs, _ = backend.forward(signal.model, copies)
            return _select_repeated(signal, outputs, chunk)

        ablated_scores = _in_chunks(run, num_chunks, chunk, signal.scores)[:, :channels]
        scores = ops.expand_dims(signal.scores, 1)
        drop = scores - ops.cast(ablated_scores, scores.dtype)
        return _safe_divide(drop, scores, drop)

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False,
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
