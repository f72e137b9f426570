"""Attention methods for vision transformers: attention rollout, transformer attribution.

Both read the attention probabilities ``A_l`` (``(batch, heads, T, T)``) of every
self-attention block ``l`` while the model runs (taps, see
:mod:`keras_explainable._attention`; the model is not changed), combine them
through the blocks into a ``T x T`` relevance matrix ``R``, and read the map off
one row of it: the class token's row (token 0) over the patch tokens, or, for a
model without prefix tokens, the mean row. Only that row is computed: it is
multiplied through the blocks from the left (``T^2`` per block and sample, not
the ``T^3`` of the full product). The map lies on the patch grid,
``(batch, gh, gw, units)``; the shortcuts resize it to the input like a CAM.

=========================  ====================================================
method                     per block, then ``R = I`` rolled through the blocks
=========================  ====================================================
``attention_rollout``      ``Â = fuse_heads(A)`` (mean, max or min; the lowest
                           ``discard_ratio`` share set to 0), ``Â + I`` with rows
                           renormalised, ``R = (Â + I) R``
``transformer_attribution``  ``Ā = mean_heads(relu(∇A ⊙ A))``, ``R = R + Ā R``
=========================  ====================================================

Rollout runs one forward pass and is class-agnostic (the same map for every
unit, like Eigen-CAM); transformer attribution runs one forward and one
backward pass (``∇A = d score / d A``) and is class-specific.

The prefix tokens (class, distillation, register tokens) and the grid are found
from the token count, the input size and the patch stride, as for the CAMs of a
token layer (:mod:`keras_explainable._token_grid`); ``token_grid=(gh, gw)`` and
``prefix_tokens=`` (or those of an exposed model) say it when the guess is wrong.
"""

from __future__ import annotations

from keras import ops

from .. import _attention, _token_grid, backend
from .._axes import SPATIAL_AXIS
from ._common import (
    as_indices,
    as_inputs,
    positive_axes,
    prepare_target,
    unit_selector,
    widen,
)
from ._tokens import Embedded as _Transformed  # a model whose taps pass through a function

_FUSIONS = {"mean": ops.mean, "max": ops.max, "min": ops.min}


def _record(model, inputs, indices, indices_axis, indices_batch_dims, target):
    """``(inputs, scores, probabilities, gradients, tokens)``: every block's ``A`` and ``∇A``."""
    inputs = as_inputs(inputs)
    runner, target = prepare_target(model, target)
    taps, positions = _attention.attention_taps(model)
    select = unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target)
    result = backend.value_and_gradients(runner, inputs, select, taps=taps, differentiate=positions)
    probabilities = [result.tap_values[p] for p in positions]
    tokens = _attention.check_probabilities(taps, positions, probabilities)
    grads = [widen(g) for g in result.tap_gradients]
    return inputs, result.scores, [widen(a) for a in probabilities], grads, tokens


def _record_fused(model, inputs, indices, indices_axis, indices_batch_dims, target, fusion):
    """``(inputs, scores, fused, tokens)``: every block's heads fused as the model runs.

    Each block's ``(batch, heads, T, T)`` probabilities are reduced to ``fusion``
    over the heads (``(batch, T, T)``) the moment they are computed, so that only
    the fused matrices stay alive until the read-out, not every block's full
    probabilities: on PyTorch, keeping those (7.4 MB per block for 16 ViT-Ti/16
    images) made the forward pass 1.22x ``predict``, against 1.03-1.07x fused.
    """
    inputs = as_inputs(inputs)
    runner, target = prepare_target(model, target)
    taps, positions = _attention.attention_taps(model)
    wanted = set(positions)
    fused, shapes = {}, {}

    def keep_fused(position, output):
        if position in wanted:
            shapes[position] = tuple(output.shape)
            if len(output.shape) == 4:  # other shapes: check_probabilities names them
                fused[position] = fusion(output, axis=1)
        return output

    outputs, values = backend.forward(_Transformed(runner, taps, keep_fused), inputs)
    for position in positions:
        if position not in shapes:
            raise ValueError(taps[position].absent)
    tokens = _attention.check_probabilities(taps, positions, [shapes[p] for p in positions])
    select = unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target)
    return inputs, select(outputs, values), [widen(fused[p]) for p in positions], tokens


