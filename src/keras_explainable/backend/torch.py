"""PyTorch implementation of the backend functions."""

from __future__ import annotations

import torch

from .._inputs import is_structure, leaves, pack
from .._taps import check_recorded, recorded, tapped
from ._common import Gradients, check_scores, wrt_leaves

NAME = "torch"


def _as_tensor(inputs):
    import keras

    return keras.ops.convert_to_tensor(inputs)


def _as_structure(inputs):
    if is_structure(inputs):
        return pack(inputs, [_as_tensor(item) for item in leaves(inputs)])
    return _as_tensor(inputs)


def forward(model, inputs, taps=()):
    """Run ``model`` under ``torch.no_grad``; return (outputs, tap values)."""
    context, values = recorded(taps)
    with torch.no_grad(), context:
        outputs = model(_as_structure(inputs), training=False)
    check_recorded(taps, values)
    return outputs, values


def value_and_gradients(model, inputs, score_fn, taps=(), differentiate=(), wrt_inputs=False):
    """Scores and their gradients w.r.t. tapped tensors and (optionally) the inputs.

    Without input gradients the forward pass runs with autograd off until the
    first differentiated tap, whose output becomes a fresh leaf: the graph is
    recorded only from there on. ``torch.autograd.grad`` computes only the
    gradients asked for, never the parameters' ``.grad``.
    """
    items, positions, rebuild = wrt_leaves(inputs, wrt_inputs)
    items = [_as_tensor(item) for item in items]
    for position in positions:
        items[position] = items[position].detach().requires_grad_(True)
    inputs = items[0] if len(items) == 1 and not is_structure(inputs) else pack(inputs, items)
    values = [None] * len(taps)
    wanted = set(differentiate)

    def watch(position, output):
        if position in wanted:
            if not torch.is_grad_enabled():
                torch.set_grad_enabled(True)  # undone when the outer block exits
            if not output.requires_grad:
                output = output.detach().requires_grad_(True)
        values[position] = output
        return output

    with torch.set_grad_enabled(bool(positions)):
        with tapped(taps, watch):
            outputs = model(inputs, training=False)
        check_recorded(taps, values)
        scores = score_fn(outputs, values)
    check_scores(scores)

    sources = [items[p] for p in positions] + [values[i] for i in differentiate]
    units = scores.shape[-1]
    if units == 1:
        grads = torch.autograd.grad(scores.sum(), sources, allow_unused=True)
        grads = [_zeros_if_none(g, s)[..., None] for g, s in zip(grads, sources)]
    else:
        eye = torch.eye(units, dtype=scores.dtype, device=scores.device)[:, None, :]
        cotangents = eye.expand((units,) + tuple(scores.shape))
        try:
            grads = torch.autograd.grad(
                scores, sources, cotangents, is_grads_batched=True, allow_unused=True
            )
        except RuntimeError:  # an op without a batching rule: one backward per unit
            per_unit = [
                torch.autograd.grad(scores, sources, c, retain_graph=True, allow_unused=True)
                for c in cotangents
            ]
            grads = [torch.stack(gs) if gs[0] is not None else None for gs in zip(*per_unit)]
        grads = [torch.movedim(_zeros_if_none(g, s, units), 0, -1) for g, s in zip(grads, sources)]
    grads = [g.detach() for g in grads]
    input_grads = rebuild(grads[: len(positions)]) if positions else None
    grads = grads[len(positions) :]
    scores = scores.detach()
    values = [v.detach() for v in values]
    return Gradients(scores, outputs, values, grads, input_grads)


def _zeros_if_none(grad, source, units=None):
    if grad is not None:
        return grad
    shape = tuple(source.shape) if units is None else (units,) + tuple(source.shape)
    return torch.zeros(shape, dtype=source.dtype, device=source.device)


def compile(fn, model, jit_compile=False):
    """PyTorch runs eagerly (Keras' own default); ``jit_compile=True`` uses torch.compile."""
    del model
    if jit_compile:
        return torch.compile(fn)
    return fn


def is_compiled_per_shape() -> bool:
    return False
