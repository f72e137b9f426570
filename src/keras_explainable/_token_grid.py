"""Token grids: CAM maps for layers that output tokens ``(batch, tokens, dim)``.

A vision transformer's blocks output one token per image patch, often after a
few *prefix* tokens that belong to no patch (a class token, DeiT's distillation
token, DINOv2's register tokens). The CAM path (``methods/_cam_path.py``)
hands every CAM method the patch tokens arranged on their grid, ``(batch, gh,
gw, dim)`` (the prefix tokens dropped), so that the maps come out as ``(batch,
gh, gw, units)`` and are resized to the input like any CAM.

The rule (:func:`arrange`), applied to the recorded activations and their
gradients alike:

- an image input (a tensor with two or more spatial axes) and a rank-3 layer
  output: tokens on a grid, found by :func:`token_layout` from the token count,
  the input size and the model's patch stride (:func:`patch_strides`), unless
  ``token_grid`` / ``prefix_tokens`` say (``ke.inspection.expose``);
- a sequence input (token ids ``(batch, tokens)``, a ``(batch, length,
  channels)`` signal, or a structure with no image in it): the token axis stays
  one axis, every token kept (a ``[CLS]`` token is a real input token);
- anything else (a spatial layer ``(batch, h, w, c)``, Swin's included): as is.

:func:`last_block_tap` picks the default layer of a transformer (see
``inspection.default_activation_tap``). Framework-free: Keras ops only.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import keras
from keras import ops

from . import _compat, _inputs, _layers
from ._axes import positive_axes
from ._taps import Tap

#: At most this many prefix tokens are guessed (class + distillation + registers).
MAX_GUESSED_PREFIX = 16

_FIX = (
    "Pass the grid yourself: ke.inspection.expose(model, arguments=layer, token_grid=(gh, gw), "
    "prefix_tokens=n) (or token_grid= / prefix_tokens= to ke.explain_prediction, "
    "--token-grid / --prefix-tokens on the command line)."
)


class TokenLayout(NamedTuple):
    """``prefix`` tokens in front, then the patches of a ``grid`` (row-major)."""

    prefix: int
    grid: tuple[int, ...]

    def to_grid(self, tensor):
        """``(batch, tokens, dim, *rest)`` -> ``(batch, *grid, dim, *rest)``, prefix dropped."""
        kept = tensor[:, self.prefix :]
        return ops.reshape(kept, (-1,) + self.grid + tuple(tensor.shape[2:]))


# --------------------------------------------------------------------------- options


def check_options(token_grid, prefix_tokens):
    """``(token_grid, prefix_tokens)`` validated: a tuple of positive ints, an int >= 0."""
    if token_grid is not None:
        grid = (token_grid,) if isinstance(token_grid, int) else token_grid
        if (
            not isinstance(grid, (tuple, list))
            or not grid
            or not all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)
        ):
            raise ValueError(
                f"token_grid is the patch grid as positive ints, e.g. (14, 14); got {token_grid!r}."
            )
        token_grid = tuple(int(g) for g in grid)
    if prefix_tokens is not None and (
        isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0
    ):
        raise ValueError(
            "prefix_tokens is the number of tokens in front of the patch tokens (class, "
            f"distillation, register tokens), an int >= 0; got {prefix_tokens!r}."
        )
    return token_grid, prefix_tokens


# --------------------------------------------------------------------------- patch size

_STRIDES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def patch_strides(model) -> tuple[int, ...] | None:
    """The stride of ``model``'s patch embedding, or None.

    The first convolution whose strides equal its kernel size and exceed 1
    (non-overlapping patches: ViT, DeiT, DINOv2, Swin), nested layers included.
    """
    model = getattr(model, "explained_model", model)
    try:
        return _STRIDES[model]
    except (KeyError, TypeError):
        pass
    found = None
    for _, layer in _layers.flatten_layers(model, include_models=False):
        strides = getattr(layer, "strides", None)
        kernel = getattr(layer, "kernel_size", None)
        if isinstance(strides, (tuple, list)) and tuple(strides) == tuple(kernel or ()):
            if any(s > 1 for s in strides):
                found = tuple(int(s) for s in strides)
                break
    try:
        _STRIDES[model] = found
    except TypeError:
        pass
    return found


def _grids_of(size, stride):
    """The grids a stride gives on ``size`` (valid and same padding)."""
    floor = tuple(s // t for s, t in zip(size, stride))
    ceil = tuple(-(-s // t) for s, t in zip(size, stride))
    return [g for g in dict.fromkeys((floor, ceil)) if all(d >= 1 for d in g)]


def _candidate_grids(size, strides):
    """Grids in order of preference: the model's patch stride (and its 2^k merges), then any."""
    model_grids = []
    if strides is not None and len(strides) == len(size):
        for k in range(8):
            model_grids += _grids_of(size, tuple(s * 2**k for s in strides))
    others = []
    for stride in range(1, max(size) + 1):
        others += _grids_of(size, (stride,) * len(size))
    return list(dict.fromkeys(model_grids)), list(dict.fromkeys(others))


