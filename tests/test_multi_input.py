"""Multi-input models: ``x`` a list, tuple or dict matching ``model.inputs``.

One tiny image + tabular model (built once per module: on JAX each new model
or shape costs an XLA compile) is checked against numpy: per-input gradients
against central finite differences, Grad-CAM on the image branch against its
closed form, occlusion of the features against scoring by hand, Integrated
Gradients' completeness. Then the engine: dicts, generators with and without
``y``, padding, compile-once, ``maps_file`` per input, integer inputs, every
bad input, nothing mutated, and targets on a two-input two-output model.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from keras import layers

import keras_explainable as ke
from keras_explainable.methods import gradient, meta, perturbation

from .conftest import BACKEND

N, H, W, C, F = 5, 6, 6, 2, 3
Y = np.array([1, 2, 0, 3, 1])


def identity(g):
    return g


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(11)
    image = keras.Input((H, W, C), name="image")
    features = keras.Input((F,), name="features")
    h = layers.Conv2D(3, 3, padding="same", activation="tanh", name="conv")(image)
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    t = layers.Dense(3, activation="tanh", name="tab")(features)
    z = layers.Concatenate()([h, t])
    logits = layers.Dense(4, name="logits")(z)
    return keras.Model([image, features], logits, name="image_tabular")


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(5)
    return [
        rng.uniform(-1, 1, (N, H, W, C)).astype("float32"),
        rng.uniform(-1, 1, (N, F)).astype("float32"),
    ]


def predict(model, image, features):
    return np.asarray(keras.ops.convert_to_numpy(model([image, features], training=False)))


def explain_gradients(model, x, **kw):
    kw.setdefault("postprocessing", None)
    kw.setdefault("verbose", 0)
    return ke.explain(gradient.gradients, model, x, Y, gradient_filter=identity, **kw)


@pytest.fixture(scope="module")
def grads(model, x):
    return explain_gradients(model, x, batch_size=2)


def test_gradients_per_input_equal_finite_differences(model, x, grads):
    scores, maps = grads
    assert isinstance(maps, list) and len(maps) == 2
    assert maps[0].shape == (N, H, W, 1) and maps[1].shape == (N, F, 1)
    rows = np.arange(N)
    np.testing.assert_allclose(scores[:, 0], predict(model, *x)[rows, Y], atol=1e-5)
    eps = 1e-2

    def difference(which, index):
        plus = [a.copy() for a in x]
        minus = [a.copy() for a in x]
        plus[which][(slice(None), *index)] += eps
        minus[which][(slice(None), *index)] -= eps
        return (predict(model, *plus)[rows, Y] - predict(model, *minus)[rows, Y]) / (2 * eps)

    features = np.stack([difference(1, (f,)) for f in range(F)], axis=1)
    np.testing.assert_allclose(maps[1][..., 0], features, atol=2e-3)
    for i, j in [(0, 0), (2, 3), (5, 5)]:  # the image map: the mean over its channels
        channels = np.mean([difference(0, (i, j, c)) for c in range(C)], axis=0)
        np.testing.assert_allclose(maps[0][:, i, j, 0], channels, atol=2e-3)


def test_dict_and_tuple_inputs_keep_their_structure(model, x, grads):
    _, maps = explain_gradients(model, {"features": x[1], "image": x[0]})
    assert isinstance(maps, dict) and set(maps) == {"image", "features"}
    np.testing.assert_allclose(maps["image"], grads[1][0], atol=1e-6)
    np.testing.assert_allclose(maps["features"], grads[1][1], atol=1e-6)
    _, maps = explain_gradients(model, tuple(x))
    assert isinstance(maps, tuple)
    np.testing.assert_allclose(maps[1], grads[1][1], atol=1e-6)


def test_padding_gives_the_maps_of_one_big_batch(model, x, grads):
    scores, maps = explain_gradients(model, x, batch_size=N)  # one batch, no padding
    np.testing.assert_allclose(scores, grads[0], atol=1e-6)
    for padded, whole in zip(grads[1], maps):
        np.testing.assert_allclose(padded, whole, atol=1e-6)


def test_generators_yield_structures_with_and_without_y(model, x, grads):
    def with_y():
        for i in range(0, N, 2):
            yield (x[0][i : i + 2], x[1][i : i + 2]), Y[i : i + 2]

    def dicts():
        for i in range(0, N, 3):
            yield {"image": x[0][i : i + 3], "features": x[1][i : i + 3]}

    scores, maps = ke.explain(
        gradient.gradients, model, with_y(), gradient_filter=identity, verbose=0,
        postprocessing=None, batch_size=2,
    )  # fmt: skip
    np.testing.assert_allclose(maps[1], grads[1][1], atol=1e-6)
    # no y in the elements: y given alongside, re-batched to 2 (the last batch padded)
    scores, maps = explain_gradients(model, dicts(), batch_size=2)
    np.testing.assert_allclose(scores, grads[0], atol=1e-6)
    assert isinstance(maps, dict)  # the structure of the elements
    np.testing.assert_allclose(maps["image"], grads[1][0], atol=1e-6)


def test_compiled_once_for_every_batch(model, x):
    calls = []

    def counting(model, inputs, **params):
        calls.append(1)
        return gradient.gradients(model, inputs, **params)

    counting.__wrapped_method__ = gradient.gradients
    ke.explain(counting, model, x, Y, batch_size=2, verbose=0)  # 3 batches, the last padded
    assert len(calls) == (3 if BACKEND == "torch" else 1)  # torch runs eagerly


def test_inputs_chooses_what_is_explained(model, x, grads):
    _, maps = explain_gradients(model, x, inputs="features")
    assert maps[0] is None
    np.testing.assert_allclose(maps[1], grads[1][1], atol=1e-6)
    _, maps = explain_gradients(model, {"image": x[0], "features": x[1]}, inputs=[0])
    assert set(maps) == {"image", "features"} and maps["features"] is None


def test_maps_file_one_file_per_input(model, x, grads, tmp_path):
    path = tmp_path / "maps.npy"
    _, maps = explain_gradients(model, x, batch_size=2, maps_file=path)
    assert sorted(os.listdir(tmp_path)) == ["maps.features.npy", "maps.image.npy"]
    np.testing.assert_allclose(np.load(tmp_path / "maps.image.npy"), grads[1][0], atol=1e-6)
    np.testing.assert_allclose(maps[1], grads[1][1], atol=1e-6)
    with pytest.raises(ValueError, match="already exists"):
        explain_gradients(model, x, maps_file=path)


def test_gradcam_on_the_image_branch(model, x):
    exposed = ke.inspection.expose(model, arguments="conv")
    scores, maps = ke.gradcam(exposed, x, Y, postprocessing=None, verbose=0)
    activations = predict(keras.Model(model.inputs, model.get_layer("conv").output), *x)
    kernel = keras.ops.convert_to_numpy(model.get_layer("logits").kernel)[:3]  # image part
    weights = kernel[:, Y].T / (H * W)  # d logit / d activation, spatially constant: (N, 3)
    expected = np.einsum("nhwk,nk->nhw", activations, weights)  # Grad-CAM, no ReLU
    assert maps.shape == (N, H, W, 1)  # resized to the only image input
    np.testing.assert_allclose(maps[..., 0], expected, atol=1e-5)


def test_occlusion_of_each_input(model, x):
    scores, maps = ke.explain(
        perturbation.occlusion, model, x, Y, window=(3, 3), stride=(3, 3), verbose=0,
        batch_size=2,
    )  # fmt: skip
    rows = np.arange(N)
    clean = predict(model, *x)[rows, Y]
    for f in range(F):
        hidden = x[1].copy()
        hidden[:, f] = 0
        np.testing.assert_allclose(
            maps[1][:, f, 0], clean - predict(model, x[0], hidden)[rows, Y], atol=1e-5
        )
    hidden = x[0].copy()
    hidden[:, 3:, :3] = 0
    np.testing.assert_allclose(
        maps[0][:, 4, 1, 0], clean - predict(model, hidden, x[1])[rows, Y], atol=1e-5
    )


def test_integrated_gradients_completeness_over_inputs(model, x):
    scores, maps = ke.explain(
        gradient.integrated_gradients, model, x, Y, n_steps=64, postprocessing=None, verbose=0
    )
    total = maps[0].reshape(N, -1).sum(1) + maps[1].reshape(N, -1).sum(1)
    zero = predict(model, np.zeros_like(x[0]), np.zeros_like(x[1]))[np.arange(N), Y]
    np.testing.assert_allclose(total, scores[:, 0] - zero, atol=1e-3)


def test_smoothgrad_without_noise_is_gradients(model, x, grads):
    method = meta.smooth(gradient.gradients, repetitions=2, noise=0.0)
    _, maps = ke.explain(
        method, model, x, Y, gradient_filter=identity, postprocessing=None, verbose=0,
        batch_size=2,
    )  # fmt: skip
    np.testing.assert_allclose(maps[1], grads[1][1], atol=1e-6)
    np.testing.assert_allclose(maps[0], grads[1][0], atol=1e-6)


# --------------------------------------------------------------------- integer inputs


@pytest.fixture(scope="module")
def coded():
    """An image + categorical code model (the code through an Embedding)."""
    keras.utils.set_random_seed(12)
    image = keras.Input((H, W, C), name="image")
    code = keras.Input((1,), dtype="int32", name="code")
    h = layers.GlobalAveragePooling2D()(layers.Conv2D(3, 3, padding="same", name="conv")(image))
    e = layers.Flatten()(layers.Embedding(4, 2)(code))
    logits = layers.Dense(3)(layers.Concatenate()([h, e]))
    return keras.Model([image, code], logits)


def test_integer_inputs_are_skipped_or_explained_at_their_embedding(coded, x):
    codes = np.array([[0], [3], [1], [2], [1]])
    _, maps = ke.gradients(coded, [x[0], codes], Y % 3, verbose=0)
    assert maps[1] is None and maps[0].shape == (N, H, W, 1)
    # named in inputs=: the code is explained at its Embedding (docs/text.md); occlusion
    # by tokens replaces it with id 0: the map is the score lost, re-scored by hand
    _, maps = ke.occlusion(
        coded, [x[0], codes], Y % 3, inputs=["code"], postprocessing=None, verbose=0
    )
    assert maps[0] is None and maps[1].shape == (N, 1, 1)
    rows = np.arange(N)
    scores = keras.ops.convert_to_numpy(coded([x[0], codes]))[rows, Y % 3]
    hidden = keras.ops.convert_to_numpy(coded([x[0], np.zeros_like(codes)]))[rows, Y % 3]
    np.testing.assert_allclose(maps[1][:, 0, 0], scores - hidden, atol=1e-5)


# --------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda x: {"image": x[0]},
            ValueError,
            r"missing \['features'\].*'features': \(samples, 3\)",
        ),
        (
            lambda x: {"image": x[0], "feature": x[1]},
            ValueError,
            r"missing \['features'\].*extra 'feature' \(did you mean 'features'\?\)",
        ),
        (lambda x: [x[0]], ValueError, r"holds 1 arrays.*missing \['features'\]"),
        (lambda x: [x[0], x[1], x[1]], ValueError, "holds 3 arrays.*1 extra"),
        (lambda x: [x[0], x[1][:, :2]], ValueError, r"'features'.*\(5, 2\).*\(samples, 3\)"),
        (lambda x: [x[0][0], x[1]], ValueError, r"'image'.*add the batch axis"),
        (lambda x: [x[0], x[1][:3]], ValueError, "different numbers of samples"),
        (lambda x: x[0], TypeError, "list, tuple or dict of arrays"),
    ],
)
def test_bad_structures(model, x, make, error, match):
    with pytest.raises(error, match=match):
        ke.gradients(model, make(x), Y, verbose=0)


def test_bad_inputs_argument(model, x):
    with pytest.raises(ValueError, match="'feature'.*Did you mean 'features'"):
        ke.gradients(model, x, Y, inputs="feature", verbose=0)
    with pytest.raises(ValueError, match="position 2"):
        ke.gradients(model, x, Y, inputs=[2], verbose=0)
    single = keras.Sequential([keras.Input((F,)), layers.Dense(2)])
    with pytest.raises(ValueError, match="takes one input"):
        ke.gradients(single, x[1], inputs="features", verbose=0)


def test_nothing_is_mutated(model, x):
    before = [a.copy() for a in x]
    given = {"image": x[0], "features": x[1]}
    weights = [w.copy() for w in model.get_weights()]
    ke.gradients(model, given, Y, verbose=0)
    ke.explain(perturbation.occlusion, model, given, Y, window=3, stride=3, verbose=0)
    assert list(given) == ["image", "features"]
    for a, b in zip(x, before):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------- targets


def test_targets_compose_with_multi_input(model, x):
    """``output("aux")`` of a two-input two-output model = its single-output twin."""
    image, features = model.inputs
    aux = layers.Dense(2, name="aux")(model.get_layer("tab").output)
    two = keras.Model([image, features], [model.outputs[0], aux])
    twin = keras.Model([image, features], aux)
    _, maps = ke.explain(
        gradient.gradients, two, x, Y % 2, target=ke.targets.output("aux"),
        gradient_filter=identity, postprocessing=None, verbose=0,
    )  # fmt: skip
    _, expected = ke.explain(
        gradient.gradients, twin, x, Y % 2, gradient_filter=identity, postprocessing=None,
        verbose=0,
    )  # fmt: skip
    np.testing.assert_allclose(maps[1], expected[1], atol=1e-6)
    np.testing.assert_allclose(maps[0], 0.0, atol=1e-7)  # aux does not see the image


# --------------------------------------------------------------------- data parallel

_PARALLEL_CHILD = """
from keras import layers

