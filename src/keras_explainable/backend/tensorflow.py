"""TensorFlow implementation of the backend functions."""

from __future__ import annotations

import tensorflow as tf

from .._taps import check_recorded, recorded, tapped
from ._common import Gradients, check_scores

NAME = "tensorflow"


def forward(model, inputs, taps=()):
    """Run ``model`` without recording gradients; return (outputs, tap values)."""
    context, values = recorded(taps)
    with context:
        outputs = model(inputs, training=False)
    check_recorded(taps, values)
    return outputs, values


def value_and_gradients(model, inputs, score_fn, taps=(), differentiate=(), wrt_inputs=False):
    """Scores and their gradients w.r.t. tapped tensors and (optionally) the inputs.

    Only the tapped tensors (and the inputs, when asked) are watched: no weight
    gradient is ever computed, and for a tap alone the backward pass only crosses
    the part of the network after it.
    """
    inputs = tf.convert_to_tensor(inputs)
    values = [None] * len(taps)
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
        if wrt_inputs:
            tape.watch(inputs)

        def watch(position, output):
            tape.watch(output)
            values[position] = output
            return output

        with tapped(taps, watch):
            outputs = model(inputs, training=False)
        check_recorded(taps, values)
        scores = score_fn(outputs, values)
    check_scores(scores)

    sources = ([inputs] if wrt_inputs else []) + [values[i] for i in differentiate]
    units = scores.shape[-1]
    zero = tf.UnconnectedGradients.ZERO
    if units == 1:
        grads = tape.gradient(scores, sources, unconnected_gradients=zero)
        grads = [g[..., None] for g in grads]
    else:
        batch = tf.shape(scores)[0]
        eye = tf.eye(units, dtype=scores.dtype)[:, None, :]
        cotangents = tf.tile(eye, tf.stack([1, batch, 1]))

        def one_unit(cotangent):
            return tape.gradient(
                scores, sources, output_gradients=cotangent, unconnected_gradients=zero
            )

        grads = tf.vectorized_map(one_unit, cotangents)
        grads = [_units_last(g) for g in grads]
    input_grads = grads.pop(0) if wrt_inputs else None
    return Gradients(scores, outputs, values, grads, input_grads)


def _units_last(tensor):
    rank = len(tensor.shape)
    return tf.transpose(tensor, list(range(1, rank)) + [0])


def compile(fn, model, jit_compile=False):
    """Compile ``fn`` (a function of tensors) once per input signature."""
    del model  # tf.function reads the variables it touches.
    return tf.function(fn, jit_compile=bool(jit_compile), reduce_retracing=True)


def is_compiled_per_shape() -> bool:
    return True
