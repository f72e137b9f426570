"""JAX implementation of the backend functions."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import keras
import numpy as np

from .._inputs import is_structure, pack
from .._taps import check_recorded, recorded, tapped
from ._common import Gradients, check_scores, round_up, wrt_leaves

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
    items, positions, rebuild = wrt_leaves(inputs, wrt_inputs)
    items = [jnp.asarray(item) for item in items]
    structured = is_structure(inputs)
    like = inputs
    differentiate = list(differentiate)

    def assemble(chosen):
        """The model's inputs with the differentiated leaves taken from ``chosen``."""
        full = list(items)
        for position, value in zip(positions, chosen):
            full[position] = value
        return pack(like, full) if structured else full[0]

    inputs = assemble([items[p] for p in positions])

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

    if positions:
        scores, pullback, (outputs, values) = jax.vjp(
            lambda chosen, d: scored(assemble(chosen), d),
            [items[p] for p in positions],
            deltas,
            has_aux=True,
        )
    else:
        scores, pullback, (outputs, values) = jax.vjp(
            lambda d: scored(inputs, d), deltas, has_aux=True
        )
    check_scores(scores)

    units = scores.shape[-1]
    eye = jnp.eye(units, dtype=scores.dtype)[:, None, :]
    cotangents = jnp.broadcast_to(eye, (units,) + scores.shape)
    cotangent_grads = jax.vmap(pullback)(cotangents)
    if positions:
        input_grads, tap_grads = cotangent_grads
        input_grads = rebuild([jnp.moveaxis(g, 0, -1) for g in input_grads])
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

    Data parallelism: when a ``keras.distribution`` distribution whose mesh has
    more than one device along its batch axis (e.g. ``DataParallel``) is active
    at call time, the batch (the first axis of every argument) is sharded over
    that axis, the variables are laid out as the distribution says (replicated
    for ``DataParallel``) and XLA partitions the program. A batch that does not
    split evenly is padded with copies of its last row and the outputs are
    sliced back. Under ``jax.distributed`` (several processes), each process
    passes its own batch and gets its own rows back.

    Args:
        fn: ``fn(*tensors) -> outputs``, the batch first in every tensor
            argument and every output.
        model: the model whose variables ``fn`` reads.
        jit_compile: ``False`` returns ``fn`` unchanged (eager, one device).

    Returns:
        A callable with the signature of ``fn``.
    """
    if not jit_compile:
        return fn
    variables = list(model.variables)
    name = model.name  # not the model: the step cache must not keep it alive

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless)
    sharded = _ShardedRunner(stateless, variables)

    def run(*args):
        plan = _batch_sharding()
        if plan is not None:
            return sharded(plan, args)
        values = _weights(name, variables)
        try:
            return jitted(values, *args)
        except RuntimeError as error:
            if "has been deleted" in str(error):  # a buffer donated by Keras' predict/fit
                raise RuntimeError(_DETACHED.format(name=name)) from None
            raise

    return run


_DETACHED = (
    "The weights of '{name}' were taken off the model while explaining it: Keras' JAX "
    "`model.predict` / `fit` / `evaluate` detach a model's weights while they run (a "
    "memory saving of Keras on JAX), so nothing else can use the model meanwhile, from "
    "any thread. In a server, predict with `model(x)` (or a jitted `model.stateless_call`) "
    "instead of `model.predict`, or hold one lock around predict and explain."
)


def _weights(name, variables):
    try:  # a detached variable has no value and no initializer left to make one
        values = [v.value for v in variables]
    except TypeError:
        values = [None]
    if any(value is None for value in values):
        raise RuntimeError(_DETACHED.format(name=name))
    return values


class _Plan(NamedTuple):
    """How the active distribution splits a batch."""

    distribution: Any
    sharding: jax.sharding.NamedSharding  # of the batch: split on the batch axis
    local_shards: int  # batch shards on this process's devices


def _batch_sharding():
    """The active distribution's batch split, or ``None`` to run on one device."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    mesh = distribution.device_mesh
    axis = distribution.batch_dim_name
    if mesh is None or axis not in mesh.axis_names:
        return None
    shards = dict(zip(mesh.axis_names, mesh.shape))[axis]
    if shards <= 1:
        return None
    processes = jax.process_count()
    local = shards // processes if shards % processes == 0 else shards
    sharding = jax.sharding.NamedSharding(mesh.backend_mesh, jax.sharding.PartitionSpec(axis))
    return _Plan(distribution, sharding, max(local, 1))


class _ShardedRunner:
    """Runs a stateless function with its batch sharded over a device mesh.

    The variables' values laid out on the mesh are cached by the identity of
    each variable's current value: they are copied to the devices once, and
    again only after the variable is assigned a new value.
    """

    def __init__(self, stateless, variables):
        self._stateless = stateless
        self._variables = variables
        self._jitted: dict = {}  # out sharding -> jitted function
        self._placed: dict = {}  # variable position -> (value, sharding, placed value)
        self._layouts_of = None  # (distribution, the variables' shardings under it)

    def _layouts(self, distribution):
        if self._layouts_of is None or self._layouts_of[0] is not distribution:
            layouts = [distribution.get_variable_layout(v).backend_layout for v in self._variables]
            self._layouts_of = (distribution, layouts)
        return self._layouts_of[1]

    def _values(self, distribution):
        values = []
        layouts = self._layouts(distribution)
        for position, (variable, layout) in enumerate(zip(self._variables, layouts)):
            value = variable.value
            cached = self._placed.get(position)
            if cached is None or cached[0] is not value or cached[1] != layout:
                placed = _place(value, layout)
                cached = (value, layout, placed)
                self._placed[position] = cached
            values.append(cached[2])
        return values

    def __call__(self, plan: _Plan, args):
        jitted = self._jitted.get(plan.sharding)
        if jitted is None:
            jitted = jax.jit(self._stateless, out_shardings=plan.sharding)
            self._jitted[plan.sharding] = jitted
        # every argument may be a structure (multi-input models): each leaf is padded
        first = next((leaf for leaf in jax.tree_util.tree_leaves(args)), None)
        rows = None if first is None else int(first.shape[0])
        padded = round_up(_largest_across_processes(rows or 0), plan.local_shards)

        def place(arg):
            arg = jnp.asarray(arg)
            if padded != arg.shape[0]:
                widths = [(0, padded - arg.shape[0])] + [(0, 0)] * (arg.ndim - 1)
                arg = jnp.pad(arg, widths, mode="edge")
            return _global_batch(arg, plan.sharding)

        batch = [jax.tree_util.tree_map(place, arg) for arg in args]
        outputs = jitted(self._values(plan.distribution), *batch)
        return jax.tree_util.tree_map(lambda out: _local_rows(out, plan.sharding, rows), outputs)


def _place(value, sharding):
    """``value`` laid out with ``sharding`` (a no-op when it already is)."""
    if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
        return value
    if jax.process_count() > 1:  # the same host value on every process
        host = np.asarray(value)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.device_put(value, sharding)


def _largest_across_processes(rows: int) -> int:
    """The most rows any process holds this step: every process must pass one shape."""
    if jax.process_count() == 1:
        return rows
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.int32(rows))))


def _global_batch(local, sharding):
    """This process's rows as (its part of) one batch sharded over the mesh."""
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))


def _local_rows(output, sharding, rows):
    """This process's rows of a batch-sharded output, without the padding."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        output = multihost_utils.global_array_to_host_local_array(
            output, sharding.mesh, sharding.spec
        )
    return output if rows is None or output.shape[0] == rows else output[:rows]


def is_compiled_per_shape() -> bool:
    return True