keras.utils.set_random_seed(3)
image = keras.Input((6, 6, 2), name="image")
features = keras.Input((3,), name="features")
h = layers.GlobalAveragePooling2D()(layers.Conv2D(3, 3, padding="same", activation="tanh")(image))
t = layers.Dense(3, activation="tanh")(features)
two = keras.Model([image, features], layers.Dense(4)(layers.Concatenate()([h, t])))
rng = np.random.default_rng(1)
xs = [rng.uniform(-1, 1, (7, 6, 6, 2)), rng.uniform(-1, 1, (7, 3))]
xs = [a.astype("float32") for a in xs]
ys = np.arange(7) % 4

def run():  # batches of 3: each padded to 4 rows for 2 devices
    return ke.gradients(two, xs, ys, batch_size=3, verbose=0)

single = run()
{setup}
with {scope}:
    parallel = run()
np.savez(OUT + ".npz", scores=single[0], image=single[1][0], features=single[1][1],
         p_scores=parallel[0], p_image=parallel[1][0], p_features=parallel[1][1])
with open(OUT + ".json", "w") as file:
    json.dump({{"devices": {devices}}}, file)
"""


@pytest.mark.skipif(BACKEND == "torch", reason="data parallelism runs on JAX and TensorFlow")
def test_data_parallel_equals_one_device(tmp_path):
    from .test_distributed import _TF_PRELUDE, _child_env, _run_child

    if BACKEND == "jax":
        code = _PARALLEL_CHILD.format(
            setup="import jax", scope="keras.distribution.DataParallel().scope()",
            devices="jax.device_count()",
        )  # fmt: skip
        env, prelude = _child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"), ""
    else:
        code = _PARALLEL_CHILD.format(
            setup='strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])',
            scope="strategy.scope()", devices="strategy.num_replicas_in_sync",
        )  # fmt: skip
        env, prelude = _child_env(), _TF_PRELUDE
    arrays, observed = _run_child(code, tmp_path / "multi", env, prelude)
    assert observed["devices"] == 2
    assert arrays["image"].shape == (7, 6, 6, 1) and arrays["features"].shape == (7, 3, 1)
    for name in ("scores", "image", "features"):
        np.testing.assert_allclose(arrays[f"p_{name}"], arrays[name], rtol=1e-5, atol=1e-6)
