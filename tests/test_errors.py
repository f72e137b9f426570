"""Bad input gets a ValueError/TypeError that names the problem and the fix.

Each test asserts on the message (``pytest.raises(match=...)``): what is wrong
and what to do about it. Errors raised while the step is traced inside
``tf.function`` / ``jax.jit`` must reach the user as the original error, not as
the framework's wrapper ("in user code: ..."). Runs under every backend.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke

try:  # tests/ as a package (python -m pytest) or as a rootdir-relative path (pytest)
    from tests import models
except ImportError:
    import models


@pytest.fixture
def model():
    return models.gap_dense_cnn()


@pytest.fixture
def x():
    return models.inputs(6, seed=5)


@pytest.fixture
def y():
    return np.arange(6) % models.CLASSES


def _raises(kind, *fragments):
    """``pytest.raises`` matching every fragment, in order, anywhere in the message."""
    pattern = ".*".join(re.escape(fragment) for fragment in fragments)
    return pytest.raises(kind, match=re.compile(pattern, re.DOTALL))


def _not_wrapped(info):
    message = str(info.value)
    assert "in user code" not in message
    assert "Traceback" not in message


# ------------------------------------------------------------------ inputs x


def test_single_sample_without_batch_axis(model, x, y):
    with _raises(ValueError, "shape (12, 12, 3) (rank 3)", "rank 4", "x[None]"):
        ke.gradcam(model, x[0], verbose=0)
    # Checked before y's rows, which a missing batch axis would miscount.
    with _raises(ValueError, "rank 3", "(samples, 12, 12, 3)", "x[None]"):
        ke.gradcam(model, x[0], y[:1], verbose=0)


def test_too_many_axes(model, x):
    with _raises(ValueError, "shape (1, 6, 12, 12, 3) (rank 5)", "(samples, 12, 12, 3)"):
        ke.gradients(model, x[None], verbose=0)


@pytest.mark.parametrize(
    "shape",
    [(10, 12, 3), (12, 10, 3), (12, 12, 4)],
    ids=["height", "width", "channels"],
)
def test_wrong_spatial_or_channel_size(model, shape):
    wrong = np.zeros((2,) + shape, "float32")
    with _raises(ValueError, f"samples of shape {shape}", "expects (12, 12, 3)", "Resize"):
        ke.gradcam(model, wrong, verbose=0)


def test_unknown_input_shape_wraps_the_framework_error():
    model = models.subclassed()  # Keras does not know its input shape
    assert ke.inspection.input_shape_of(model) is None
    wrong = models.inputs(2, c=4)
    with _raises(
        ValueError, "'subclassed' could not run on inputs of shape (12, 12, 4)", "Pass inputs"
    ) as info:
        ke.gradients(model, wrong, verbose=0)
    assert "expected axis -1" in str(info.value)  # the framework's detail comes along
    assert "\x1b[" not in str(info.value)  # without terminal colour codes
    assert isinstance(info.value.__cause__, Exception)


def test_unknown_input_shape_with_the_wrong_rank():
    model = models.subclassed()
    with _raises(ValueError, "(2, 12, 3) (rank 3)", "no spatial axes", "spatial_axis="):
        ke.gradcam(model, models.inputs(2)[:, 0], verbose=0)


def test_tabular_inputs_have_no_spatial_axes():
    inputs = keras.Input((12,))
    hidden = layers.Dense(8, name="hidden")(inputs)
    model = keras.Model(inputs, layers.Dense(3, name="out")(hidden), name="mlp")
    features = np.zeros((4, 12), "float32")
    for shortcut in (ke.gradcam, ke.gradients):
        with _raises(ValueError, "(4, 12) (rank 2)", "no spatial axes", "spatial_axis"):
            shortcut(model, features, verbose=0)


@pytest.mark.parametrize("bad, sample", [(np.nan, 4), (np.inf, 2), (-np.inf, 5)])
def test_non_finite_inputs_name_the_sample(model, x, bad, sample):
    dirty = x.copy()
    dirty[sample, 3, 7, 1] = bad
    with _raises(ValueError, f"NaN or Inf values (sample {sample})", "Clean or impute"):
        ke.gradcam(model, dirty, batch_size=4, verbose=0)


def test_non_finite_inputs_in_a_dataset_name_the_sample(model, x):
    dirty = x.copy()
    dirty[5, 0, 0, 0] = np.nan
    batches = (dirty[i : i + 2] for i in range(0, 6, 2))
    with _raises(ValueError, "(sample 5)"):
        ke.gradients(model, batches, verbose=0)


def test_empty_inputs(model, x):
    with _raises(ValueError, "`x` is empty", "at least one sample"):
        ke.gradcam(model, x[:0], verbose=0)


def test_generator_that_yields_nothing(model):
    def nothing():
        yield from ()

    with _raises(ValueError, "yielded no samples", "create a new one"):
        ke.gradcam(model, nothing(), verbose=0)


def test_exhausted_generator(model, x):
    batches = iter([x[:3], x[3:]])
    ke.gradcam(model, batches, verbose=0)
    with _raises(ValueError, "yielded no samples", "exhausted"):
        ke.gradcam(model, batches, verbose=0)


def test_batches_of_different_sample_shapes(model, x):
    batches = iter([x[:2], models.inputs(2, h=10)])
    with _raises(ValueError, "Batch 1", "(10, 12, 3)", "first batch had (12, 12, 3)"):
        ke.gradcam(model, batches, verbose=0)


@pytest.mark.parametrize(
    "value, kind", [(None, TypeError), ("images", TypeError), ({"x": 0}, TypeError)]
)
def test_inputs_of_an_unsupported_type(model, value, kind):
    with _raises(kind, "Cannot explain inputs of type", "pass a numpy array"):
        ke.gradcam(model, value, verbose=0)


def test_non_numeric_inputs(model):
    with _raises(TypeError, "dtype <U1", "pass numbers"):
        ke.gradcam(model, np.full((2, 12, 12, 3), "a"), verbose=0)


def test_ragged_list_of_samples(model, x):
    with _raises(ValueError, "could not be turned into one array", "Stack samples"):
        ke.gradcam(model, [x[0], x[0, :10]], verbose=0)


# ------------------------------------------------------------------ units y


@pytest.mark.parametrize("unit", [5, 17, -1, -3])
def test_units_out_of_range(model, x, y, unit):
    units = y.copy()
    units[3] = unit
    with _raises(ValueError, f"the unit {unit} (sample 3)", "5 units", "[0, 4]", "y=None"):
        ke.gradcam(model, x, units, batch_size=2, verbose=0)


def test_units_out_of_range_in_a_later_column(model, x, y):
    units = np.stack([y, y], axis=1)
    units[4, 1] = 9
    with _raises(ValueError, "the unit 9 (sample 4)"):
        ke.gradients(model, x, units, batch_size=4, verbose=0)


@pytest.mark.parametrize("rows", [4, 8])
def test_units_with_the_wrong_number_of_rows(model, x, rows):
    units = np.zeros(rows, "int32")
    with _raises(ValueError, f"`y` has {rows} rows but `x` has 6 samples", "one row"):
        ke.gradcam(model, x, units, verbose=0)


def test_units_with_the_wrong_number_of_rows_for_a_dataset(model, x):
    batches = (x[i : i + 2] for i in range(0, 6, 2))
    with _raises(ValueError, "`y` has 8 rows but the dataset yielded 6 samples"):
        ke.gradcam(model, batches, np.zeros(8, "int32"), verbose=0)
    batches = (x[i : i + 2] for i in range(0, 6, 2))
    with _raises(ValueError, "`y` has 4 rows, fewer than the samples"):
        ke.gradcam(model, batches, np.zeros(4, "int32"), verbose=0)


def test_units_of_rank_three(model, x, y):
    with _raises(ValueError, "got shape (6, 1, 1)", "y.reshape(len(y), -1)"):
        ke.gradcam(model, x, y[:, None, None], verbose=0)


def test_units_as_a_single_number(model, x):
    with _raises(ValueError, "single number 3", "np.full(len(x), unit)"):
        ke.gradcam(model, x, 3, verbose=0)


def test_non_integral_float_units(model, x, y):
    with _raises(TypeError, "must be integers", "such as 0.5", "argmax"):
        ke.gradcam(model, x, y + 0.5, verbose=0)
    with _raises(TypeError, "must be integers", "such as nan"):
        ke.gradcam(model, x, np.full(6, np.nan), verbose=0)


def test_one_hot_units(model, x, y):
    one_hot = np.eye(models.CLASSES, dtype=bool)[y]
    with _raises(TypeError, "bool", "labels.argmax(-1)"):
        ke.gradcam(model, x, one_hot, verbose=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_one_hot_units(model, x, y, dtype):
    """Float one-hot rows are integral, but explaining them would explain units 0 and 1."""
    one_hot = np.eye(models.CLASSES, dtype=dtype)[y]
    with _raises(TypeError, "one-hot", "labels.argmax(-1)", "y.astype(int)"):
        ke.gradcam(model, x, one_hot, verbose=0)
    with _raises(TypeError, "one-hot", "labels.argmax(-1)"):
        ke.gradients(model, iter([(x, one_hot)]), verbose=0)


def test_integral_float_units_are_unit_indices(model, x, y):
    """Integral floats that are not one-hot rows are still accepted as indices."""
    expected = ke.gradcam(model, x, y, verbose=0)
    for units in (y.astype("float32"), np.stack([y, (y + 1) % models.CLASSES], 1) * 1.0):
        scores, maps = ke.gradcam(model, x, units, verbose=0)
        np.testing.assert_allclose(scores[:, :1], expected[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(maps[..., :1], expected[1], rtol=1e-6, atol=1e-6)


def test_metrics_reject_float_one_hot_y(model, x, y):
    """The metrics share explain's validator of ``y``."""
    maps = np.random.default_rng(0).random(x.shape[:3])
    one_hot = np.eye(models.CLASSES)[y]
    with _raises(TypeError, "one-hot", "labels.argmax(-1)", "y.astype(int)"):
        ke.metrics.deletion(model, x, maps, one_hot, steps=4)
    with _raises(TypeError, "one-hot", "labels.argmax(-1)"):
        ke.metrics.average_drop(model, x, maps, one_hot)
    with _raises(TypeError, "must be integers", "such as 0.5"):
        ke.metrics.average_drop(model, x, maps, y + 0.5)
    with _raises(ValueError, "one class index per image", f"({len(x)},)"):
        ke.metrics.average_drop(model, x, maps, np.stack([y, y], 1))
    with _raises(ValueError, "the unit 9 (sample 0)", "outside", "y=None"):
        ke.metrics.average_drop(model, x, maps, np.r_[9, y[1:]])
    reference = ke.metrics.average_drop(model, x, maps, y)
    np.testing.assert_allclose(ke.metrics.average_drop(model, x, maps, y * 1.0), reference)


