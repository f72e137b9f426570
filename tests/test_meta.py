"""Meta methods (SmoothGrad / SquareGrad / VarGrad, TTA) against numpy references."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_explainable as ke
from keras_explainable.methods import cams, gradient, meta

try:
    from tests import models
    from tests.reference import linear_resize
except ImportError:  # tests/ on sys.path instead of the repository root
    import models
    from reference import linear_resize

UNITS = np.array([[1, 3], [4, 0], [2, 2]])


def _np(value):
    return ops.convert_to_numpy(value)


def _identity(g):
    return g


def _flexible_cnn(rank=2, classes=5):
    """conv -> conv('features') -> GAP -> Dense, accepting any spatial size."""
    conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[rank]
    pool = {
        1: layers.GlobalAveragePooling1D,
        2: layers.GlobalAveragePooling2D,
        3: layers.GlobalAveragePooling3D,
    }[rank]
    x = keras.Input((None,) * rank + (3,))
    h = conv(4, 3, padding="same", activation="relu", name="conv1")(x)
    h = conv(6, 3, padding="same", activation="relu", name="features")(h)
    h = pool(name="gap")(h)
    out = layers.Dense(classes, name="logits")(h)
    return models.set_seeded_weights(keras.Model(x, out, name=f"flexible_cnn_{rank}d"), seed=4)


def _recording(base, store):
    """``base``, remembering the (eager) batches and indices it was called with."""

    def method(model, inputs, indices=None, indices_axis=-1, indices_batch_dims=-1,
               spatial_axis=(-3, -2), **params):  # fmt: skip
        store.append((_np(inputs), None if indices is None else _np(indices)))
        return base(model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis,
                    **params)  # fmt: skip

    return method


# ------------------------------------------------------------------ smooth


@pytest.mark.parametrize("base, params", [(gradient.gradients, {}), (cams.gradcam, {})])
def test_smooth_without_noise_is_the_method(base, params):
    model = models.gap_dense_cnn()
    x = models.inputs(3)
    scores, maps = base(model, x, UNITS, **params)
    smoothed = meta.smooth(base, repetitions=4, noise=0.0, chunk_size=2)
    s_scores, s_maps = smoothed(model, x, UNITS, **params)
    np.testing.assert_allclose(_np(s_maps), _np(maps), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_np(s_scores), _np(scores), rtol=1e-6, atol=1e-6)
    square = meta.smooth(base, repetitions=3, noise=0.0, aggregation="square")(model, x, UNITS)
    np.testing.assert_allclose(_np(square[1]), _np(maps) ** 2, rtol=1e-5, atol=1e-8)
    variance = meta.smooth(base, repetitions=3, noise=0.0, aggregation="variance")
    np.testing.assert_allclose(_np(variance(model, x, UNITS)[1]), 0.0, atol=1e-8)

    e_scores, e_maps = ke.explain(
        smoothed, model, x, UNITS, verbose=0, postprocessing=None, resizing=False, batch_size=2
    )
    np.testing.assert_allclose(e_maps, _np(maps), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e_scores, _np(scores), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["mean", "square", "variance"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_smooth_aggregates_the_method_on_the_noisy_copies(aggregation, chunk_size):
    model = models.gap_dense_cnn()
    x = models.inputs(3)
    repetitions = 5
    store = []
    smoothed = meta.smooth(
        _recording(gradient.gradients, store), repetitions=repetitions, noise=0.2,
        aggregation=aggregation, chunk_size=chunk_size, seed=11,
    )  # fmt: skip
    scores, maps = smoothed(model, x, UNITS, gradient_filter=_identity)
    batches = np.concatenate([b for b, _ in store]).reshape((repetitions + 1,) + x.shape)
    indices = np.concatenate([i for _, i in store])
    np.testing.assert_array_equal(indices, np.tile(UNITS, (repetitions + 1, 1)))
    np.testing.assert_array_equal(batches[0], x)  # the clean group, for the scores
    assert np.abs(batches[1:] - x).min() > 0  # every copy is noisy
    per_copy = np.stack(
        [_np(gradient.gradients(model, b, UNITS, gradient_filter=_identity)[1]) for b in batches]
    ).astype(np.float64)
    noisy = per_copy[1:]
    expected = {
        "mean": noisy.mean(axis=0),
        "square": (noisy**2).mean(axis=0),
        "variance": noisy.var(axis=0),
    }[aggregation]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(_np(maps), expected, rtol=1e-4, atol=1e-5 * scale)
    clean_scores, _ = gradient.gradients(model, x, UNITS)
    np.testing.assert_allclose(_np(scores), _np(clean_scores), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("noise_type", ["relative", "absolute"])
def test_smooth_noise_has_the_documented_standard_deviation(noise_type):
    model = models.gap_dense_cnn()
    x = models.inputs(2) * np.array([1.0, 3.0], "float32")[:, None, None, None]
    store = []
    meta.smooth(
        _recording(gradient.gradients, store), repetitions=48, noise=0.15,
        noise_type=noise_type, seed=0,
    )(model, x, UNITS[:2])  # fmt: skip
    batches = store[0][0].reshape((49,) + x.shape)
    noise = (batches[1:] - x).astype(np.float64)  # (repetitions, batch, ...)
    for b in range(len(x)):
        spread = x[b].max() - x[b].min()
        expected = 0.15 * spread if noise_type == "relative" else 0.15
        assert abs(noise[:, b].std() / expected - 1) < 0.02
        assert abs(noise[:, b].mean()) < 0.02 * expected


def test_smooth_is_reproducible_with_a_seed_and_draws_fresh_noise_per_call():
    model = models.gap_dense_cnn()
    x = models.inputs(2)
    first = meta.smooth(gradient.gradients, repetitions=3, noise=0.3, seed=42)
    again = meta.smooth(gradient.gradients, repetitions=3, noise=0.3, seed=42)
    a = _np(first(model, x, UNITS[:2])[1])
    np.testing.assert_array_equal(a, _np(again(model, x, UNITS[:2])[1]))
    assert np.abs(a - _np(first(model, x, UNITS[:2])[1])).max() > 0


@pytest.mark.parametrize("base", [gradient.gradients, cams.gradcam])
def test_smooth_through_explain_keeps_the_clean_scores(base):
    model = models.gap_dense_cnn()
    x = models.inputs(3)
    smoothed = meta.smooth(base, repetitions=6, noise=0.2, chunk_size=4, seed=1)
    scores, maps = ke.explain(smoothed, model, x, UNITS, verbose=0, batch_size=2)
    clean_scores, clean_maps = ke.explain(base, model, x, UNITS, verbose=0, batch_size=2)
    np.testing.assert_allclose(scores, clean_scores, rtol=1e-5, atol=1e-5)
    assert maps.shape == clean_maps.shape and np.isfinite(maps).all()
    assert np.abs(maps - clean_maps).max() > 1e-4


def test_smooth_rejects_bad_settings():
    for kwargs in (
        {"repetitions": 0},
        {"noise": -1.0},
        {"noise_type": "gaussian"},
        {"aggregation": "median"},
        {"chunk_size": 0},
    ):
        with pytest.raises(ValueError):
            meta.smooth(gradient.gradients, **kwargs)
    with pytest.raises(TypeError):
        meta.smooth("gradients")
    with pytest.raises(TypeError):
        meta.smooth(gradient.gradients, seed="7")


# ------------------------------------------------------------------ tta


def _ramp_method(model, inputs, indices=None, indices_axis=-1, indices_batch_dims=-1,
                 spatial_axis=(-3, -2), units=2):  # fmt: skip
    """Maps (u + 1) * x[..., 0] * position along the last spatial axis: not flip-invariant."""
    del model, indices, indices_axis, indices_batch_dims, spatial_axis
    inputs = ops.convert_to_tensor(inputs)
    rank = len(inputs.shape)
    length = inputs.shape[-2]
    ramp = ops.reshape(ops.arange(length, dtype=inputs.dtype), (length, 1))
    first = inputs[..., :1] * ramp
    maps = ops.concatenate([first * (u + 1) for u in range(units)], axis=-1)
    scores = ops.mean(ops.reshape(inputs, (ops.shape(inputs)[0], -1)), axis=1, keepdims=True)
    del rank
    return ops.tile(scores, (1, units)), maps


def _np_ramp(x, units=2):
    length = x.shape[-2]
    first = x[..., :1] * np.arange(length).reshape(length, 1)
    return np.concatenate([first * (u + 1) for u in range(units)], axis=-1)


def _np_tta_ramp(x, scales, hflip):
    size = x.shape[1:-1]
    last = x.ndim - 2
    total, count = 0.0, 0
    for scale in (1.0,) + tuple(scales):
        scaled = tuple(max(1, int(round(scale * s))) for s in size)
        xs = linear_resize(x, scaled)
        for flip in (False, True) if hflip else (False,):
            view = _np_ramp(np.flip(xs, axis=last) if flip else xs)
            if flip:
                view = np.flip(view, axis=last)
            total = total + linear_resize(view, size)
            count += 1
    return total / count


def _ones_method(model, inputs, indices=None, indices_axis=-1, indices_batch_dims=-1,
                 spatial_axis=(-3, -2)):  # fmt: skip
    """Scores and maps that are all ones, whatever the inputs' size."""
    del model, indices_axis, indices_batch_dims, spatial_axis
    inputs = ops.convert_to_tensor(inputs)
    units = 1 if indices is None else indices.shape[-1]
    first = ops.ones_like(inputs[..., :1])
    maps = ops.concatenate([first] * units, axis=-1)  # (batch, *spatial, units)
    scores = ops.ones_like(ops.reshape(inputs, (ops.shape(inputs)[0], -1))[:, :units])
    return scores, maps


