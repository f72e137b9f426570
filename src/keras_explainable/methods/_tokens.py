"""Token inputs, explained at their embedding: token maps ``(batch, tokens, units)``.

Token ids (integer inputs) have no gradient. Every method here taps the output
``e`` ``(batch, tokens, dim)`` of the embedding layer the ids flow into (found
by :func:`keras_explainable._tokens.find_embedding`, or the layer named with
``embedding=``) and works in embedding space:

- Gradients: ``map_t = || d score / d e_t ||_2`` (the L2 norm over ``dim``);
- Gradient x Input: ``map_t = sum_d e_td * d score / d e_td``;
- Integrated Gradients: ``map_t = sum_d (e - e')_td * mean_a d score / d e_td``
  at ``e' + a (e - e')``, so that ``sum_t map_t ~= score(e) - score(e')``;
- SmoothGrad (:func:`..meta.smooth`): the base method on noisy embeddings;
- Occlusion (:mod:`._token_occlusion`): the score lost when a window of tokens
  is replaced by a token id.

Padding (a ``padding_mask`` input equal to 0, ids equal to ``pad_id``, or 0 for
an embedding with ``mask_zero=True``) gets exactly 0. Changing the embedding
output during a forward pass goes through :class:`Embedded`, a view of the
model whose every call opens its own (thread-local) tap block: nothing is
installed on the model outside of that call.
"""

from __future__ import annotations

from keras import ops

from .. import _inputs, _tokens, backend
from .._taps import tapped
from .._tokens import is_ids  # noqa: F401  (for meta.smooth)
from ._common import (
    as_indices,
    prepare_target,
    sum_along_path,
    tile_batch,
    tile_indices,
    tile_target,
    ungroup,
    unit_selector,
    weighted_sum,
    widen,
)


class Embedded:
    """``model`` with ``transform(tap_position, output)`` applied to the taps' outputs.

    Each call of the view opens its own tap block, so the transform acts once
    per forward pass (the backends run a model several times per gradient on
    JAX) and after the backend's own taps: a gradient w.r.t. the tapped output
    is taken at the transformed value when the transform's derivative is the
    identity (see :func:`_shifted`). Every other attribute is the model's.
    """

    wraps_model = True

    def __init__(self, model, taps, transform):
        self.wrapped_model = model
        self._taps = tuple(taps)
        self._transform = transform

    def __getattr__(self, name):
        return getattr(self.wrapped_model, name)

    def __call__(self, x, training=False):
        with tapped(self._taps, self._transform):
            return self.wrapped_model(x, training=training)


def _shifted(output, target):
    """``target``'s value with the derivative of ``output`` (identity w.r.t. ``output``)."""
    return output + ops.stop_gradient(ops.cast(target, output.dtype) - output)


# --------------------------------------------------------------------------- set-up


class Setup:
    """The token inputs of a batch: their positions, embedding taps and real-token masks."""

    def __init__(self, model, inputs, explained, embedding, pad_id, padding_mask, need=True):
        self.structured = _inputs.is_structure(inputs)
        items = [ops.convert_to_tensor(item) for item in self._leaves(inputs)]
        self.like = _inputs.pack(inputs, items) if self.structured else items[0]
        self.items = items
        self.positions = _tokens.token_positions(self.like, explained)
        if not self.positions:
            raise ValueError(
                "None of the explained inputs holds token ids (integers); the token methods "
                "explain integer inputs at their embedding layer."
            )
        self.taps = [self._find(model, p, embedding, need) for p in self.positions]
        self.masks = [
            _tokens.real_tokens(
                self.like, p if self.structured else None, tap, pad_id, padding_mask
            )
            for p, tap in zip(self.positions, self.taps)
        ]

    def _find(self, model, position, embedding, need):
        """The embedding's tap (``need=False``: None when there is none)."""
        try:
            return _tokens.find_embedding(
                model, self.like, position if self.structured else None,
                _for_input(embedding, self.like, position),
            )  # fmt: skip
        except ValueError:
            if need:
                raise
            return None

    @staticmethod
    def _leaves(inputs):
        return _inputs.leaves(inputs) if _inputs.is_structure(inputs) else [inputs]

    def pack(self, items):
        return _inputs.pack(self.like, items) if self.structured else items[0]

    def tiled(self, count):
        return self.pack([tile_batch(item, count) for item in self.items])

    def maps(self, token_maps, float_maps=None):
        """The result: token maps (padding zeroed) at their positions, in the inputs' structure."""
        maps = [None] * len(self.items) if float_maps is None else list(float_maps)
        for position, map_, mask in zip(self.positions, token_maps, self.masks):
            if mask is not None:
                map_ = ops.where(mask[..., None], map_, ops.zeros_like(map_))
            maps[position] = map_
        return self.pack(maps)


