"""Data-parallel explaining: results on 2 devices equal the single-device run.

The number of devices must be fixed before JAX or TensorFlow starts, so every
multi-device check runs in a fresh Python process (same ``KERAS_BACKEND``) on 2
virtual CPU devices: ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` for
JAX, ``tf.config.set_logical_device_configuration`` for TensorFlow. The child
explains the same seeded model on one device and on two, saves both results and
what the step saw inside the trace, and the test compares them here.
"""

from __future__ import annotations

import json
import os
import socket
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import backend

from . import models

ROOT = Path(__file__).resolve().parent.parent
BACKEND = keras.backend.backend()

only_jax = pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on JAX")
only_tf = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute runs on TensorFlow")

# Shared by the children: the same seeded model and inputs as the rest of the suite,
# 7 samples so that every batch size below leaves a ragged last batch.
_COMMON = """
import json, os, sys
import numpy as np
import keras
import keras_explainable as ke
from tests import models

OUT = sys.argv[1]
x = models.inputs(7)
y = np.arange(7) % models.CLASSES
seen = []

def spied_gradcam(model, rows=slice(None), batch_size=3):
    return ke.explain(spy, model, x[rows], y[rows], batch_size=batch_size, verbose=0,
                      postprocessing=ke.filters.positive_normalize)

def run_all(model):
    # gradcam through a spy (batch 3: the step pads 3 rows to 4 for 2 devices),
    # gradients (batch 4: even) and scorecam (batch 3, a perturbation method).
    spied = spied_gradcam(model)
    grads = ke.gradients(model, x, y, batch_size=4, verbose=0)
    score = ke.scorecam(model, x, y, batch_size=3, verbose=0)
    return {"gradcam": spied, "gradients": grads, "scorecam": score}

def save(results, observed):
    arrays = {f"{run}/{name}/{part}": value
              for run, outputs in results.items()
              for name, pair in outputs.items()
              for part, value in zip(("scores", "maps"), pair)}
    np.savez(OUT + ".npz", **arrays)
    with open(OUT + ".json", "w") as file:
        json.dump(observed, file)
"""

# The spy records how the batch reaching the step is split: [devices, shard shape]
# on JAX, [replicas, rows per replica] on TensorFlow.
_JAX_SPY = """
import jax

def spy(model, inputs, **params):
    jax.debug.inspect_array_sharding(
        inputs, callback=lambda s: seen.append([len(s.device_set), s.shard_shape(inputs.shape)]))
    return ke.methods.cams.gradcam(model, inputs, **params)
"""

_TF_SPY = """
def spy(model, inputs, **params):
    context = tf.distribute.get_replica_context()
    seen.append([context.num_replicas_in_sync, int(inputs.shape[0])])
    return ke.methods.cams.gradcam(model, inputs, **params)
"""

# One device vs. two inside a distribution scope ($scope), on every backend that has one.
_DATA_PARALLEL_CHILD = string.Template("""
$spy
model = models.gap_dense_cnn()
results = {"single": run_all(model)}
observed = {"single": list(seen)}
seen.clear()
$setup
with $scope:
    results["parallel"] = run_all(model)
    observed["parallel"] = list(seen)
    # A model built inside the scope has its weights replicated from the start.
    results["built_inside"] = {"gradcam": spied_gradcam(models.gap_dense_cnn())}
    # New weights reach the cached program (no stale replicated copy).
    models.set_seeded_weights(model, seed=3)
    results["reweighted_parallel"] = {"gradcam": spied_gradcam(model)}
results["reweighted_single"] = {"gradcam": spied_gradcam(model)}
$finish
save(results, observed)
""")

_JAX_CHILD = _DATA_PARALLEL_CHILD.substitute(
    spy=_JAX_SPY,
    setup="",
    scope="keras.distribution.DataParallel().scope()",
    finish='observed["devices"] = jax.device_count()',
)