def _layout(model, inputs, tokens, spatial_axis, token_grid, prefix_tokens):
    """Where the patch tokens lie among the ``tokens`` the attention layers attend over."""
    if token_grid is None and prefix_tokens is None:  # an exposure may say how the tokens lie
        token_grid = getattr(model, "token_grid", None)
        prefix_tokens = getattr(model, "prefix_tokens", None)
    token_grid, prefix_tokens = _token_grid.check_options(token_grid, prefix_tokens)
    axes = positive_axes(spatial_axis, len(inputs.shape))
    if len(axes) != 2:
        raise ValueError(
            f"The attention methods map tokens onto the patch grid of 2-D images; the inputs "
            f"have shape {tuple(inputs.shape)} with spatial axes {axes}. Explain 2-D images."
        )
    return _token_grid.token_layout(
        tokens,
        [inputs.shape[a] for a in axes],
        _token_grid.patch_strides(model),
        token_grid,
        prefix_tokens,
        name="the attention layers",
    )


def _read_out(layout, tokens, dtype):
    """The row vector ``v`` whose product ``v R`` is the map: ``(1, T)``.

    The class token's row (token 0) with prefix tokens, else the mean row.
    Only that row of ``R`` is ever needed, so the methods multiply it through
    the blocks from the left (``T^2`` per block) instead of forming the
    ``T x T`` product of the blocks (``T^3`` per block).
    """
    if layout.prefix:
        return ops.cast(ops.arange(tokens) == 0, dtype)[None]
    return ops.full((1, tokens), 1.0 / tokens, dtype=dtype)


def _check_options(head_fusion, discard_ratio):
    if head_fusion not in _FUSIONS:
        raise ValueError(
            f"head_fusion is one of {', '.join(repr(f) for f in _FUSIONS)} (how the heads' "
            f"attention is combined); got {head_fusion!r}."
        )
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)):
        raise TypeError(f"discard_ratio is a number in [0, 1); got {discard_ratio!r}.")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(
            f"discard_ratio is the share of the lowest attention weights set to 0 in each "
            f"block, in [0, 1); got {discard_ratio}."
        )


def _discard_lowest(fused, ratio):
    """``fused`` ``(batch, T, T)`` with the lowest ``ratio`` share of each sample's entries at 0."""
    tokens = fused.shape[-1]
    count = int(tokens * tokens * ratio)
    if count == 0:
        return fused
    flat = ops.reshape(fused, (-1, tokens * tokens))
    ranks = ops.argsort(ops.argsort(flat, axis=-1), axis=-1)  # 0 for the lowest entry
    flat = ops.where(ranks < count, ops.zeros_like(flat), flat)
    return ops.reshape(flat, (-1, tokens, tokens))


def attention_rollout(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    token_grid=None,
    prefix_tokens=None,
):
    """Attention rollout: the attention flow from the patches to the class token.

    Per block, the heads' probabilities are fused (``head_fusion``), the lowest
    ``discard_ratio`` share of the fused weights set to 0, the identity added
    (the residual connection) and the rows renormalised to sum to 1; the blocks'
    matrices are multiplied, last block on the left. The map is the class
    token's row over the patch tokens (the mean row without prefix tokens),
    the same for every unit: the method does not depend on the class.

    Args:
        model: a transformer whose attention layers are
            ``keras.layers.MultiHeadAttention`` (keras.layers, KerasHub's ViT,
            DeiT, DINOv2); an exposed model is explained through its own model.
        inputs: a batch of images ``(batch, H, W, channels)``.
        indices: units whose scores are returned, ``(batch, units)`` or
            ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of the inputs.
        target: what the returned scores are (:mod:`ke.targets`); the maps do
            not depend on it.
        head_fusion: ``"mean"`` (the paper's), ``"max"`` or ``"min"`` over heads.
        discard_ratio: the share of the lowest fused weights of each block set
            to 0 before the identity is added (0: none; the paper keeps all).
        token_grid: ``(gh, gw)``, the patch grid; ``None`` to guess it.
        prefix_tokens: the tokens in front of the patches; ``None`` to guess it.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, gh, gw, units)``.

    Example:
        >>> scores, maps = ke.attention_rollout(vit, x, y)  # resized to x, normalised
        >>> scores, raw = ke.methods.attention.attention_rollout(vit, x, y, head_fusion="max")

    References:
        Abnar & Zuidema (2020). Quantifying Attention Flow in Transformers.
        ACL. arXiv:2005.00928.
    """
    _check_options(head_fusion, discard_ratio)
    inputs, scores, fused_blocks, tokens = _record_fused(
        model, inputs, indices, indices_axis, indices_batch_dims, target, _FUSIONS[head_fusion]
    )
    layout = _layout(model, inputs, tokens, spatial_axis, token_grid, prefix_tokens)
    dtype = fused_blocks[0].dtype
    # R = F_L ... F_1 with F = D^-1 (Â + I), D the row sums of Â + I; its read-out
    # row v R, multiplied from the left: v F = u Â + u with u = v D^-1, (batch, 1, T);
    # neither Â + I nor F is formed (fewer passes over T x T matrices where the
    # steps run eagerly: TensorFlow, PyTorch).
    row = _read_out(layout, tokens, dtype)[None]  # (1, 1, T): the batch broadcasts
    for fused in reversed(fused_blocks):
        fused = _discard_lowest(fused, discard_ratio)
        scaled = row / (ops.sum(fused, axis=-1) + 1.0)[:, None, :]
        row = ops.matmul(scaled, fused) + scaled
    maps = layout.to_grid(ops.transpose(row, (0, 2, 1)))  # (batch, T, 1) -> the grid
    units = scores.shape[-1]
    return scores, ops.repeat(maps, units, axis=-1)