def check_no_floats(setup, explained, name):
    if any(_inputs.is_float(setup.items[p]) for p in explained):
        raise ValueError(
            f"{name} explains token inputs and float inputs in separate calls; `inputs` "
            f"names both (positions {list(explained)}). Explain the token ids in one call "
            "and the float inputs in another."
        )


def _for_input(embedding, inputs, position):
    """The ``embedding=`` of one input: one value for all, or a dict by input name."""
    if isinstance(embedding, dict):
        names = _inputs.keys(inputs) if _inputs.is_structure(inputs) else [None]
        return embedding.get(names[position], embedding.get(position))
    return embedding


def reduce_embedding(gradients, embeddings, reduction: str):
    """``(batch, tokens, dim, units)`` gradients -> ``(batch, tokens, units)`` token maps.

    ``"norm"``: the L2 norm over ``dim``; ``"dot"``: the dot product with the
    embeddings ``(batch, tokens, dim)``.
    """
    gradients = widen(gradients)
    if reduction == "norm":
        return ops.sqrt(ops.sum(ops.square(gradients), axis=-2))
    if reduction == "dot":
        return ops.sum(gradients * ops.cast(embeddings, gradients.dtype)[..., None], axis=-2)
    raise ValueError(f"A token reduction is 'norm' or 'dot'; got {reduction!r}.")


# --------------------------------------------------------------------------- gradients


def token_gradient_maps(
    model, inputs, indices, indices_axis, indices_batch_dims, target, explained, reduction,
    embedding=None, pad_id=None, padding_mask=None, float_map=None,
):  # fmt: skip
    """Gradients (``"norm"``) or Gradient x Input (``"dot"``) at the embeddings, one pass.

    Float inputs named in ``explained`` are differentiated in the same pass and
    mapped with ``float_map(gradients, input, rank)``.
    """
    setup = Setup(model, inputs, explained, embedding, pad_id, padding_mask)
    floats = ()
    if setup.structured and explained is not None:
        floats = tuple(p for p in explained if _inputs.is_float(setup.items[p]))
    runner, target = prepare_target(model, target)
    result = backend.value_and_gradients(
        runner,
        setup.like,
        unit_selector(as_indices(indices), indices_axis, indices_batch_dims, target),
        taps=setup.taps,
        differentiate=range(len(setup.taps)),
        wrt_inputs=floats or False,
    )
    token_maps = [
        reduce_embedding(grad, value, reduction)
        for grad, value in zip(result.tap_gradients, result.tap_values)
    ]
    float_maps = None
    if floats:
        grads = _inputs.leaves(result.input_gradients)
        float_maps = [None] * len(setup.items)
        for p in floats:
            item = setup.items[p]
            float_maps[p] = float_map(widen(grads[p]), item, len(item.shape))
    return result.scores, setup.maps(token_maps, float_maps)


# --------------------------------------------------------------------------- integrated gradients


def _baseline_ids(baseline, setup, index):
    """The token id of the baseline of the ``index``-th token input, or None (zeros)."""
    given = baseline
    if _inputs.is_structure(baseline):
        given = _inputs.leaves(baseline)[setup.positions[index]]
    if given is None:
        return None
    if isinstance(given, str):
        if given != "pad":
            raise ValueError(
                f"A token baseline is None (zero embeddings), 'pad' (the pad token's "
                f"embedding, `pad_id`, default 0) or a token id; got {given!r}."
            )
        return "pad"
    if isinstance(given, bool) or not float(given).is_integer():
        raise TypeError(
            f"A token baseline is None (zero embeddings), 'pad' or a token id (an int); got "
            f"{given!r}."
        )
    return int(given)