def token_layout(count, size, strides=None, token_grid=None, prefix_tokens=None, name="layer"):
    """Where the patch tokens are among ``count`` tokens of an input of spatial ``size``.

    Args:
        count: the number of tokens the layer outputs.
        size: the input's spatial size, e.g. ``(224, 224)``.
        strides: the model's patch stride (:func:`patch_strides`), or None.
        token_grid: the grid, when known (then the prefix is what is left).
        prefix_tokens: the number of prefix tokens, when known.
        name: the layer, for messages.

    Raises:
        ValueError: when the tokens fit no grid (the message says how to give it).
    """
    size = tuple(int(s) for s in size)
    tokens = f"'{name}' outputs {count} tokens"
    if token_grid is not None:
        if len(token_grid) != len(size):
            raise ValueError(
                f"token_grid={token_grid} has {len(token_grid)} axes but the input has "
                f"{len(size)} spatial axes {size}; give one size per spatial axis."
            )
        prefix = count - math.prod(token_grid) if prefix_tokens is None else prefix_tokens
        if prefix < 0 or prefix + math.prod(token_grid) != count:
            grid = "x".join(map(str, token_grid))
            what = (
                f"fewer than the {math.prod(token_grid)} patches of a {grid} grid"
                if prefix_tokens is None
                else f"not {prefix_tokens} prefix tokens + a {grid} grid"
            )
            raise ValueError(
                f"{tokens}, {what}. Give a token_grid (and prefix_tokens) that add up to the "
                "token count."
            )
        return TokenLayout(prefix, tuple(token_grid))
    preferred, others = _candidate_grids(size, strides)
    if prefix_tokens is not None:
        patches = count - prefix_tokens
        for grid in preferred + others:
            if math.prod(grid) == patches:
                return TokenLayout(prefix_tokens, grid)
        raise ValueError(
            f"{tokens}: after {prefix_tokens} prefix tokens, {patches} patches fit no grid of "
            f"the input {size}. {_FIX}"
        )
    for candidates in (preferred, others):
        fits = [
            (count - math.prod(g), -math.prod(g), g)
            for g in candidates
            if 0 <= count - math.prod(g) <= MAX_GUESSED_PREFIX and math.prod(g) > 1
        ]
        if fits:
            prefix, _, grid = min(fits)
            return TokenLayout(prefix, grid)
    raise ValueError(
        f"{tokens}, which fit no patch grid of the input {size} (tokens = prefix tokens + "
        f"the patches of a grid, with at most {MAX_GUESSED_PREFIX} prefix tokens guessed). {_FIX}"
    )


# --------------------------------------------------------------------------- the CAM path


def image_size(inputs, spatial_axis) -> tuple[int, ...] | None:
    """The spatial size of the image among ``inputs``, or None for sequence inputs."""
    if _inputs.is_structure(inputs):
        images = [leaf for leaf in _inputs.leaves(inputs) if len(leaf.shape) >= 4]
        if not images:
            return None
        return tuple(images[0].shape[1:-1])
    rank = len(inputs.shape)
    try:
        axes = positive_axes(spatial_axis, rank)
    except ValueError:
        axes = tuple(range(1, rank - 1))
    return tuple(inputs.shape[a] for a in axes) if len(axes) >= 2 else None


def arrange(model, inputs, tap, activations, gradients, spatial_axis):
    """``(activations, gradients, axes)`` as the CAM rules see them (see the module doc).

    ``model`` is the model the caller passed (an exposed model carries
    ``token_grid`` / ``prefix_tokens``); ``axes`` are the spatial axes of the
    returned activations.
    """
    rank = len(activations.shape)
    token_grid = getattr(model, "token_grid", None)
    prefix_tokens = getattr(model, "prefix_tokens", None)
    if rank != 3:
        if rank < 3:
            raise ValueError(
                f"The explained activation has shape {tuple(activations.shape)}: it has no "
                "spatial axes (nor a token axis). Expose a convolutional (spatial) or token "
                "layer instead."
            )
        return activations, gradients, positive_axes(spatial_axis, rank)
    size = image_size(inputs, spatial_axis)
    if size is None:  # a sequence: one token axis, every token kept
        if token_grid is not None or prefix_tokens:
            raise ValueError(
                "token_grid / prefix_tokens arrange the tokens of an image model on its patch "
                "grid; this model's input is a sequence, whose token axis is kept as it is. "
                "Drop them."
            )
        return activations, gradients, (1,)
    layout = token_layout(
        int(activations.shape[1]), size, patch_strides(model), token_grid, prefix_tokens,
        tap.name,
    )  # fmt: skip
    grid_axes = tuple(range(1, 1 + len(layout.grid)))
    arranged = None if gradients is None else layout.to_grid(gradients)
    return layout.to_grid(activations), arranged, grid_axes


