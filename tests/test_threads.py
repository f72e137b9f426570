"""Explaining from many threads at once, as a web app serving one model does.

Several threads share one model: some call ``model(x)`` and ``model.predict``,
others run different methods (each installing taps on the model's layers). Every
prediction and every map must equal its single-threaded twin, no thread may
raise, and the model must be exactly as it was afterwards. Run cold (the first,
tracing calls race each other) and warm (every step compiled beforehand).
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable import _taps
from tests import models

ROUNDS = 3  # calls per thread; the threads start together at a barrier


def _model():
    # Two CAM layers, a skip connection and a Flatten: taps on several layers.
    return models.residual_cnn()


def _layer_state(model):
    """Every layer's instance attributes and its weights, to prove nothing changed."""
    state = {
        # FullGrad reroutes fused activations while it runs: the same object must be back
        layer.name: (sorted(layer.__dict__), "call" in layer.__dict__, id(layer.activation))
        if hasattr(layer, "activation")
        else (sorted(layer.__dict__), "call" in layer.__dict__)
        for layer in model._flatten_layers(include_self=True)
    }
    weights = [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]
    return state, weights


def _jobs(x, y, other):
    """name -> a call returning numpy arrays; each is one kind of thread's work."""
    jobs = {"call": lambda model: keras.ops.convert_to_numpy(model(other, training=False))}
    if keras.backend.backend() != "jax":
        # Keras' JAX `model.predict` takes the weights off the model while it runs
        # (plain `model(x)` in another thread fails too): not usable concurrently.
        jobs["predict"] = lambda model: model.predict(other, verbose=0)
    return {
        **jobs,
        "gradcam": lambda model: ke.gradcam(model, x, y, verbose=0)[1],
        "gradients": lambda model: ke.gradients(model, x, y, verbose=0)[1],
        "scorecam": lambda model: ke.scorecam(model, x, y, verbose=0)[1],
        "layercam_all_units": lambda model: ke.layercam(model, x, None, verbose=0)[1],
        # taps on every biased layer, and their fused activations rerouted while it runs
        "full_gradients": lambda model: ke.full_gradients(model, x, y, verbose=0)[1],
    }


