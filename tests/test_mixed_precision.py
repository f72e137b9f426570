"""Mixed precision: models under ``mixed_float16`` / ``mixed_bfloat16`` explain without
overflow or NaN, and their maps and scores come back as float32, close to the maps of
a float32 twin (the same weights in a float32 model).

Every method exposed at the top level of ``ke`` runs through its shortcut (``ke.explain``
with the shortcut's defaults), plus the meta methods (``smooth``, ``tta``). The stress
model is built so that float16 arithmetic in the methods overflows: its activations sum
past 65504 over the positions (XGrad-CAM, Grad-CAM++), its CAM map passes 65504 where the
model's own logits are still small, one biased layer has a zero bias (FullGrad's
normalized zero term), and float16 has no SVD (Eigen-CAM).
"""

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_explainable as ke
from keras_explainable._precision import is_narrow_float, widen

FLOAT16_MAX = 65504.0

# the methods exposed at the top level of ke (see keras_explainable/__init__.py)
SHORTCUTS = (
    "gradients",
    "gradients_x_inputs",
    "integrated_gradients",
    "full_gradients",
    "smoothgrad",
    "cam",
    "gradcam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "hirescam",
    "eigencam",
    "scorecam",
    "ablationcam",
    "occlusion",
    "rise",
)
# small settings, so that the sweep stays fast
PARAMS = {
    "integrated_gradients": dict(n_steps=4),
    "occlusion": dict(window=4, stride=3),
    "rise": dict(masks=24, cell_size=3, seed=0),
}
META = ("smooth_gradients", "tta_gradcam")
# the per-layer policy takes the same code paths: one method of each kind
PER_LAYER = ("gradients", "full_gradients", "gradcampp", "eigencam", "scorecam", "occlusion")

# (variant, how close the maps must be): pearson correlation of the whole set of
# normalized maps, their mean absolute difference, and the scores' error relative to
# the largest score. Measured (torch and TensorFlow, CPU): float16 corr >= 0.9995, mean
# difference <= 0.0025, scores 3e-4; bfloat16 (8 bits of mantissa) corr >= 0.995, mean
# difference <= 0.011, scores 7e-3. The bounds leave a margin of 2-5x.
VARIANTS = {
    "mixed_float16": dict(corr=0.995, mean_abs=0.01, score_rtol=2e-3),
    "mixed_bfloat16": dict(corr=0.98, mean_abs=0.03, score_rtol=2e-2),
    "per_layer_float16": dict(corr=0.995, mean_abs=0.01, score_rtol=2e-3),
}


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def float32_policy_after():
    """Set a global dtype policy in the test; the previous one comes back afterwards."""
    previous = keras.config.dtype_policy()
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _build_small(layer_dtype=None):
    kw = {} if layer_dtype is None else {"dtype": layer_dtype}
    x = keras.Input((None, None, 3))  # tta rescales the inputs
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1", **kw)(x)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="features", **kw)(h)
    h = layers.GlobalAveragePooling2D(name="gap", **kw)(h)
    out = layers.Dense(5, name="logits", **kw)(h)
    return keras.Model(x, out)


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32") for v in model.weights]
    model.set_weights(weights)
    return model


def _twin(build, reference, variant):
    """``build()`` under ``variant``'s dtype policy, with ``reference``'s weights."""
    previous = keras.config.dtype_policy()
    try:
        if variant == "per_layer_float16":
            model = build(layer_dtype="mixed_float16")
        else:
            keras.config.set_dtype_policy(variant)
            model = build()
    finally:
        keras.config.set_dtype_policy(previous)
    model.set_weights(reference.get_weights())
    return model


def _compute_dtype(variant):
    return "bfloat16" if variant == "mixed_bfloat16" else "float16"


def _skip_if_the_framework_lacks_half_convs(dtype):
    """Skip, naming the framework, where it cannot run a conv in ``dtype`` on this device."""
    layer = layers.Conv2D(2, 3, dtype=f"mixed_{dtype}")
    try:
        ops.convert_to_numpy(layer(np.ones((1, 5, 5, 1), "float32")))
    except (RuntimeError, NotImplementedError, TypeError) as error:
        name = keras.backend.backend()
        if name == "torch":
            import torch

            name = f"torch {torch.__version__}"
        pytest.skip(f"{name} cannot run a {dtype} convolution on this device: {error}")
    except Exception as error:  # e.g. TensorFlow's InvalidArgumentError "no OpKernel"
        if "kernel" not in str(error).lower() and "dtype" not in str(error).lower():
            raise
        pytest.skip(f"{keras.backend.backend()} has no {dtype} convolution kernel here: {error}")


