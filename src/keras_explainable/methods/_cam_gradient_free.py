"""The CAMs that take no gradient: CAM (the classifier's weights) and Eigen-CAM (SVD).

Re-exported by :mod:`keras_explainable.methods.cams` (``ke.methods.cams.cam``, ...),
which also documents the shared CAM path they run on.
"""

from __future__ import annotations

from keras import ops

from .. import inspection
from .._axes import SPATIAL_AXIS
from ..targets import as_target
from ._cam_path import _class_activation_map
from ._common import is_default_target

# --------------------------------------------------------------------------- CAM


def _classifier_kernel(model, logits_layer):
    if logits_layer is None:
        if isinstance(model, inspection.ExposedModel):
            logits_layer = model.logits_tap.layer
            classifier = inspection.get_logits_layer(model.explained_model)
            if inspection.followed_to_units(model.explained_model, classifier) is logits_layer:
                logits_layer = classifier  # the default logits: e.g. the Flatten of a 1x1 conv
        else:
            logits_layer = inspection.get_logits_layer(model)
    elif not hasattr(logits_layer, "kernel"):
        logits_layer = inspection.get_nested_layer(model, logits_layer)
    if getattr(logits_layer, "kernel", None) is None:
        name = getattr(logits_layer, "name", logits_layer)
        raise ValueError(
            f"CAM weighs the activations with the classifier's kernel, but '{name}' "
            f"({type(logits_layer).__name__}) has none. Pass logits_layer= the Dense or 1x1 "
            "Conv layer after the global pooling (or expose it), or use ke.gradcam, which "
            "needs no classifier weights."
        )
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
    target=None,
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
        target: only the default (``None`` or ``ke.targets.classes()``): CAM's
            weights are the classifier's, which belong to the classes of the
            first output. Use ``gradcam`` for any other target.

    Returns:
        ``(scores, maps)``.

    Example:
        >>> scores, cams = ke.methods.cams.cam(model, x, np.array([3, 1]))

    References:
        Zhou et al. (2016). Learning Deep Features for Discriminative
        Localization. CVPR. arXiv:1512.04150.
    """

    if not is_default_target(as_target(target)):
        raise ValueError(
            f"CAM weighs the activations with the classifier's kernel, which scores the "
            f"classes of the first output; it cannot explain target={target!r}. Use "
            "ke.gradcam (the same map for a GAP -> Dense head) with that target."
        )

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
    target=None,
):
    """Eigen-CAM: the activations projected on their first principal direction.

    Per sample, the activations form an ``(h*w, K)`` matrix ``M``; with ``v``
    its first right singular vector (``keras.ops.svd``), ``map = M v`` reshaped
    to ``(h, w)``. The map ignores the explained unit (no gradient, no score):
    every unit gets the same map, ``(batch, *spatial, units)`` like the other
    methods; the scores are still the units' scores.

    Sign: a singular vector is only defined up to its sign, so ``v`` is
    oriented along the activations' mean: ``m . v >= 0`` with ``m`` the mean
    over positions of the (uncentred) rows of ``M``. Without ``center`` the
    map then sums to ``n m . v >= 0``: it is mostly positive where the
    activations are, which the default ``positive_normalize`` keeps. (For
    ReLU activations ``v`` is non-negative and so is the map; on signed
    activations such as a transformer's residual-stream tokens, orienting by
    ``sum_k v_k`` instead can leave the map all negative, i.e. blank once
    normalized.) With ``center``, positions whose activations lie further
    along the mean than average come out positive.

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
        mean = ops.mean(flat, axis=1)  # (batch, K): the activations' mean row
        if center:
            flat = flat - ops.expand_dims(mean, 1)
            activations = ops.reshape(flat, shape)
        _, _, right = ops.svd(flat, full_matrices=False)
        direction = right[:, 0, :]  # (batch, K)
        along = ops.sum(direction * ops.cast(mean, direction.dtype), axis=-1, keepdims=True)
        sign = ops.where(along < 0, -1.0, 1.0)
        direction = direction * ops.cast(sign, direction.dtype)
        return ops.repeat(ops.expand_dims(direction, -1), signal.units, axis=-1), activations

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False, target=target,
    )  # fmt: skip