def test_units_from_both_y_and_the_dataset(model, x, y):
    batches = iter([(x[:3], y[:3]), (x[3:], y[3:])])
    with _raises(ValueError, "Both `y` and the dataset", "pass only one"):
        ke.gradcam(model, batches, y, verbose=0)


# ---------------------------------------------------------- batching options


@pytest.mark.parametrize(
    "batch_size, kind, fragment",
    [(0, ValueError, "got 0"), (-2, ValueError, "got -2"), (2.0, TypeError, "2.0 of type float")],
)
def test_bad_batch_size(model, x, batch_size, kind, fragment):
    with _raises(kind, "`batch_size` must be a positive int", fragment, "batch_size="):
        ke.gradcam(model, x, batch_size=batch_size, verbose=0)


def test_numpy_integer_batch_size_and_steps_are_accepted(model, x, y):
    expected = ke.gradcam(model, x, y, batch_size=4, verbose=0)
    got = ke.gradcam(model, x, y, batch_size=np.int64(4), steps=np.int32(2), verbose=0)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "steps, kind", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_steps(model, x, steps, kind):
    with _raises(kind, "`steps` must be a positive int or None", "steps="):
        ke.gradcam(model, x, steps=steps, verbose=0)


def test_bad_verbose(model, x):
    with _raises(ValueError, "`verbose`", "'yes'"):
        ke.gradcam(model, x, verbose="yes")