def _compiled(fn, model):
    """``fn`` compiled like ``ke.explain`` compiles its step (eager JAX is slow), eager on torch."""
    return ke.backend.compile(fn, model, jit_compile=keras.backend.backend() == "jax")


def _run(name, model, x, y):
    if name == "smooth_gradients":
        # a fresh generator per twin with the same seed: both twins get the same noise
        method = ke.methods.meta.smooth(ke.methods.gradient.gradients, repetitions=2, seed=0)
        return ke.explain(method, model, x, y, postprocessing=ke.filters.normalize, verbose=0)
    if name == "tta_gradcam":
        method = ke.methods.meta.tta(ke.methods.cams.gradcam, scales=(2.0,), hflip=False)
        return ke.explain(
            method, model, x, y, postprocessing=ke.filters.positive_normalize, verbose=0
        )
    return getattr(ke, name)(model, x, y, verbose=0, **PARAMS.get(name, {}))


def _check_close(name, reference, mixed, corr, mean_abs, score_rtol):
    (s0, m0), (s1, m1) = reference, mixed
    assert m1.dtype == np.float32 and s1.dtype == np.float32, (name, m1.dtype, s1.dtype)
    assert m1.shape == m0.shape and s1.shape == s0.shape
    assert np.isfinite(m1).all() and np.isfinite(s1).all(), name
    np.testing.assert_allclose(s1, s0, rtol=0, atol=score_rtol * np.abs(s0).max())
    assert m0.std() > 0.05, f"{name}: the float32 reference maps are flat, a weak test"
    assert np.corrcoef(m0.ravel(), m1.ravel())[0, 1] >= corr, name
    assert np.abs(m0 - m1).mean() <= mean_abs, name


_REFERENCES = {}


def _reference(name, x, y):
    """The float32 twin's results, computed once per method for the whole module."""
    if name not in _REFERENCES:
        _REFERENCES[name] = _run(name, _seeded(_build_small()), x, y)
    return _REFERENCES[name]