SIGNALS = {
    "1d": ((3, 10, 3), (-2,)),
    "2d": ((3, 8, 10, 3), (-3, -2)),
    "3d": ((2, 4, 6, 8, 3), (-4, -3, -2)),
}


@pytest.mark.parametrize("kind", list(SIGNALS))
@pytest.mark.parametrize("hflip", [True, False])
def test_tta_averages_every_pass_like_numpy(kind, hflip):
    shape, spatial_axis = SIGNALS[kind]
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype("float32")
    scales = (0.5, 1.5, 2.0)
    augmented = meta.tta(_ramp_method, scales=scales, hflip=hflip)
    scores, maps = augmented(None, x, spatial_axis=spatial_axis)
    expected = _np_tta_ramp(x, scales, hflip)
    assert _np(maps).shape == shape[:-1] + (2,)
    np.testing.assert_allclose(_np(maps), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        _np(scores), np.tile(x.reshape(len(x), -1).mean(1, keepdims=True), (1, 2)), rtol=1e-5
    )


@pytest.mark.parametrize("kind", list(SIGNALS))
def test_tta_of_all_ones_maps_is_all_ones(kind):
    shape, spatial_axis = SIGNALS[kind]
    rank = len(shape) - 2
    model = _flexible_cnn(rank)
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype("float32")
    for method in (
        meta.tta(_ones_method),
        meta.tta(_ones_method, (0.7, 3.0), resize_method="nearest"),
    ):
        _, maps = method(model, x, UNITS[: len(x)], spatial_axis=spatial_axis)
        np.testing.assert_allclose(_np(maps), 1.0, atol=1e-6)
        _, maps = ke.explain(
            method, model, x, UNITS[: len(x)], verbose=0, spatial_axis=spatial_axis,
            postprocessing=None, resizing=False,
        )  # fmt: skip
        assert maps.shape == shape[:-1] + (2,)
        np.testing.assert_allclose(maps, 1.0, atol=1e-6)


