"""Occlusion and RISE against independent numpy computations, on every backend."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke
from keras_explainable.methods import perturbation
from tests import models

TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def numpy_of(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


# ----------------------------------------------------------------- numpy references


def np_conv_same_nd(x, kernel, bias):
    """'same' convolution with stride 1 and an odd kernel, any number of spatial axes."""
    spatial = x.shape[1:-1]
    half = [k // 2 for k in kernel.shape[:-2]]
    padded = np.pad(x, [(0, 0)] + [(h, h) for h in half] + [(0, 0)])
    out = np.zeros(x.shape[:-1] + (kernel.shape[-1],))
    for offset in itertools.product(*(range(k) for k in kernel.shape[:-2])):
        window = (slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, spatial))
        out += np.einsum("...c,co->...o", padded[window], kernel[offset])
    return out + bias


def np_conv_gap_dense(model):
    """numpy forward of Input -> Conv('conv', relu) -> global average pooling -> Dense('logits')."""
    conv = models.weights_of(model.get_layer("conv"))
    kernel, bias = models.weights_of(model.get_layer("logits"))

    def forward(x):
        act = np.maximum(np_conv_same_nd(np.asarray(x, np.float64), *conv), 0)
        return act.mean(axis=tuple(range(1, act.ndim - 1))) @ kernel + bias

    return forward


def np_gap_dense_forward(model):
    """numpy forward of tests.models.gap_dense_cnn."""

    def forward(x):
        act, kernel, bias = models.np_gap_dense_parts(model, np.asarray(x, np.float64))
        return act.mean(axis=(1, 2)) @ kernel + bias

    return forward


def units_rows(units, batch, classes):
    """Indices as ``(batch, U)`` rows, ``None`` meaning every class."""
    if units is None:
        return np.tile(np.arange(classes), (batch, 1))
    units = np.asarray(units)
    return units[:, None] if units.ndim == 1 else units


def np_occlusion(forward, x, units, window, stride, baseline=0.0):
    """Occlusion by brute force: hide each window, one at a time."""
    x = np.asarray(x, np.float64)
    batch, spatial = x.shape[0], x.shape[1:-1]
    clean = forward(x)
    units = units_rows(units, batch, clean.shape[-1])
    axes_starts = [
        sorted(set(range(0, size - w + 1, s)) | {size - w})
        for size, w, s in zip(spatial, window, stride)
    ]
    total = np.zeros((batch,) + spatial + (units.shape[1],))
    count = np.zeros(spatial)
    for starts in itertools.product(*axes_starts):
        region = tuple(slice(b, b + w) for b, w in zip(starts, window))
        hidden = x.copy()
        hidden[(slice(None),) + region] = np.broadcast_to(baseline, x.shape)[
            (slice(None),) + region
        ]
        drop = np.take_along_axis(clean - forward(hidden), units, axis=1)  # (batch, U)
        total[(slice(None),) + region] += drop.reshape((batch,) + (1,) * len(spatial) + (-1,))
        count[region] += 1
    scores = np.take_along_axis(clean, units, axis=1)
    return scores, total / count[..., None]


def np_rise(forward, x, units, masks, probability):
    """RISE from explicit masks: sum_i score(x * M_i) M_i / (N p)."""
    x = np.asarray(x, np.float64)
    clean = forward(x)
    units = units_rows(units, x.shape[0], clean.shape[-1])
    maps = 0.0
    for mask in masks.astype(np.float64):
        score = np.take_along_axis(forward(x * mask[None, ..., None]), units, axis=1)
        maps = maps + score.reshape((len(x),) + (1,) * mask.ndim + (-1,)) * mask[None, ..., None]
    return np.take_along_axis(clean, units, axis=1), maps / (len(masks) * probability)


# ----------------------------------------------------------------- tiny models


def conv1d_model():
    inputs = keras.Input((16, 2))
    h = layers.Conv1D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    h = layers.GlobalAveragePooling1D()(h)
    outputs = layers.Dense(4, name="logits")(h)
    return models.set_seeded_weights(keras.Model(inputs, outputs), seed=3)


def conv3d_model():
    inputs = keras.Input((6, 6, 5, 2))
    h = layers.Conv3D(3, 3, padding="same", activation="relu", name="conv")(inputs)
    h = layers.GlobalAveragePooling3D()(h)
    outputs = layers.Dense(4, name="logits")(h)
    return models.set_seeded_weights(keras.Model(inputs, outputs), seed=4)


def linear_model(shape=(8, 8, 2), classes=3):
    inputs = keras.Input(shape)
    outputs = layers.Dense(classes, name="logits")(layers.Flatten()(inputs))
    return models.set_seeded_weights(keras.Model(inputs, outputs), seed=5)


@pytest.fixture(scope="module")
def cnn():
    return models.gap_dense_cnn()


UNITS = {
    "one": np.array([0, 3, 4]),
    "three": np.array([[0, 1, 2], [4, 4, 1], [3, 0, 2]]),
    "all": None,
}


# ----------------------------------------------------------------- occlusion


@pytest.mark.parametrize("units", list(UNITS))
def test_occlusion_matches_numpy(cnn, units):
    x = models.inputs(3)
    indices = UNITS[units]
    # 12 px, window 4, stride 3: starts 0, 3, 6 and 8 (aligned with the end); 5 per pass
    # leaves a partial last chunk; (3, 5) / (2, 4) exercises per-axis values.
    for window, stride in ((4, 3), ((3, 5), (2, 4))):
        window_t = (window,) * 2 if isinstance(window, int) else window
        stride_t = (stride,) * 2 if isinstance(stride, int) else stride
        expected_scores, expected = np_occlusion(
            np_gap_dense_forward(cnn), x, indices, window_t, stride_t
        )
        scores, maps = perturbation.occlusion(
            cnn, x, indices, window=window, stride=stride, chunk_size=5
        )
        np.testing.assert_allclose(numpy_of(scores), expected_scores, **TOLERANCE)
        np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)


def test_occlusion_shared_indices_and_chunking(cnn):
    x = models.inputs(2)
    _, expected = np_occlusion(np_gap_dense_forward(cnn), x, np.array([[1, 3]] * 2), (4, 4), (4, 4))
    for per_eval in (1, 4, 1000, None):
        _, maps = perturbation.occlusion(
            cnn, x, np.array([1, 3]), indices_batch_dims=0, window=4, stride=4,
            chunk_size=per_eval,
        )  # fmt: skip
        np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)


@pytest.mark.parametrize("units", ["one", "three"])
def test_occlusion_through_explain(units):
    cnn = models.gap_dense_cnn()  # a fresh model: a fresh step cache
    x = models.inputs(5, seed=2)
    indices = UNITS[units]
    indices = np.concatenate([indices, indices[:2]])
    expected_scores, expected = np_occlusion(np_gap_dense_forward(cnn), x, indices, (4, 4), (3, 3))
    params = dict(postprocessing=None, resizing=False, window=4, stride=3, chunk_size=6)
    scores, maps = ke.explain(
        perturbation.occlusion, cnn, x, indices, batch_size=2, verbose=0, **params
    )
    np.testing.assert_allclose(scores, expected_scores, **TOLERANCE)
    np.testing.assert_allclose(maps, expected, **TOLERANCE)
    step = ke.engine.explaining.get_step(
        cnn, perturbation.occlusion, spatial_axis=(-3, -2), **params
    )
    assert step.calls == 3  # 5 samples in batches of 2, the last one padded
    if ke.backend.is_compiled_per_shape():
        assert step.traces == 1


def test_perturbation_steps_serve_any_batch_size():
    """One cached step serves several batch sizes (TensorFlow then relaxes the batch axis)."""
    cnn = models.gap_dense_cnn()
    x = models.inputs(5, seed=4)
    indices = np.array([[0, 1], [2, 3], [4, 0], [1, 1], [3, 2]])
    _, expected = np_occlusion(np_gap_dense_forward(cnn), x, indices, (4, 4), (3, 3))
    masks = perturbation.rise_masks((12, 12), **RISE)
    _, expected_rise = np_rise(np_gap_dense_forward(cnn), x, indices, masks, 0.5)
    common = dict(verbose=0, postprocessing=None, resizing=False, chunk_size=6)
    for batch_size in (2, 3, 4):
        _, maps = ke.explain(
            perturbation.occlusion, cnn, x, indices, batch_size=batch_size, window=4, stride=3,
            **common,
        )  # fmt: skip
        np.testing.assert_allclose(maps, expected, **TOLERANCE)
        _, maps = ke.explain(
            perturbation.rise, cnn, x, indices, batch_size=batch_size, **RISE, **common
        )
        np.testing.assert_allclose(maps, expected_rise, **TOLERANCE)


def test_occlusion_1d():
    model = conv1d_model()
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 2)).astype("float32")
    indices = np.array([[0, 2], [3, 1], [1, 1]])
    expected_scores, expected = np_occlusion(np_conv_gap_dense(model), x, indices, (5,), (3,))
    scores, maps = perturbation.occlusion(
        model, x, indices, spatial_axis=(-2,), window=5, stride=3, chunk_size=2
    )
    assert tuple(maps.shape) == (3, 16, 2)
    np.testing.assert_allclose(numpy_of(scores), expected_scores, **TOLERANCE)
    np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)
    _, via_explain = ke.explain(
        perturbation.occlusion, model, x, indices, verbose=0, spatial_axis=(-2,),
        postprocessing=None, resizing=False, window=(5,), stride=(3,),
    )  # fmt: skip
    np.testing.assert_allclose(via_explain, expected, **TOLERANCE)


def test_occlusion_3d():
    model = conv3d_model()
    x = np.random.default_rng(1).uniform(-1, 1, (2, 6, 6, 5, 2)).astype("float32")
    indices = np.array([[1, 3, 0], [2, 2, 0]])
    window, stride = (3, 2, 2), (3, 2, 2)
    expected_scores, expected = np_occlusion(np_conv_gap_dense(model), x, indices, window, stride)
    scores, maps = perturbation.occlusion(
        model, x, indices, spatial_axis=(-4, -3, -2), window=window, stride=stride,
        chunk_size=7,
    )  # fmt: skip
    assert tuple(maps.shape) == (2, 6, 6, 5, 3)
    np.testing.assert_allclose(numpy_of(scores), expected_scores, **TOLERANCE)
    np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)


def test_occlusion_of_a_linear_model_is_analytic():
    model = linear_model()
    kernel, bias = models.weights_of(model.get_layer("logits"))
    kernel = kernel.reshape(8, 8, 2, 3)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 2)).astype("float32")
    baseline = np.array([0.25, -0.5], "float32")  # one value per channel
    contribution = np.einsum("bhwc,hwcu->bhwu", x - baseline, kernel)  # W . (x - baseline)

    # 1x1 windows: each position's map is its own contribution.
    _, maps = perturbation.occlusion(model, x, window=1, stride=1, baseline=baseline)
    np.testing.assert_allclose(numpy_of(maps), contribution, **TOLERANCE)

    # Non-overlapping 2x4 windows: each position gets its whole window's contribution.
    _, maps = perturbation.occlusion(model, x, window=(2, 4), stride=(2, 4), baseline=baseline)
    blocks = contribution.reshape(2, 4, 2, 2, 4, 3).sum(axis=(2, 4), keepdims=True)
    expected = np.broadcast_to(blocks, (2, 4, 2, 2, 4, 3)).reshape(2, 8, 8, 3)
    np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)


def test_occlusion_by_the_input_itself_changes_nothing(cnn):
    x = models.inputs(2)
    _, maps = perturbation.occlusion(cnn, x, np.array([1, 2]), window=4, stride=4, baseline=x)
    np.testing.assert_allclose(numpy_of(maps), 0.0, atol=1e-6)


def test_occlusion_with_gaps_between_windows_leaves_zeros():
    model = linear_model()
    x = np.ones((1, 8, 8, 2), "float32")
    _, maps = perturbation.occlusion(model, x, np.array([0]), window=1, stride=(3, 8))
    maps = numpy_of(maps)[0, ..., 0]
    assert perturbation.occlusion_windows((8, 8), 1, (3, 8)) == [[0, 3, 6, 7], [0, 7]]
    probed = np.zeros((8, 8), bool)
    probed[np.ix_([0, 3, 6, 7], [0, 7])] = True
    assert np.all(maps[~probed] == 0) and np.all(maps[probed] != 0)


def test_occlusion_windows():
    assert perturbation.occlusion_windows((12, 10), window=4, stride=3) == [
        [0, 3, 6, 8],
        [0, 3, 6],
    ]
    assert perturbation.occlusion_windows((8,), window=8, stride=1) == [[0]]


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(window=(4, 4, 4)), "window"),
        (dict(window=0), "window"),
        (dict(window=2.5), "window"),
        (dict(window=(13, 2)), "larger than"),
        (dict(stride=(0, 1)), "stride"),
        (dict(stride=True), "stride"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(baseline=np.zeros((5,), "float32")), "baseline"),
        (dict(spatial_axis=(-2,)), "spatial_axis"),
    ],
)
def test_occlusion_rejects_bad_arguments(cnn, params, message):
    with pytest.raises(ValueError, match=message):
        perturbation.occlusion(cnn, models.inputs(1), **params)


# ----------------------------------------------------------------- RISE masks


def test_rise_masks_are_shifted_bilinear_upsamplings_of_the_grids():
    shape = (12, 10)
    grids, shifts = perturbation.rise_grids(shape, masks=6, cell_size=(3, 4), seed=11)
    masks = perturbation.rise_masks(shape, masks=6, cell_size=(3, 4), seed=11)
    assert masks.shape == (6, 12, 10) and grids.shape == (6, 3, 4)
    spans = (4, 3)  # ceil(12 / 3), ceil(10 / 4)
    upsampled = numpy_of(
        keras.ops.image.resize(
            grids[..., None], (4 * spans[0], 5 * spans[1]), interpolation="bilinear",
            antialias=False,
        )
    )[..., 0]  # fmt: skip
    for i, (dy, dx) in enumerate(shifts):
        assert 0 <= dy < spans[0] and 0 <= dx < spans[1]
        np.testing.assert_allclose(masks[i], upsampled[i, dy : dy + 12, dx : dx + 10], atol=1e-5)
    assert set(np.unique(grids)) <= {0.0, 1.0}


def test_rise_masks_are_reproducible():
    first = perturbation.rise_masks((9,), masks=20, cell_size=3, probability=0.3, seed=1)
    again = perturbation.rise_masks((9,), masks=20, cell_size=3, probability=0.3, seed=1)
    other = perturbation.rise_masks((9,), masks=20, cell_size=3, probability=0.3, seed=2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= 0.0 and first.max() <= 1.0
    volume = perturbation.rise_masks((4, 5, 6), masks=3, cell_size=2, seed=0)
    assert volume.shape == (3, 4, 5, 6)


# ----------------------------------------------------------------- RISE


RISE = dict(masks=30, cell_size=3, probability=0.5, seed=3)


@pytest.mark.parametrize("units", ["one", "three"])
def test_rise_matches_numpy(cnn, units):
    x = models.inputs(3)
    indices = UNITS[units]
    masks = perturbation.rise_masks((12, 12), **RISE)
    expected_scores, expected = np_rise(np_gap_dense_forward(cnn), x, indices, masks, 0.5)
    scores, maps = perturbation.rise(cnn, x, indices, chunk_size=8, **RISE)
    np.testing.assert_allclose(numpy_of(scores), expected_scores, **TOLERANCE)
    np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)
    _, via_explain = ke.explain(
        perturbation.rise, cnn, x, indices, batch_size=2, verbose=0, postprocessing=None,
        resizing=False, chunk_size=8, **RISE,
    )  # fmt: skip
    np.testing.assert_allclose(via_explain, expected, **TOLERANCE)


def test_rise_does_not_depend_on_the_chunk_size(cnn):
    x = models.inputs(2)
    results = [
        numpy_of(perturbation.rise(cnn, x, None, chunk_size=k, **RISE)[1])
        for k in (1, 7, 30, 500, None)
    ]
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-5, atol=1e-5)


def test_rise_1d_and_3d_match_numpy():
    for model, x, axes in (
        (linear_model((10, 2)), np.random.default_rng(4).uniform(0, 1, (2, 10, 2)), (-2,)),
        (conv3d_model(), np.random.default_rng(5).uniform(0, 1, (2, 6, 6, 5, 2)), (-4, -3, -2)),
    ):
        x = x.astype("float32")
        if len(axes) == 3:
            forward = np_conv_gap_dense(model)
        else:
            kernel, bias = models.weights_of(model.get_layer("logits"))
            forward = lambda v, kernel=kernel, bias=bias: v.reshape(len(v), -1) @ kernel + bias
        params = dict(masks=12, cell_size=2, probability=0.4, seed=9)
        masks = perturbation.rise_masks(x.shape[1:-1], **params)
        _, expected = np_rise(forward, x, np.array([1, 2]), masks, 0.4)
        _, maps = perturbation.rise(
            model, x, np.array([1, 2]), spatial_axis=axes, chunk_size=5, **params
        )
        np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)


def test_rise_with_all_cells_kept_is_the_clean_score(cnn):
    x = models.inputs(2)
    scores, maps = perturbation.rise(cnn, x, np.array([[0, 4], [2, 2]]), masks=5, probability=1.0)
    expected = np.broadcast_to(numpy_of(scores)[:, None, None, :], (2, 12, 12, 2))
    np.testing.assert_allclose(numpy_of(maps), expected, **TOLERANCE)


def test_rise_finds_the_region_a_model_looks_at():
    # The score is the mean of the input over rows 2-5, columns 6-9.
    region = np.zeros((12, 12, 1), "float32")
    region[2:6, 6:10] = 1.0
    inputs = keras.Input((12, 12, 1))
    outputs = layers.Dense(1, use_bias=False, name="logits")(layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.get_layer("logits").kernel.assign(region.reshape(-1, 1) / region.sum())

    x = np.ones((1, 12, 12, 1), "float32")
    _, maps = perturbation.rise(model, x, masks=600, cell_size=4, seed=0, chunk_size=200)
    maps = numpy_of(maps)[0, ..., 0]
    inside, outside = maps[2:6, 6:10], maps[region[..., 0] == 0]
    far = np.ones((12, 12), bool)  # 3 or more positions away from the region
    far[0:9, 3:12] = False
    row, column = np.unravel_index(np.argmax(maps), maps.shape)
    assert 2 <= row < 6 and 6 <= column < 10
    assert inside.mean() > outside.mean() + 0.08
    assert inside.min() > maps[far].max()


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(masks=0), "masks"),
        (dict(probability=0.0), "probability"),
        (dict(probability=1.5), "probability"),
        (dict(cell_size=(2, 0)), "cell_size"),
        (dict(cell_size=(2, 2, 2)), "cell_size"),
        (dict(chunk_size=-1), "chunk_size"),
        (dict(chunk_size=2.0), "chunk_size"),
    ],
)
def test_rise_rejects_bad_arguments(cnn, params, message):
    with pytest.raises(ValueError, match=message):
        perturbation.rise(cnn, models.inputs(1), **params)