def test_bad_callbacks(model, x):
    with _raises(TypeError, "keras.callbacks.Callback", "got a function", "Subclass"):
        ke.gradcam(model, x, verbose=0, callbacks=[lambda logs: None])


# ---------------------------------------------------------- method and model


def test_method_not_callable(model, x):
    with _raises(TypeError, "`method` must be an explaining method", "explain(method, model"):
        ke.explain("gradcam", model, x, verbose=0)


def test_model_and_method_swapped(model, x):
    with _raises(TypeError, "takes the method first", "'gap_dense_cnn' as `method`", "swap"):
        ke.explain(model, ke.methods.cams.gradcam, x, verbose=0)


@pytest.mark.parametrize("not_a_model", [lambda t: t, "resnet50", np.zeros(3)])
def test_model_not_a_keras_model(x, not_a_model):
    with _raises(TypeError, "must be a Keras 3 model", "Build or load"):
        ke.explain(ke.methods.cams.gradcam, not_a_model, x, verbose=0)


def test_model_without_spatial_layer_for_gradcam(x):
    inputs = keras.Input((models.H, models.W, models.C))
    h = layers.Reshape((-1,), name="to_vector")(inputs)
    h = layers.Dense(8, activation="relu", name="hidden")(h)
    model = keras.Model(inputs, layers.Dense(3, name="out")(h), name="pixel_mlp")
    with _raises(
        ValueError,
        "'pixel_mlp' has no layer with a spatial output",
        "Layers looked at: to_vector (1, 432), hidden (1, 8), out (1, 3)",
        "ke.inspection.expose(model, arguments=",
    ) as info:
        ke.gradcam(model, x, verbose=0)
    _not_wrapped(info)  # raised while the step is traced


