"""JAX implementation of the backend functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras

from .._taps import check_recorded, recorded, tapped
from ._common import Gradients, check_scores

NAME = "jax"


def forward(model, inputs, taps=()):
    """Run ``model`` (JAX records nothing unless asked); return (outputs, tap values)."""
    context, values = recorded(taps)
    with context:
        outputs = model(inputs, training=False)
    check_recorded(taps, values)
    return outputs, values


def value_and_gradients(model, inputs, score_fn, taps=(), differentiate=(), wrt_inputs=False):
    """Scores and their gradients w.r.t. tapped tensors and (optionally) the inputs.

    JAX can only differentiate a function w.r.t. its arguments, so each tapped
    layer returns ``output + delta`` and we differentiate w.r.t. ``delta`` at 0.
    The weights are constants of that function: no weight gradient exists.
    """
    inputs = jnp.asarray(inputs)
    differentiate = list(differentiate)

    def run(x, deltas):
        values = [None] * len(taps)
        slots = {position: i for i, position in enumerate(differentiate)}

        def inject(position, output):
            values[position] = output
            if position in slots and deltas is not None:
                return output + deltas[slots[position]]
            return output

        with tapped(taps, inject):
            outputs = model(x, training=False)
        check_recorded(taps, values)
        return outputs, values

    deltas = None
    if differentiate:
        shapes = jax.eval_shape(lambda x: run(x, None)[1], inputs)
        deltas = [jnp.zeros(shapes[p].shape, shapes[p].dtype) for p in differentiate]

    def scored(x, deltas):
        outputs, values = run(x, deltas)
        return score_fn(outputs, values), (outputs, values)

    if wrt_inputs:
        scores, pullback, (outputs, values) = jax.vjp(scored, inputs, deltas, has_aux=True)
    else:
        scores, pullback, (outputs, values) = jax.vjp(
            lambda d: scored(inputs, d), deltas, has_aux=True
        )
    check_scores(scores)

    units = scores.shape[-1]
    eye = jnp.eye(units, dtype=scores.dtype)[:, None, :]
    cotangents = jnp.broadcast_to(eye, (units,) + scores.shape)
    cotangent_grads = jax.vmap(pullback)(cotangents)
    if wrt_inputs:
        input_grads, tap_grads = cotangent_grads
        input_grads = jnp.moveaxis(input_grads, 0, -1)
    else:
        (tap_grads,) = cotangent_grads
        input_grads = None
    tap_grads = [jnp.moveaxis(g, 0, -1) for g in (tap_grads or [])]
    return Gradients(scores, outputs, values, tap_grads, input_grads)


def compile(fn, model, jit_compile=True):
    """``jax.jit`` a function of tensors; the model's variables become arguments.

    Inside the compiled function, ``keras.StatelessScope`` maps every variable of
    ``model`` to the traced value passed in, so weights are not baked into the
    program as constants and the same program serves updated weights.
    """
    if not jit_compile:
        return fn
    variables = list(model.variables)

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)

    def run(*args):
        return jitted([v.value for v in variables], *args)

    return run


def is_compiled_per_shape() -> bool:
    return True
