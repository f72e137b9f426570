"""The attention layers of a transformer, and the taps that record their probabilities.

The attention methods (:mod:`keras_explainable.methods.attention`) read the
attention probabilities ``A`` (``(batch, heads, tokens, tokens)``) of every
self-attention layer while the model runs, without changing it. For a
``keras.layers.MultiHeadAttention`` (also what KerasHub's ViT, DeiT and DINOv2
blocks use) that takes two taps per layer, both context-local like every tap
(:mod:`._taps`):

- one on the attention layer, making its call with ``return_attention_scores=True``
  (a layer without dropout otherwise runs the fused ``ops.dot_product_attention``,
  where no probabilities exist) and handing the rest of the model only the
  attention output, as before;
- one on its softmax sub-layer, which records ``A`` and, for the gradient
  methods, returns ``A + delta`` so that the backends can differentiate with
  respect to ``A`` (the path from ``A`` to the output is the layer's own).

The layers are listed in the model's own order (topological for functional
models, the order the blocks were built in for layers holding blocks), which is
the order the blocks run in.
"""

from __future__ import annotations

import keras

from . import _compat, _layers
from ._taps import Tap

#: The attention layers the attention methods recognise.
ATTENTION_CLASSES = (keras.layers.MultiHeadAttention,)

_LOOKED_FOR = (
    "keras.layers.MultiHeadAttention layers (the attention of keras.layers and of "
    "KerasHub's ViT, DeiT and DINOv2 backbones)"
)


def attention_layers(model) -> list[tuple[tuple[str, ...], keras.layers.Layer]]:
    """``(path, layer)`` of every attention layer of ``model``, in the order they run.

    Raises:
        ValueError: when the model has none (the message says what was looked for).
    """
    explained = getattr(model, "explained_model", model)  # an exposed model: its own model
    found = [
        (path, layer)
        for path, layer in _layers.flatten_layers(explained)
        if isinstance(layer, ATTENTION_CLASSES)
    ]
    if not found:
        raise ValueError(
            f"The attention methods look for {_LOOKED_FOR}; the model '{explained.name}' has "
            "none. For a transformer with attention layers of its own, explain a token layer "
            "with a CAM method instead (ke.gradcam on ke.inspection.expose(model, layer))."
        )
    return found


def attention_taps(model) -> tuple[tuple[Tap, ...], tuple[int, ...]]:
    """The taps that record every attention layer's probabilities while ``model`` runs.

    Returns:
        ``(taps, positions)``: the taps to run the model with, and the positions
        (in ``taps``) of those whose recorded values are the probabilities
        ``(batch, heads, tokens, tokens)``, one per attention layer, in order.

    Raises:
        ValueError: for an attention layer that cannot give its probabilities
            (flash attention, no softmax sub-layer).
    """
    taps, positions = [], []
    for path, layer in attention_layers(model):
        name = "/".join(path)
        if _compat.flash_attention(layer):
            raise ValueError(
                f"The attention layer '{name}' runs flash attention, which never forms the "
                "attention probabilities the attention methods need. Build the model with "
                "flash attention off: keras.config.disable_flash_attention() before building "
                "it, or MultiHeadAttention(..., flash_attention=False)."
            )
        softmax = _compat.attention_softmax(layer)
        if softmax is None:
            raise ValueError(
                f"The attention layer '{name}' returns no attention probabilities (it has no "
                "softmax sub-layer: is it built?). Call the model once before explaining it, "
                "or explain a token layer with a CAM method (ke.gradcam) instead."
            )
        taps.append(Tap(layer, 0, path, call_kwargs=(("return_attention_scores", True),), keep=0))
        positions.append(len(taps))
        taps.append(
            Tap(
                softmax,
                0,
                path + (softmax.name,),
                absent=(
                    f"The attention layer '{name}' ran without its softmax sub-layer: it "
                    "computes attention its own way (a subclass overriding "
                    "_compute_attention, or a fused kernel), so it returns no attention "
                    "probabilities. Use a layer that does (keras.layers.MultiHeadAttention "
                    "with flash_attention=False), or explain a token layer with a CAM "
                    "method (ke.gradcam) instead."
                ),
            )
        )
    return tuple(taps), tuple(positions)


def check_probabilities(taps, positions, probabilities) -> int:
    """The token count of the recorded probabilities; a clear error for other shapes.

    ``probabilities``: the recorded tensors, or their shapes.
    """
    tokens = None
    for position, value in zip(positions, probabilities):
        shape = tuple(getattr(value, "shape", value))
        name = taps[position].name
        if len(shape) != 4 or shape[-1] != shape[-2]:
            raise ValueError(
                f"The attention layer '{name}' gives probabilities of shape {shape}; the "
                "attention methods explain self-attention over one axis of tokens, "
                "(batch, heads, tokens, tokens). Explain a CAM method on a token layer instead."
            )
        if tokens is not None and shape[-1] != tokens:
            raise ValueError(
                f"The attention layers attend over different token counts ({tokens} and "
                f"{shape[-1]} at '{name}'): rollout multiplies the blocks' attention, which "
                "needs one token count (a plain ViT, DeiT or DINOv2, not a pyramid)."
            )
        tokens = shape[-1]
    return tokens