# --------------------------------------------------------------------------- default layer


def _is_attention(layer) -> bool:
    return isinstance(layer, keras.layers.MultiHeadAttention) or (
        "attention" in type(layer).__name__.lower()
    )


def _holds(layer, predicate) -> bool:
    """Whether a sub-layer of ``layer`` (at any depth) meets ``predicate``."""
    pending = list(_layers._sublayers(layer))
    seen = set()
    while pending:
        child = pending.pop()
        if id(child) in seen:
            continue
        seen.add(id(child))
        if predicate(child):
            return True
        pending.extend(_layers._sublayers(child))
    return False


def _holds_attention(layer) -> bool:
    """A container (not a model, not an attention layer) with an attention layer inside."""
    return (
        not isinstance(layer, keras.Model)
        and not _is_attention(layer)
        and bool(_layers._sublayers(layer))
        and _holds(layer, _is_attention)
    )


def _is_block(layer) -> bool:
    """A transformer block: it holds an attention layer, and no other layer of its own does."""
    return _holds_attention(layer) and not _holds(layer, _holds_attention)


def _tokens(shape) -> bool:
    return shape is not None and len(shape) == 3 and shape[1] is not None and shape[1] > 1


def _pools_prefix(count, size, strides) -> bool:
    """Whether tokens have prefix tokens in front (a class token), or may (a sequence)."""
    if size is None:
        return True  # a text model's [CLS] cannot be told from its shapes
    try:
        return token_layout(count, size, strides).prefix > 0
    except ValueError:
        return True


def _tap(call, link="output", calls=()) -> Tap:
    """A tap on ``call``; its input as the output of the layer producing it, when one does.

    The producer's output is the same tensor seen by *every* layer reading it
    (a residual connection too), which is what replacing it (Ablation-CAM)
    should change, and the name the user knows it by.
    """
    if link == "input":
        nodes = _compat.inbound_nodes(call["layer"])
        parents = nodes[0].parent_nodes if len(nodes) == 1 else []
        producer = parents[0].operation if len(parents) == 1 else None
        if producer is not None and len(_compat.inbound_nodes(producer)) == 1:
            for candidate in calls:
                if candidate["layer"] is producer and candidate["call_index"] == 0:
                    return _tap(candidate)
    return Tap(call["layer"], call["call_index"], call["path"], link=link)


def last_block_tap(calls, after: int = -1, size=None, strides=None) -> Tap | None:
    """The default signal of a transformer, from ``inspection.trace_layer_calls``'s calls.

    None unless an attention layer runs after call ``after`` (the last spatial
    layer). Otherwise the output of the last transformer block (a layer holding
    an attention layer; in a functional graph, the input of the final norm over
    tokens) when every token reaches the pooling; when the model has prefix
    tokens (``size``: the input's spatial size; None for a sequence, which may
    have a ``[CLS]`` token), that block's *input*: a classifier that reads the
    class token after the last block gets no gradient from the patch tokens
    there (every gradient CAM would be 0), while the last block's attention
    still mixes them into the class token.
    """
    attention = [i for i, c in enumerate(calls) if _is_attention(c["layer"])]
    if not attention or attention[-1] <= after:
        return None
    blocks = [c for c in calls if _tokens(c["output_shape"]) and _is_block(c["layer"])]
    if blocks:
        last = blocks[-1]
        before = _pools_prefix(last["output_shape"][1], size, strides)
        return _tap(last, "input" if before else "output", calls)
    tokens = [(i, c) for i, c in enumerate(calls) if _tokens(c["output_shape"])]
    leaves = [(i, c) for i, c in tokens if not _layers._sublayers(c["layer"])]
    if not leaves:
        return _tap(calls[attention[-1]])
    norms = [(i, c) for i, c in leaves if isinstance(c["layer"], _layers._NORMALIZATION_CLASSES)]
    if _pools_prefix(leaves[-1][1]["output_shape"][1], size, strides):
        # the input of the last block: the input of its first norm (pre-norm blocks)
        earlier = [c for i, c in norms if i < attention[-1]]
        if earlier:
            return _tap(earlier[-1], "input", calls)
    final = [c for i, c in norms if i > attention[-1]]
    if final:
        return _tap(final[-1], "input", calls)
    later = [c for i, c in leaves if i > attention[-1]]
    return _tap(later[-1] if later else calls[attention[-1]])


__all__ = [
    "MAX_GUESSED_PREFIX",
    "TokenLayout",
    "arrange",
    "check_options",
    "image_size",
    "last_block_tap",
    "patch_strides",
    "token_layout",
]