def _run_threads(model, jobs, expected, threads_per_job=1):
    barrier = threading.Barrier(len(jobs) * threads_per_job)
    failures: list[str] = []
    mismatches: list[str] = []

    def work(name, job):
        try:
            barrier.wait(timeout=120)
            for round_ in range(ROUNDS):
                result = job(model)
                if not np.allclose(result, expected[name], rtol=1e-4, atol=1e-5):
                    error = float(np.max(np.abs(result - expected[name])))
                    mismatches.append(f"{name} (round {round_}): max |error| {error:.3g}")
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            failures.append(f"{name}: {type(error).__name__}: {error}")

    threads = [
        threading.Thread(target=work, args=(name, job), name=f"{name}-{copy}")
        for name, job in jobs.items()
        for copy in range(threads_per_job)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not failures, "threads raised:\n" + "\n".join(failures)
    assert not mismatches, "results differ from single-threaded runs:\n" + "\n".join(mismatches)


@pytest.fixture(scope="module")
def data():
    x = models.inputs(4, seed=3)
    y = np.array([0, 1, 2, 3])
    other = models.inputs(4, seed=9)
    return x, y, other


def _single_threaded(data):
    x, y, other = data
    model = _model()
    jobs = _jobs(x, y, other)
    return {name: job(model) for name, job in jobs.items()}


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_threads_mixing_predictions_and_methods_match_single_threaded(data, warm):
    expected = _single_threaded(data)
    keras.backend.clear_session()
    model = _model()  # a fresh model: nothing compiled or cached for it yet
    jobs = _jobs(*data)
    if warm:
        for job in jobs.values():
            job(model)
    before = _layer_state(model)
    # What Keras itself adds to a model on its first predict (not ours to judge).
    twin = _model()
    keras_added = set(twin.__dict__)
    if "predict" in jobs:
        twin.predict(data[2], verbose=0)
    keras_added = set(twin.__dict__) - keras_added
    _run_threads(model, jobs, expected, threads_per_job=2 if warm else 1)
    after = _layer_state(model)
    names, has_call = after[0][model.name]
    after[0][model.name] = (sorted(set(names) - keras_added), has_call)
    names, has_call = before[0][model.name]
    before[0][model.name] = (sorted(set(names) - keras_added), has_call)
    assert after[0] == before[0], "a layer's attributes changed"
    for old, new in zip(before[1], after[1]):
        np.testing.assert_array_equal(old, new)
    assert _taps.installed_layers() == 0
    assert not any("call" in layer.__dict__ for layer in model._flatten_layers())


def test_a_tap_is_invisible_to_other_threads_while_installed():
    """While one thread is inside a tapped block, another thread's forward pass
    on the same layers sees the plain model (and the tap sees only its own)."""
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    plain = keras.ops.convert_to_numpy(model(x))
    layer = model.get_layer("features")
    inside, release = threading.Event(), threading.Event()
    seen = []

    def zero_features(position, output):
        seen.append(threading.current_thread().name)
        return output * 0.0

    def tapper():
        with _taps.tapped([_taps.Tap(layer)], zero_features):
            zeroed = keras.ops.convert_to_numpy(model(x))
            inside.set()
            release.wait(timeout=60)
        tapped_results.append(zeroed)

    tapped_results = []
    thread = threading.Thread(target=tapper, name="tapper")
    thread.start()
    assert inside.wait(timeout=60)
    try:
        assert "call" in layer.__dict__  # the wrapper is installed...
        other = keras.ops.convert_to_numpy(model(x))  # ...but transparent here
    finally:
        release.set()
        thread.join(timeout=60)
    np.testing.assert_allclose(other, plain, rtol=1e-6)
    bias = keras.ops.convert_to_numpy(model.get_layer("logits").bias)
    np.testing.assert_allclose(tapped_results[0], np.broadcast_to(bias, plain.shape), atol=1e-6)
    assert seen == ["tapper"]
    assert "call" not in layer.__dict__  # removed with the last block


def test_nested_blocks_compose_and_unwind():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    layer = model.get_layer("features")
    order = []

    def outer(position, output):
        order.append("outer")
        return output + 1.0

    def inner(position, output):
        order.append("inner")
        return output * 2.0

    with _taps.tapped([_taps.Tap(layer)], outer):
        with _taps.tapped([_taps.Tap(layer)], inner):
            nested = keras.ops.convert_to_numpy(model(x))
        assert _taps.installed_layers() == 1
    assert _taps.installed_layers() == 0
    assert order == ["outer", "inner"]  # the outer block acts closest to the layer
    features = keras.Model(model.inputs, layer.output)
    head = keras.Sequential([model.get_layer("gap"), model.get_layer("logits")])
    want = keras.ops.convert_to_numpy(head((features(x) + 1.0) * 2.0))
    np.testing.assert_allclose(nested, want, rtol=1e-5, atol=1e-5)


def test_a_user_call_attribute_is_restored():
    """A layer whose instance already had its own ``call`` gets it back."""
    model = models.gap_dense_cnn()
    layer = model.get_layer("features")
    own = layer.call
    object.__setattr__(layer, "call", own)
    try:
        with _taps.tapped([_taps.Tap(layer)], lambda position, output: output):
            model(models.inputs(1))
            assert layer.__dict__["call"] is not own
        assert layer.__dict__["call"] is own
    finally:
        object.__delattr__(layer, "call")


def test_a_failing_forward_pass_unwinds_the_tap():
    model = models.gap_dense_cnn()
    layer = model.get_layer("features")

    def fail(position, output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with _taps.tapped([_taps.Tap(layer)], fail):
            model(models.inputs(1))
    assert "call" not in layer.__dict__
    assert _taps.installed_layers() == 0


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's predict detaches weights")
def test_jax_weights_taken_off_by_keras_predict_give_a_clear_error():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    ke.gradcam(model, x, [0, 1], verbose=0)  # compiled
    saved = [v.value for v in model.variables]
    # What Keras' JAX predict/fit do to a model while they run.
    model._purge_model_variables(trainable_variables=True, non_trainable_variables=True)
    try:
        with pytest.raises(RuntimeError, match=r"model.predict.*lock"):
            ke.gradcam(model, x, [0, 1], verbose=0)
    finally:
        for variable, value in zip(model.variables, saved):
            variable.assign(value)
    ke.gradcam(model, x, [0, 1], verbose=0)