# Before Keras (or anything else) initialises TensorFlow's devices.
_TF_PRELUDE = """
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

_TF_CHILD = _DATA_PARALLEL_CHILD.substitute(
    spy=_TF_SPY,
    setup='strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])',
    scope="strategy.scope()",
    finish='observed["replicas"] = strategy.num_replicas_in_sync',
)


def _child_env(**extra):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = BACKEND
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def _script(out: Path, code: str, prelude: str = "") -> Path:
    # Not named after a framework: the script's folder comes first on sys.path.
    script = out.parent / f"child_{out.name}.py"
    script.write_text(textwrap.dedent(prelude) + textwrap.dedent(_COMMON) + textwrap.dedent(code))
    return script


def _run_child(code: str, out: Path, env, prelude: str = ""):
    script = _script(out, code, prelude)
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    arrays = dict(np.load(str(out) + ".npz"))
    observed = json.loads(Path(str(out) + ".json").read_text())
    return arrays, observed


def _assert_same(arrays, run, reference, names):
    for name in names:
        for part in ("scores", "maps"):
            expected = arrays[f"{reference}/{name}/{part}"]
            actual = arrays[f"{run}/{name}/{part}"]
            assert (
                actual.shape == expected.shape == ((7, 1) if part == "scores" else (7, 12, 12, 1))
            )
            np.testing.assert_allclose(
                actual, expected, rtol=1e-5, atol=1e-6, err_msg=f"{run} {name} {part}"
            )


def _assert_all_runs(arrays):
    _assert_same(arrays, "parallel", "single", ("gradcam", "gradients", "scorecam"))
    _assert_same(arrays, "built_inside", "single", ("gradcam",))
    _assert_same(arrays, "reweighted_parallel", "reweighted_single", ("gradcam",))
    # The new weights changed the maps: the check above is not vacuous.
    before, after = arrays["single/gradcam/maps"], arrays["reweighted_single/gradcam/maps"]
    assert np.abs(before - after).max() > 1e-2
    # Real explanations, not zeros: every sample has a map with a positive peak.
    assert np.all(arrays["parallel/gradcam/maps"].max(axis=(1, 2, 3)) > 0.5)


@only_jax
def test_jax_data_parallel_equals_single_device(tmp_path):
    env = _child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    arrays, observed = _run_child(_JAX_CHILD, tmp_path / "jax", env)
    assert observed["devices"] == 2
    # Without a distribution the step sees a batch on one device; inside the
    # DataParallel scope the batch reaching the step is split over both devices.
    # gradcam's batches of 3 are padded to 4 rows: 2 per device.
    assert observed["single"] == [[1, [3, 12, 12, 3]]]
    assert observed["parallel"] == [[2, [2, 12, 12, 3]]]
    _assert_all_runs(arrays)


@only_tf
def test_tf_mirrored_strategy_equals_single_device(tmp_path):
    arrays, observed = _run_child(_TF_CHILD, tmp_path / "tf", _child_env(), _TF_PRELUDE)
    assert observed["replicas"] == 2
    # Outside the scope the step sees the whole (padded) batch of 3; inside,
    # each of the 2 replicas traces the step on its half of the batch padded to 4.
    assert observed["single"] == [[1, 3]]
    assert observed["parallel"] == [[2, 2], [2, 2]]
    _assert_all_runs(arrays)


# Before anything (even importing Keras) starts the XLA backend.
_JAX_PROCESS_PRELUDE = """
import sys
import jax

process, port = int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process)
"""

_JAX_PROCESS_CHILD = (
    _JAX_SPY
    + """
# The single-device reference is computed by the test itself.
model = models.gap_dense_cnn()
results = {}
# Each process explains its own samples: rows 0-3 and rows 4-6 (padded by the engine).
mine = slice(0, 4) if process == 0 else slice(4, 7)
with keras.distribution.DataParallel().scope():
    results["parallel"] = {"gradcam": spied_gradcam(model, mine, batch_size=4)}
observed = {"devices": jax.device_count(), "local": jax.local_device_count(),
            "parallel": seen, "rows": [mine.start, mine.stop]}
save(results, observed)
"""
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@only_jax
def test_jax_two_processes_each_get_their_own_rows(tmp_path):
    """``jax.distributed`` with 2 processes × 1 CPU device: a 2-device global mesh."""
    port = str(_free_port())
    env = _child_env()
    children = []
    for process in (0, 1):
        out = tmp_path / f"process{process}"
        script = _script(out, _JAX_PROCESS_CHILD, _JAX_PROCESS_PRELUDE)
        children.append(
            (
                out,
                subprocess.Popen(
                    [sys.executable, str(script), str(out), str(process), port],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    for _, child in children:
        try:
            _, stderr = child.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for _, other in children:
                other.kill()
            raise
        assert child.returncode == 0, stderr[-4000:]
    x = models.inputs(7)
    y = np.arange(7) % models.CLASSES
    reference = ke.explain(
        ke.methods.cams.gradcam, models.gap_dense_cnn(), x, y, batch_size=4, verbose=0,
        postprocessing=ke.filters.positive_normalize,
    )  # fmt: skip
    for out, _ in children:
        arrays = dict(np.load(str(out) + ".npz"))
        observed = json.loads(Path(str(out) + ".json").read_text())
        assert observed["devices"] == 2 and observed["local"] == 1
        # The global batch of 8 (4 rows per process) is split over both devices.
        assert observed["parallel"] == [[2, [4, 12, 12, 3]]]
        start, stop = observed["rows"]
        for part, whole in zip(("scores", "maps"), reference):
            expected = whole[start:stop]
            actual = arrays[f"parallel/gradcam/{part}"]
            assert actual.shape == expected.shape
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND == "torch", reason="Keras has no distribution API on torch")
def test_one_device_distribution_is_the_plain_step():
    """A distribution over a single device changes nothing (and raises nothing)."""
    model = models.gap_dense_cnn()
    x = models.inputs(5)
    y = np.arange(5) % models.CLASSES
    expected = ke.gradcam(model, x, y, batch_size=3, verbose=0)
    if BACKEND == "jax":
        scope = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
        scope = scope.scope()
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        scope = tf.distribute.MirroredStrategy(["/cpu:0"]).scope()
    else:
        raise AssertionError(BACKEND)
    with scope:
        actual = ke.gradcam(model, x, y, batch_size=3, verbose=0)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
    assert np.all(actual[1].max(axis=(1, 2, 3)) > 0.5)


def test_round_up_pads_to_a_multiple_of_the_devices():
    from keras_explainable.backend._common import round_up

    assert [round_up(rows, 2) for rows in (1, 2, 3, 4, 7)] == [2, 2, 4, 4, 8]
    assert round_up(5, 1) == 5 and round_up(3, 4) == 4
    assert backend.NAME == BACKEND