# ------------------------------------------- errors raised inside the compiled step


def _jit_options():
    options = [None]
    if ke.backend.NAME != "torch":  # torch.compile is too slow for a unit test
        options.append(True)
    return options


@pytest.mark.parametrize("jit_compile", _jit_options())
def test_method_errors_reach_the_user_unwrapped(model, x, jit_compile):
    def failing(model, inputs, indices=None, spatial_axis=(-3, -2), **params):
        raise ValueError("my method's clear message: do this instead")

    with pytest.raises(ValueError) as info:
        ke.explain(failing, model, x, verbose=0, jit_compile=jit_compile)
    assert str(info.value) == "my method's clear message: do this instead"
    _not_wrapped(info)


@pytest.mark.parametrize("jit_compile", _jit_options())
def test_wrong_map_rank_from_a_method(model, x, jit_compile):
    def scores_as_maps(model, inputs, indices=None, spatial_axis=(-3, -2), **params):
        scores = model(inputs)
        return scores, scores

    with _raises(
        ValueError, "maps of shape (6, 5) for inputs of shape (6, 12, 12, 3)", "(batch, *spatial"
    ) as info:
        ke.explain(scores_as_maps, model, x, verbose=0, jit_compile=jit_compile)
    _not_wrapped(info)


def test_cam_methods_need_a_single_signal(model, x):
    exposed = ke.inspection.expose(model, arguments=["conv1", "features"])
    with pytest.raises(ValueError, match="one") as info:
        ke.gradcam(exposed, x, verbose=0)
    _not_wrapped(info)
    assert "conv1" in str(info.value) and "features" in str(info.value)


def test_failed_call_leaves_model_usable(model, x, y):
    expected = ke.gradcam(model, x, y, verbose=0)
    with pytest.raises(ValueError):
        ke.gradcam(model, x, y + 10, verbose=0)
    with pytest.raises(ValueError):
        ke.gradcam(model, np.full_like(x, np.nan), verbose=0)
    again = ke.gradcam(model, x, y, verbose=0)
    np.testing.assert_array_equal(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])


def test_endless_pydataset_needs_steps(model, x):
    class Endless(keras.utils.PyDataset):
        @property
        def num_batches(self):
            return None

        def __getitem__(self, index):
            return x[:2]

    with _raises(ValueError, "Endless has no length", "pass `steps`"):
        ke.gradcam(model, Endless(), verbose=0)
    scores, maps = ke.gradcam(model, Endless(), steps=2, verbose=0)
    expected = ke.gradcam(model, np.concatenate([x[:2], x[:2]]), batch_size=2, verbose=0)
    np.testing.assert_allclose(maps, expected[1], rtol=1e-6, atol=1e-6)