def token_integrated_gradients(
    model, inputs, indices, indices_axis, indices_batch_dims, target, explained, baseline,
    alphas, weights, chunk_size, embedding=None, pad_id=None, padding_mask=None,
):  # fmt: skip
    """Integrated Gradients in embedding space, every token input on one joint path.

    ``baseline``: ``None`` (zero embeddings), ``"pad"`` (the embedding of
    ``pad_id``, default 0), a token id, or a structure of these per input.
    Padding keeps its own embedding on the whole path, so the maps add up to
    ``score(x) - score(x')`` where ``x'`` holds the baseline at the real tokens.
    """
    setup = Setup(model, inputs, explained, embedding, pad_id, padding_mask)
    if setup.structured and explained is not None:
        check_no_floats(setup, explained, "Integrated Gradients")
    indices = as_indices(indices)
    runner, target = prepare_target(model, target)
    taps = setup.taps
    outputs, embeddings = backend.forward(runner, setup.like, taps)
    scores = unit_selector(indices, indices_axis, indices_batch_dims, target)(outputs, embeddings)
    ids = [_baseline_ids(baseline, setup, i) for i in range(len(taps))]
    replaced = list(setup.items)
    for index, (position, chosen) in enumerate(zip(setup.positions, ids)):
        if chosen is not None:
            token = (0 if pad_id is None else int(pad_id)) if chosen == "pad" else chosen
            item = setup.items[position]
            fill = ops.full(ops.shape(item), token, dtype=item.dtype)
            mask = setup.masks[index]
            replaced[position] = fill if mask is None else ops.where(mask, fill, item)
    baseline_values = [None] * len(taps)
    if any(chosen is not None for chosen in ids):  # zero baselines need no forward pass
        _, baseline_values = backend.forward(runner, setup.pack(replaced), taps)
    baselines = []
    for index, (value, chosen) in enumerate(zip(baseline_values, ids)):
        reference = ops.zeros_like(embeddings[index]) if chosen is None else value
        mask = setup.masks[index]
        if mask is not None:  # padding stays itself along the path
            reference = ops.where(mask[..., None], reference, embeddings[index])
        baselines.append(reference)
    batch = int(setup.items[0].shape[0])

    def step(alpha, weight, count):
        rows = ops.reshape(ops.repeat(alpha, batch), (-1, 1, 1))
        tiled = [tile_batch(b, count) for b in baselines]

        def along_path(position, output):
            point = tiled[position] + ops.cast(rows, output.dtype) * (
                output - ops.cast(tiled[position], output.dtype)
            )
            return _shifted(output, point)

        result = backend.value_and_gradients(
            Embedded(runner, taps, along_path),
            setup.tiled(count),
            unit_selector(
                tile_indices(indices, count, indices_batch_dims),
                indices_axis,
                indices_batch_dims,
                tile_target(target, count),
            ),
            taps=taps,
            differentiate=range(len(taps)),
        )
        grads = result.tap_gradients
        return [weighted_sum(ungroup(widen(grad), count), weight) for grad in grads], None

    totals, _ = sum_along_path(step, alphas, weights, chunk_size)
    token_maps = [
        reduce_embedding(total, ops.cast(value, "float32") - ops.cast(reference, "float32"), "dot")
        for total, value, reference in zip(totals, embeddings, baselines)
    ]
    return scores, setup.maps(token_maps)


# --------------------------------------------------------------------------- smoothing


def noisy_model(model, inputs, params, clean_first, noise, noise_type, draw):
    """``model`` with Gaussian noise ``draw(shape, dtype)`` on the token embeddings.

    The standard deviation is ``noise`` times each row's range over tokens and
    dim (``noise_type="relative"``) or ``noise``. With ``clean_first`` the
    first batch of rows of every forward pass stays clean (SmoothGrad's clean
    group, for the scores). ``params``: the method's, for ``explained_inputs``
    and ``embedding``. Returns ``model`` itself when no input holds token ids.
    """
    explained, embedding = params.get("explained_inputs"), params.get("embedding")
    items = _inputs.leaves(inputs) if _inputs.is_structure(inputs) else [inputs]
    clean_rows = int(items[0].shape[0]) if clean_first else 0
    if not _tokens.token_positions(inputs, explained):
        return model
    structured = _inputs.is_structure(inputs)
    taps = [
        _tokens.find_embedding(
            model, inputs, p if structured else None, _for_input(embedding, inputs, p)
        )
        for p in _tokens.token_positions(inputs, explained)
    ]

    def add_noise(position, output):
        del position
        scale = noise
        if noise_type == "relative":
            e = ops.stop_gradient(output)
            scale = noise * (ops.max(e, (1, 2), keepdims=True) - ops.min(e, (1, 2), keepdims=True))
        drawn = draw(ops.shape(output), output.dtype) * scale
        rows = ops.arange(ops.shape(output)[0])
        keep = ops.reshape(ops.cast(rows >= clean_rows, output.dtype), (-1, 1, 1))
        return output + drawn * keep

    return Embedded(model, taps, add_noise)


__all__ = [
    "Embedded",
    "noisy_model",
    "reduce_embedding",
    "token_gradient_maps",
    "token_integrated_gradients",
]