def _inputs(n=3, size=10, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


# --------------------------------------------------------------------------- every method


@pytest.mark.parametrize("variant", tuple(VARIANTS))
def test_every_method_explains_a_mixed_precision_twin_like_float32(variant, float32_policy_after):
    _skip_if_the_framework_lacks_half_convs(_compute_dtype(variant))
    x, y = _inputs(), np.array([0, 3, 1])
    model = _twin(_build_small, _seeded(_build_small()), variant)
    assert keras.config.dtype_policy().name == "float32"  # the twin left no global policy
    assert model.get_layer("features").compute_dtype == _compute_dtype(variant)
    names = PER_LAYER if variant == "per_layer_float16" else SHORTCUTS + META
    for name in names:  # one test per variant: each test's set-up and tear-down costs
        tolerances = dict(VARIANTS[variant])
        if name == "smoothgrad":
            # the shortcut's noise generator advances on every call: the twins see other
            # noise (META's "smooth_gradients" gives both the same seed and is held tight)
            tolerances.update(corr=0.8, mean_abs=0.1)
        _check_close(name, _reference(name, x, y), _run(name, model, x, y), **tolerances)


@pytest.mark.parametrize("variant", ("mixed_float16", "mixed_bfloat16"))
def test_direct_calls_return_float32_for_every_unit(variant, float32_policy_after):
    """The methods themselves (not only explain) return float32, for several units."""
    _skip_if_the_framework_lacks_half_convs(_compute_dtype(variant))
    model = _twin(_build_small, _seeded(_build_small()), variant)
    x, units = _inputs(n=2), np.array([[0, 2], [4, 1]])
    methods = (
        ke.methods.gradient.gradients_x_inputs,
        ke.methods.gradient.full_gradients,
        ke.methods.cams.gradcampp,
        ke.methods.cams.eigencam,
    )
    for method in methods:
        scores, maps = _compiled(lambda inputs, m=method: m(model, inputs, units), model)(x)
        for value in (scores, maps):
            assert keras.backend.standardize_dtype(value.dtype) == "float32", method.__name__
            assert np.isfinite(ops.convert_to_numpy(value)).all(), method.__name__
        assert tuple(scores.shape) == (2, 2) and maps.shape[-1] == 2


# --------------------------------------------------------------------------- stress


STRESS_SIZE = 24


def _build_stress(layer_dtype=None):
    kw = {} if layer_dtype is None else {"dtype": layer_dtype}
    x = keras.Input((STRESS_SIZE, STRESS_SIZE, 3))
    h = layers.Conv2D(8, 1, activation="relu", name="features", **kw)(x)
    h = layers.GlobalAveragePooling2D(name="gap", **kw)(h)
    out = layers.Dense(5, name="logits", **kw)(h)
    return keras.Model(x, out)


def _stress_twins(float16_variant="mixed_float16"):
    """A float32 model whose activations are large, and its float16 twin.

    Every channel's activations sum to more than 65504 over the 24 x 24
    positions, a bright spot makes the CAM map pass 65504 there, and the conv's
    bias is zero (FullGrad then normalizes an all-zero term).
    """
    rng = np.random.default_rng(0)
    reference = _build_stress()
    kernel = np.abs(rng.normal(0, 1, (1, 1, 3, 8))) * 50 + 150
    dense = rng.normal(0, 1, (8, 5))
    dense[:, 0] = rng.uniform(0.5, 1.5, 8)
    weights = (kernel, np.zeros(8), dense, rng.normal(0, 1, 5))
    reference.set_weights([w.astype("float32") for w in weights])
    x = rng.uniform(0, 1, (2, STRESS_SIZE, STRESS_SIZE, 3)).astype("float32")
    x[0, 3, 5] = 50.0
    x[1, 17, 12] = 50.0
    return reference, _twin(_build_stress, reference, float16_variant), x


# the methods that overflowed (cam, xgradcam, gradcampp: an all-zero map or NaN), failed
# (eigencam: no float16 SVD) or gave NaN (full_gradients) before they widened to float32
STRESSED = ("cam", "gradcampp", "xgradcam", "eigencam", "full_gradients")


def test_the_stress_model_overflows_float16_only_inside_the_methods(float32_policy_after):
    """The premise of the stress tests: the float16 model itself is fine."""
    reference, model, x = _stress_twins()
    features = keras.Model(reference.inputs, reference.get_layer("features").output)
    activations = ops.convert_to_numpy(features(x))
    kernel = reference.get_layer("logits").get_weights()[0]
    assert activations.max() < FLOAT16_MAX  # representable ...
    assert activations.sum(axis=(1, 2)).min() > FLOAT16_MAX  # ... but not their sums
    assert (activations @ kernel[:, 0]).max() > FLOAT16_MAX  # CAM of unit 0 overflows
    logits = ops.convert_to_numpy(ops.cast(model(x), "float32"))
    expected = ops.convert_to_numpy(reference(x))
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(logits, expected, rtol=2e-3, atol=2.0)


def test_methods_compute_the_overflowing_parts_in_float32(float32_policy_after):
    _skip_if_the_framework_lacks_half_convs("float16")
    reference, model, x = _stress_twins()
    y = np.array([0, 0])
    for name in STRESSED:
        (s0, m0), (s1, m1) = (getattr(ke, name)(m, x, y, verbose=0) for m in (reference, model))
        assert m1.dtype == np.float32 and s1.dtype == np.float32, name
        assert np.isfinite(m1).all() and np.isfinite(s1).all(), name
        assert m0.max() == pytest.approx(1.0), name  # a real map, not an all-zero one
        np.testing.assert_allclose(m1, m0, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(s1, s0, rtol=2e-3, err_msg=name)


def test_raw_cam_above_the_float16_range_comes_back_exactly(float32_policy_after):
    """Without normalization: the map values themselves pass 65504."""
    _skip_if_the_framework_lacks_half_convs("float16")
    reference, model, x = _stress_twins()
    y = np.array([0, 0])
    _, m0 = ke.explain(ke.methods.cams.cam, reference, x, y, verbose=0)
    _, m1 = ke.explain(ke.methods.cams.cam, model, x, y, verbose=0)
    assert m0.max() > FLOAT16_MAX and np.isfinite(m1).all()
    np.testing.assert_allclose(m1, m0, rtol=2e-3, atol=2e-3 * m0.max())


def test_scorecam_class_softmax_of_large_float16_logits(float32_policy_after):
    """Logits in the thousands: the softmax over classes is taken in float32."""
    _skip_if_the_framework_lacks_half_convs("float16")
    reference, model, x = _stress_twins()
    y = np.array([0, 0])
    results = [
        ke.scorecam(m, x, y, softmax="classes", chunk_size=8, verbose=0) for m in (reference, model)
    ]
    (s0, m0), (s1, m1) = results
    assert np.abs(s0).max() > 1000
    assert np.isfinite(m1).all() and m1.dtype == np.float32
    np.testing.assert_allclose(m1, m0, atol=2e-3)


# --------------------------------------------------------------------------- pieces


def test_widen_casts_only_narrow_floats():
    for dtype in ("float16", "bfloat16"):
        tensor = ops.ones((2, 3), dtype=dtype)
        assert is_narrow_float(tensor.dtype)
        assert keras.backend.standardize_dtype(widen(tensor).dtype) == "float32"
    for dtype in ("float32", "float64", "int32"):
        tensor = ops.ones((2, 3), dtype=dtype)
        assert not is_narrow_float(tensor.dtype)
        assert widen(tensor) is tensor  # the float32 path: no cast, no copy


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_normalize_of_narrow_maps_is_finite_and_keeps_the_dtype(dtype):
    flat = ke.filters.normalize(ops.full((1, 4, 4, 1), 3.0, dtype=dtype))
    assert keras.backend.standardize_dtype(flat.dtype) == dtype
    np.testing.assert_array_equal(ops.convert_to_numpy(ops.cast(flat, "float32")), 0.0)
    # a range of 80000 overflows float16 when taken in float16
    values = np.linspace(-40000, 40000, 16, dtype="float32").reshape(1, 4, 4, 1)
    out = ops.convert_to_numpy(ops.cast(ke.filters.normalize(ops.cast(values, dtype)), "float32"))
    expected = ops.convert_to_numpy(ke.filters.normalize(values))
    np.testing.assert_allclose(out, expected, atol=1e-2)


def _float16_method(model, inputs, indices=None, spatial_axis=(-3, -2), **kwargs):
    """A user method that returns float16 maps up to 30000 (and no model call)."""
    del model, indices, kwargs
    maps = 30000.0 * ke.filters.normalize(ops.mean(inputs, axis=-1, keepdims=True), spatial_axis)
    return ops.zeros((ops.shape(inputs)[0], 1)), ops.cast(maps, "float16")


def test_meta_methods_aggregate_float16_maps_in_float32():
    x, y = _inputs(n=2), np.array([1, 2])
    _, base = _float16_method(None, x, y)
    base = ops.convert_to_numpy(ops.cast(base, "float32")).astype("float64")

    squared = ke.methods.meta.smooth(
        _float16_method, repetitions=2, noise=0.0, aggregation="square"
    )
    _, maps = squared(None, x, y)  # squares up to 9e8: inf in float16
    assert keras.backend.standardize_dtype(maps.dtype) == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(maps), base**2, rtol=1e-6)

    augmented = ke.methods.meta.tta(_float16_method, scales=(1.0,), hflip=True)
    _, maps = augmented(None, x, y)  # the sum of 4 passes reaches 120000: inf in float16
    maps = ops.convert_to_numpy(maps)
    assert maps.dtype == np.float32 and np.isfinite(maps).all()
    np.testing.assert_allclose(maps, base, rtol=1e-6)


def test_float16_inputs_give_float32_maps():
    """Input gradients arrive in the inputs' dtype: float16 inputs, float32 maps."""
    model, x = _seeded(_build_small()), _inputs(n=2)
    y = np.array([0, 3])
    for method in (ke.methods.gradient.gradients, ke.methods.gradient.integrated_gradients):
        params = {"n_steps": 4} if method is ke.methods.gradient.integrated_gradients else {}
        explained = _compiled(lambda inputs, m=method, p=params: m(model, inputs, y, **p), model)
        _, m16 = explained(x.astype("float16"))
        _, m32 = explained(x)
        assert keras.backend.standardize_dtype(m16.dtype) == "float32"
        m16, m32 = ops.convert_to_numpy(m16), ops.convert_to_numpy(m32)
        # float16 inputs are themselves rounded (to ~5e-4 here)
        np.testing.assert_allclose(m16, m32, atol=3e-2 * np.abs(m32).max())
