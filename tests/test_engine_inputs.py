"""``ke.explain`` takes every kind of input and gives the same numbers for each.

The reference of every test is the run on a plain numpy array (itself checked
against the numpy Grad-CAM of ``models.np_gradcam_gap_dense``): datasets,
tensors, generators, odd batch sizes, callbacks and caching must not change a
single value. The suite runs under every backend; TensorFlow and torch are
installed under all three, so ``tf.data`` and ``DataLoader`` inputs are tested
under JAX and torch too.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest

import keras_explainable as ke
from keras_explainable.engine import explaining

try:  # tests/ as a package (python -m pytest) or as a rootdir-relative path (pytest)
    from tests import models
except ImportError:
    import models

N = 10
BATCH = 4


@pytest.fixture
def model():
    return models.gap_dense_cnn()


@pytest.fixture
def x():
    return models.inputs(N, seed=3)


@pytest.fixture
def units():
    return np.stack([np.arange(N) % models.CLASSES, (np.arange(N) + 2) % models.CLASSES], axis=1)


def np_gradcam(model, x, units):
    """The expected output of ``ke.gradcam`` (ReLU + spatial max-normalization)."""
    act, kernel, bias = models.np_gap_dense_parts(model, x)
    logits = act.mean(axis=(1, 2)) @ kernel + bias
    maps = models.np_gradcam_gap_dense(act, kernel, units)
    maps = np.maximum(maps, 0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    maps = np.where(peak > 0, maps / np.where(peak > 0, peak, 1), 0)
    return np.take_along_axis(logits, units, axis=1), maps


def assert_same(result, expected):
    """Same scores and maps: the engine must not change a value."""
    for got, want in zip(result, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def gradcam_step(model):
    return explaining.get_step(
        model,
        ke.methods.cams.gradcam,
        spatial_axis=(-3, -2),
        postprocessing=ke.filters.positive_normalize,
        resizing=True,
    )


@pytest.fixture
def reference(model, x, units):
    """The numpy-array run, checked against the numpy Grad-CAM."""
    result = ke.gradcam(model, x, units, batch_size=BATCH, verbose=0)
    scores, maps = np_gradcam(model, x, units)
    np.testing.assert_allclose(result[0], scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result[1], maps, rtol=1e-4, atol=1e-4)
    assert result[1].shape == (N, models.H, models.W, 2)
    return result


def tf_or_skip():
    return pytest.importorskip("tensorflow")


def torch_or_skip():
    return pytest.importorskip("torch")


# ----------------------------------------------------------------- input kinds


def test_backend_tensors(model, x, units, reference):
    tensors = (keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(units))
    assert_same(ke.gradcam(model, *tensors, batch_size=BATCH, verbose=0), reference)


def test_tf_dataset_of_inputs_with_y(model, x, units, reference):
    tf = tf_or_skip()
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(BATCH)
    assert_same(ke.gradcam(model, dataset, units, verbose=0), reference)


def test_tf_dataset_of_inputs_and_units(model, x, units, reference):
    tf = tf_or_skip()
    dataset = tf.data.Dataset.from_tensor_slices((x, units)).batch(BATCH)
    assert_same(ke.gradcam(model, dataset, verbose=0), reference)


def test_tf_dataset_unbatched_size_from_batch_size(model, x, units, reference):
    tf = tf_or_skip()
    # A dataset batched differently from batch_size is re-cut to batch_size.
    dataset = tf.data.Dataset.from_tensor_slices((x, units)).batch(5)
    assert_same(ke.gradcam(model, dataset, batch_size=BATCH, verbose=0), reference)


class ArrayDataset(keras.utils.PyDataset):
    def __init__(self, x, units=None, batch_size=BATCH):
        super().__init__()
        self.x, self.units, self.batch_size = x, units, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        if self.units is None:
            return self.x[rows]
        return self.x[rows], self.units[rows]


def test_pydataset(model, x, units, reference):
    assert_same(ke.gradcam(model, ArrayDataset(x, units), verbose=0), reference)
    assert_same(ke.gradcam(model, ArrayDataset(x), units, verbose=0), reference)


def test_torch_dataloader(model, x, units, reference):
    torch = torch_or_skip()
    from torch.utils.data import DataLoader, TensorDataset

    pairs = TensorDataset(torch.from_numpy(x), torch.from_numpy(units))
    assert_same(ke.gradcam(model, DataLoader(pairs, batch_size=BATCH), verbose=0), reference)
    inputs_only = TensorDataset(torch.from_numpy(x))
    loader = DataLoader(inputs_only, batch_size=BATCH)
    assert_same(ke.gradcam(model, loader, units, verbose=0), reference)


def test_generator_with_steps(model, x, units, reference):
    def forever():
        while True:
            for start in range(0, N, BATCH):
                yield x[start : start + BATCH], units[start : start + BATCH]

    result = ke.gradcam(model, forever(), steps=3, verbose=0)
    assert_same(result, reference)


def test_generator_without_steps_stops_when_exhausted(model, x, units, reference):
    batches = ((x[i : i + BATCH], units[i : i + BATCH]) for i in range(0, N, BATCH))
    assert_same(ke.gradcam(model, batches, verbose=0), reference)


def test_steps_limit_array_input(model, x, units, reference):
    scores, maps = ke.gradcam(model, x, units, batch_size=BATCH, steps=2, verbose=0)
    assert scores.shape == (2 * BATCH, 2)
    assert_same((scores, maps), (reference[0][: 2 * BATCH], reference[1][: 2 * BATCH]))


# ----------------------------------------------------------------------- units


def test_one_unit_per_sample(model, x, units, reference):
    scores, maps = ke.gradcam(model, x, units[:, 0], batch_size=BATCH, verbose=0)
    assert scores.shape == (N, 1)
    assert_same((scores, maps), (reference[0][:, :1], reference[1][..., :1]))


def test_all_units_when_y_is_none(model, x):
    every = np.tile(np.arange(models.CLASSES), (N, 1))
    expected = np_gradcam(model, x, every)
    scores, maps = ke.gradcam(model, x, None, batch_size=BATCH, verbose=0)
    assert scores.shape == (N, models.CLASSES)
    np.testing.assert_allclose(scores, expected[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps, expected[1], rtol=1e-4, atol=1e-4)


def test_float_integral_y_is_accepted(model, x, units, reference):
    result = ke.gradcam(model, x, units.astype("float32"), batch_size=BATCH, verbose=0)
    assert_same(result, reference)


# ---------------------------------------------------------- batching and tracing


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 10, 32])
def test_batch_sizes_give_the_same_numbers(model, x, units, reference, batch_size):
    scores, maps = ke.gradcam(model, x, units, batch_size=batch_size, verbose=0)
    assert scores.shape == (N, 2) and maps.shape == reference[1].shape
    np.testing.assert_allclose(scores, reference[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps, reference[1], rtol=1e-5, atol=1e-5)


def test_partial_last_batch_is_padded_and_traced_once(model, x, units):
    scores, maps = ke.gradcam(model, x, units, batch_size=BATCH, verbose=0)
    assert scores.shape == (N, 2) and maps.shape[0] == N
    step = gradcam_step(model)
    assert step.calls == 3  # batches of 4, 4 and 2 (padded to 4)
    if ke.backend.NAME == "torch":
        # PyTorch runs eagerly: the step's body runs once per batch.
        assert step.traces == 3
    else:
        assert step.traces == 1
    ke.gradcam(model, x[:7], units[:7], batch_size=BATCH, verbose=0)
    assert gradcam_step(model) is step
    assert step.calls == 5
    assert step.traces == (5 if ke.backend.NAME == "torch" else 1)


def test_dataset_rebatched_to_batch_size_fills_every_step(model, x, units, reference):
    tf = tf_or_skip()
    dataset = tf.data.Dataset.from_tensor_slices((x, units)).batch(5)  # 5 + 5 rows
    assert_same(ke.gradcam(model, dataset, batch_size=BATCH, verbose=0), reference)
    step = gradcam_step(model)
    # Steps of 4, 4 and 2 (padded) as for the array, not 4, 1, 4, 1.
    assert step.calls == 3 + 3  # the reference run, then this one
    assert step.traces == (6 if ke.backend.NAME == "torch" else 1)


def test_generator_of_uneven_batches(model, x, units, reference):
    cuts = [0, 1, 6, 7, 10]
    batches = ((x[a:b], units[a:b]) for a, b in zip(cuts, cuts[1:]))
    assert_same(ke.gradcam(model, batches, batch_size=BATCH, verbose=0), reference)


def test_one_step_serves_different_unit_counts(model, x, units):
    # One cached step, three input signatures: all units, one and two per sample.
    every = ke.gradcam(model, x, batch_size=BATCH, verbose=0)
    one = ke.gradcam(model, x, units[:, 0], batch_size=BATCH, verbose=0)
    two = ke.gradcam(model, x, units, batch_size=BATCH, verbose=0)
    assert every[1].shape[-1] == models.CLASSES and one[1].shape[-1] == 1
    for column in range(2):
        picked = np.take_along_axis(every[1], units[:, None, None, column : column + 1], axis=-1)
        np.testing.assert_allclose(two[1][..., column : column + 1], picked, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one[1], two[1][..., :1], rtol=1e-6, atol=1e-6)
    step = gradcam_step(model)
    assert step.calls == 9
    assert step.traces == (9 if ke.backend.NAME == "torch" else 3)


def counting(method):
    """``method`` that counts how often its Python body runs (traces, or eager calls)."""

    def counted(model, inputs, **params):
        counted.runs += 1
        return method(model, inputs, **params)

    counted.runs = 0
    return counted


def test_force_retraces_and_cache_reuses(model, x, units):
    method = counting(ke.methods.cams.gradcam)
    first = ke.explain(method, model, x, units, batch_size=BATCH, verbose=0)
    step = explaining.get_step(
        model, method, spatial_axis=(-3, -2), postprocessing=None, resizing=True
    )
    runs = method.runs
    again = ke.explain(method, model, x, units, batch_size=BATCH, verbose=0)
    assert_same(again, first)
    same = explaining.get_step(
        model, method, spatial_axis=(-3, -2), postprocessing=None, resizing=True
    )
    assert same is step and step.calls == 6
    forced = ke.explain(method, model, x, units, batch_size=BATCH, verbose=0, force=True)
    assert_same(forced, first)
    rebuilt = explaining.get_step(
        model, method, spatial_axis=(-3, -2), postprocessing=None, resizing=True
    )
    assert rebuilt is not step and rebuilt.calls == 3
    if ke.backend.NAME == "torch":  # eager: one run per batch, no tracing
        assert method.runs == 3 * runs
    else:
        assert runs == 1
        assert method.runs == 2  # force=False reused the trace, force=True traced again


def test_cached_step_is_never_reused_for_another_method(model, x, units):
    cams = ke.explain(ke.methods.cams.gradcam, model, x, units, batch_size=BATCH, verbose=0)
    grads = ke.explain(ke.methods.gradient.gradients, model, x, units, batch_size=BATCH, verbose=0)
    direct = ke.methods.gradient.gradients(model, x, units)
    np.testing.assert_allclose(grads[0], keras.ops.convert_to_numpy(direct[0]), rtol=1e-5)
    np.testing.assert_allclose(
        grads[1], keras.ops.convert_to_numpy(direct[1]), rtol=1e-4, atol=1e-7
    )
    assert grads[1].shape == (N, models.H, models.W, 2)
    expected = models.np_gradcam_gap_dense(*models.np_gap_dense_parts(model, x)[:2], units)
    np.testing.assert_allclose(cams[1], expected, rtol=1e-4, atol=1e-4)
    # And back: gradcam after gradients is still Grad-CAM.
    again = ke.explain(ke.methods.cams.gradcam, model, x, units, batch_size=BATCH, verbose=0)
    assert_same(again, cams)


def test_shortcuts_gradients_and_gradcam_accept_every_input(model, x, units):
    tf = tf_or_skip()
    base = ke.gradients(model, x, units, batch_size=BATCH, verbose=0)
    raw = ke.methods.gradient.gradients(model, x, units)
    expected = ke.filters.normalize(raw[1])
    np.testing.assert_allclose(base[1], keras.ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((x, units)).batch(BATCH)
    assert_same(ke.gradients(model, dataset, verbose=0), base)
    tensors = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(units)
    assert_same(ke.gradients(model, *tensors, batch_size=BATCH, verbose=0), base)
    assert_same(ke.gradients(model, ArrayDataset(x, units), verbose=0), base)


# ------------------------------------------------------ progress and callbacks


def test_verbose_prints_a_progress_bar(model, x, units, capsys):
    ke.gradcam(model, x, units, batch_size=BATCH, verbose=1)
    out = capsys.readouterr().out
    assert "3/3" in out


def test_verbose_progress_bar_for_a_generator_of_unknown_length(model, x, units, capsys):
    batches = ((x[i : i + BATCH], units[i : i + BATCH]) for i in range(0, N, BATCH))
    ke.gradcam(model, batches, verbose=1)
    assert "3/Unknown" in capsys.readouterr().out


def test_verbose_zero_prints_nothing(model, x, units, capsys):
    ke.gradcam(model, x, units, batch_size=BATCH, verbose=0)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []
        self.outputs = []

    def on_predict_begin(self, logs=None):
        self.events.append("begin")

    def on_predict_batch_begin(self, batch, logs=None):
        self.events.append(f"batch_begin {batch}")

    def on_predict_batch_end(self, batch, logs=None):
        self.events.append(f"batch_end {batch}")
        self.outputs.append(logs["outputs"])

    def on_predict_end(self, logs=None):
        self.events.append("end")


def test_callbacks_receive_predict_hooks_and_outputs(model, x, units, reference):
    recorder = Recorder()
    result = ke.gradcam(model, x, units, batch_size=BATCH, verbose=0, callbacks=[recorder])
    assert_same(result, reference)
    assert recorder.events == [
        "begin",
        "batch_begin 0",
        "batch_end 0",
        "batch_begin 1",
        "batch_end 1",
        "batch_begin 2",
        "batch_end 2",
        "end",
    ]
    assert [len(scores) for scores, _ in recorder.outputs] == [4, 4, 2]
    batch_scores = np.concatenate([scores for scores, _ in recorder.outputs])
    batch_maps = np.concatenate([maps for _, maps in recorder.outputs])
    assert_same((batch_scores, batch_maps), reference)


# --------------------------------------------------------------- no mutation


def _flags(array):
    names = ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA", "WRITEABLE", "ALIGNED")
    return {name: array.flags[name] for name in names}


def _layer_state(model):
    return {
        "/".join(path): sorted(layer.__dict__)
        for path, layer in ke.inspection.flatten_layers(model)
    }


@pytest.mark.parametrize(
    "shortcut",
    [ke.gradcam, ke.gradients, ke.cam],
    ids=["gradcam", "gradients", "cam"],
)
def test_user_arrays_and_model_are_not_modified(model, x, units, shortcut):
    x_read_only = x.copy()
    x_read_only.setflags(write=False)
    y = units.astype("int64")
    y.setflags(write=False)
    x_before, y_before = x_read_only.copy(), y.copy()
    x_flags, y_flags = _flags(x_read_only), _flags(y)
    weights = [w.copy() for w in model.get_weights()]
    model_keys = sorted(model.__dict__)
    layer_state = _layer_state(model)
    variables = [v.path for v in model.variables]

    shortcut(model, x_read_only, y, batch_size=BATCH, verbose=0)
    shortcut(model, x_read_only, y[:, 0], batch_size=3, verbose=0)

    np.testing.assert_array_equal(x_read_only, x_before)
    np.testing.assert_array_equal(y, y_before)
    assert x_read_only.dtype == np.float32 and y.dtype == np.int64
    assert _flags(x_read_only) == x_flags and _flags(y) == y_flags
    for now, before in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(now, before)
    assert [v.path for v in model.variables] == variables
    assert sorted(model.__dict__) == model_keys
    assert _layer_state(model) == layer_state


def test_writable_arrays_are_not_modified(model, x, units):
    x_float64 = x.astype("float64")
    copies = x.copy(), x_float64.copy(), units.copy()
    ke.gradcam(model, x, units, batch_size=3, verbose=0)
    ke.gradients(model, x_float64, units, batch_size=3, verbose=0)
    for array, original in zip((x, x_float64, units), copies):
        np.testing.assert_array_equal(array, original)
        assert array.dtype == original.dtype
        assert array.flags.writeable


def test_model_copy_gives_same_result(model, x, units, reference):
    # The engine keeps no per-model state that could leak into a copy.
    clone = keras.models.clone_model(model)
    clone.set_weights(copy.deepcopy(model.get_weights()))
    assert_same(ke.gradcam(clone, x, units, batch_size=BATCH, verbose=0), reference)


def test_the_step_cache_does_not_keep_models_alive(x, units):
    import gc
    import weakref

    model = models.gap_dense_cnn()
    ke.gradcam(model, x, units, batch_size=BATCH, verbose=0)
    assert gradcam_step(model).calls == 3
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_engine_forward_and_backend_name(model, x):
    """The upper rooms' door to the backend: outputs without gradients, and its name."""
    outputs = ke.engine.forward(model, x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(outputs), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    assert ke.engine.backend_name() == keras.backend.backend()
