"""TensorFlow implementation of the backend functions."""

from __future__ import annotations

import functools

import tensorflow as tf

from .._inputs import is_structure, pack
from .._taps import check_recorded, recorded, tapped
from ._common import Gradients, check_scores, round_up, wrt_leaves

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
    items, positions, rebuild = wrt_leaves(inputs, wrt_inputs)
    items = [tf.convert_to_tensor(item) for item in items]
    inputs = items[0] if len(items) == 1 and not is_structure(inputs) else pack(inputs, items)
    values = [None] * len(taps)
    with tf.GradientTape(watch_accessed_variables=False, persistent=True) as tape:
        for position in positions:
            tape.watch(items[position])

        def watch(position, output):
            tape.watch(output)
            values[position] = output
            return output

        with tapped(taps, watch):
            outputs = model(inputs, training=False)
        check_recorded(taps, values)
        scores = score_fn(outputs, values)
    check_scores(scores)

    sources = [items[p] for p in positions] + [values[i] for i in differentiate]
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
    input_grads = rebuild(grads[: len(positions)]) if positions else None
    return Gradients(scores, outputs, values, grads[len(positions) :], input_grads)


def _units_last(tensor):
    rank = len(tensor.shape)
    return tf.transpose(tensor, list(range(1, rank)) + [0])


def compile(fn, model, jit_compile=False):
    """Compile ``fn`` (a function of tensors) once per input signature.

    Data parallelism: when called inside the scope of a ``tf.distribute``
    strategy with more than one replica (``MirroredStrategy`` over several
    GPUs, ``MultiWorkerMirroredStrategy``), the batch (the first axis of every
    argument) is split into one slice per local replica, ``fn`` runs on every
    replica with ``strategy.run`` inside one ``tf.function``, and the slices of
    the outputs are put back together in order. A batch that does not split
    evenly is padded with copies of its last row and the outputs are sliced
    back. No replica talks to another: under ``MultiWorkerMirroredStrategy``
    each worker explains its own batches on its own devices.

    Args:
        fn: ``fn(*tensors) -> outputs``, the batch first in every tensor
            argument and every output.
        model: unused (``tf.function`` reads the variables it touches).
        jit_compile: compile with XLA.

    Returns:
        A callable with the signature of ``fn``.
    """
    del model

    # TensorFlow counts traces per code object and warns of "retracing" when the
    # steps of many methods (which share CompiledStep._step) trace once each; a
    # partial has no code object of its own, so each compiled step counts alone.
    #
    # autograph=False: like Keras' own predict step (``do_not_convert``), the step is
    # traced as plain Python. AutoGraph would rewrite the source of every function
    # the step calls (this package, Keras, the model) on the first trace: 15-30 s
    # per compiled step on the CI machine, for code that branches only on shapes.
    single = tf.function(
        functools.partial(fn),
        jit_compile=bool(jit_compile),
        reduce_retracing=True,
        autograph=False,
    )
    replicated: dict = {}  # strategy -> its tf.function

    def run(*args):
        strategy = _active_strategy()
        if strategy is None:
            return single(*args)
        key = id(strategy)
        entry = replicated.get(key)
        if entry is None or entry[0] is not strategy:
            entry = (strategy, _replicated_function(fn, strategy, jit_compile))
            replicated[key] = entry
        return _run_split(entry[1], strategy, args)

    return run


def _active_strategy():
    """The ``tf.distribute`` strategy whose scope we are in, if it has several replicas."""
    if not tf.distribute.has_strategy() or not tf.distribute.in_cross_replica_context():
        return None  # no scope, or already inside a replica: run as is
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return None  # its replicas run through a ClusterCoordinator, not strategy.run
    if len(strategy.extended.worker_devices) <= 1:
        return None
    return strategy


def _replicated_function(fn, strategy, jit_compile):
    """A ``tf.function`` running ``fn`` on each local replica's slice of the batch."""
    compiled = tf.function(fn, jit_compile=True, autograph=False) if jit_compile else fn
    return tf.function(_Replicated(compiled, strategy), reduce_retracing=True, autograph=False)


class _Replicated:
    """``fn`` on every replica, its outputs concatenated in replica order.

    A callable object rather than a closure: ``tf.function`` counts retracing
    per function code, and every compiled step traces its own copy once per
    shape, which is no retracing to warn about.
    """

    def __init__(self, fn, strategy):
        self._fn = fn
        self._strategy = strategy

    def __call__(self, *per_replica):
        strategy = self._strategy
        outputs = strategy.run(self._fn, args=per_replica)
        return tf.nest.map_structure(
            lambda out: (
                None if out is None else tf.concat(strategy.experimental_local_results(out), 0)
            ),
            outputs,
        )


def _run_split(replicated, strategy, args):
    """Split the batch over ``strategy``'s local replicas, run, slice the padding off."""
    local = len(strategy.extended.worker_devices)
    # an argument may be a structure (multi-input models): every leaf is split
    rows = int(tf.nest.flatten([a for a in args if a is not None])[0].shape[0])
    size = round_up(rows, local) // local

    def split(arg):
        arg = tf.convert_to_tensor(arg)
        if size * local != rows:
            last = tf.repeat(arg[-1:], size * local - rows, axis=0)
            arg = tf.concat([arg, last], axis=0)
        parts = tf.split(arg, local, axis=0)

        def value(context):
            return parts[context.replica_id_in_sync_group % local]

        return strategy.experimental_distribute_values_from_function(value)

    outputs = replicated(*[None if a is None else tf.nest.map_structure(split, a) for a in args])
    if size * local == rows:
        return outputs
    return tf.nest.map_structure(lambda out: None if out is None else out[:rows], outputs)


def is_compiled_per_shape() -> bool:
    return True