@pytest.mark.parametrize("base", [gradient.gradients, cams.gradcam])
def test_tta_without_augmentation_is_the_method(base):
    model = _flexible_cnn()
    x = models.inputs(3)
    scores, maps = base(model, x, UNITS)
    same = meta.tta(base, scales=[1.0], hflip=False)
    t_scores, t_maps = same(model, x, UNITS)
    np.testing.assert_allclose(_np(t_maps), _np(maps), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(t_scores), _np(scores), rtol=1e-6)
    e_scores, e_maps = ke.explain(
        same, model, x, UNITS, verbose=0, postprocessing=None, resizing=False, batch_size=2
    )
    np.testing.assert_allclose(e_maps, _np(maps), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e_scores, _np(scores), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base", [gradient.gradients, cams.gradcam])
def test_tta_of_a_real_method_equals_the_numpy_combination_of_its_passes(base):
    model = _flexible_cnn()
    x = models.inputs(3)
    scales = (0.5, 1.5)
    scores, base_maps = base(model, x, UNITS)
    target = _np(base_maps).shape[1:-1]
    total, count = 0.0, 0
    for scale in (1.0,) + scales:
        xs = linear_resize(x, tuple(int(round(scale * s)) for s in x.shape[1:3])).astype("float32")
        for flip in (False, True):
            view = _np(base(model, np.flip(xs, axis=2) if flip else xs, UNITS)[1])
            total = total + linear_resize(np.flip(view, axis=2) if flip else view, target)
            count += 1
    expected = total / count
    e_scores, e_maps = ke.explain(
        meta.tta(base, scales=scales), model, x, UNITS, verbose=0, postprocessing=None,
        resizing=False,
    )  # fmt: skip
    np.testing.assert_allclose(e_maps, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(e_scores, _np(scores), rtol=1e-5, atol=1e-6)


def test_smooth_and_tta_compose():
    model = _flexible_cnn()
    x = models.inputs(2)
    method = meta.tta(
        meta.smooth(cams.gradcam, repetitions=2, noise=0.0), scales=[1.0], hflip=False
    )
    _, maps = ke.explain(
        method, model, x, UNITS[:2], verbose=0, postprocessing=None, resizing=False
    )
    np.testing.assert_allclose(
        maps, _np(cams.gradcam(model, x, UNITS[:2])[1]), rtol=1e-5, atol=1e-6
    )


def test_tta_rejects_bad_settings_and_fixed_size_models():
    with pytest.raises(ValueError, match="scale"):
        meta.tta(gradient.gradients, scales=(0.5, 0.0))
    with pytest.raises(TypeError):
        meta.tta(None)
    model = models.gap_dense_cnn()  # built for 12 x 12 inputs only
    with pytest.raises(ValueError, match="keras.Input"):
        meta.tta(gradient.gradients, scales=(0.5,))(model, models.inputs(1), np.array([[0]]))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.jit of a smoothed method")
def test_smooth_inside_a_plain_jax_jit_leaves_no_tracer_behind():
    import jax

    model = models.gap_dense_cnn()
    x = models.inputs(2)
    smoothed = meta.smooth(gradient.gradients, repetitions=2, noise=0.2, seed=3)
    jitted = jax.jit(lambda batch: smoothed(model, batch, UNITS[:2])[1])
    assert np.isfinite(_np(jitted(x))).all()
    assert np.isfinite(_np(smoothed(model, x, UNITS[:2])[1])).all()  # eager use afterwards