def transformer_attribution(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    target=None,
    token_grid=None,
    prefix_tokens=None,
):
    """Transformer attribution: attention weighted by its gradient, rolled through the blocks.

    With ``∇A = d score / d A`` (the unit's score w.r.t. the block's attention
    probabilities, through the rest of the model), each block gives
    ``Ā = mean_heads(relu(∇A ⊙ A))``, and ``R = I`` is updated block by block as
    ``R = R + Ā R``. The map is the class token's row of ``R`` over the patch
    tokens (the mean row without prefix tokens), one per unit: the method is
    class-specific. One forward and one backward pass per batch.

    Args:
        model: a transformer whose attention layers are
            ``keras.layers.MultiHeadAttention`` (keras.layers, KerasHub's ViT,
            DeiT, DINOv2); an exposed model is explained through its own model.
        inputs: a batch of images ``(batch, H, W, channels)``.
        indices: units to explain, ``(batch, units)`` or ``(batch,)``; ``None`` for all.
        indices_axis: the axis of the outputs holding the units.
        indices_batch_dims: ``-1`` (a row of indices per sample) or ``0`` (shared).
        spatial_axis: the spatial axes of the inputs.
        target: what is explained, ``target(outputs, units) -> (batch, units)``
            (:mod:`ke.targets`); ``None``: the first output's units (the logits).
        token_grid: ``(gh, gw)``, the patch grid; ``None`` to guess it.
        prefix_tokens: the tokens in front of the patches; ``None`` to guess it.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, gh, gw, units)``.

    Example:
        >>> scores, maps = ke.transformer_attribution(vit, x, y)

    References:
        Chefer, Gur & Wolf (2021). Generic Attention-model Explainability for
        Interpreting Bi-Modal and Encoder-Decoder Transformers. ICCV.
        arXiv:2103.15679 (the gradient-weighted rule for self-attention), after
        Transformer Interpretability Beyond Attention Visualization. CVPR.
        arXiv:2012.09838.
    """
    inputs, scores, probabilities, grads, tokens = _record(
        model, inputs, indices, indices_axis, indices_batch_dims, target
    )
    layout = _layout(model, inputs, tokens, spatial_axis, token_grid, prefix_tokens)
    # R = (I + Ā_L) ... (I + Ā_1); its read-out row v R, multiplied from the left:
    # (batch, units, 1, T), v (I + Ā) = v + v Ā
    row = _read_out(layout, tokens, probabilities[0].dtype)[None, None]  # (1, 1, 1, T)
    for attention, gradient in reversed(list(zip(probabilities, grads))):
        # (batch, heads, T, T, units) -> mean over heads -> (batch, units, T, T)
        weighted = ops.mean(ops.relu(gradient * ops.expand_dims(attention, -1)), axis=1)
        weighted = ops.transpose(weighted, (0, 3, 1, 2))
        row = row + ops.matmul(row, weighted)
    maps = layout.to_grid(ops.transpose(row[:, :, 0], (0, 2, 1)))  # (batch, T, units)
    return scores, maps
