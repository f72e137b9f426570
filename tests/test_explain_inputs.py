"""``ke.explain_prediction`` on a multi-input model: one InputExplanation per input.

One tiny image + features model for the module; the maps are checked against
``ke.explain`` on the same batch (the same compiled step: explain_prediction is
``ke.explain`` with one sample).
"""

from __future__ import annotations

import keras
import matplotlib
import numpy as np
import pytest
from keras import layers
from PIL import Image

import keras_explainable as ke
from keras_explainable.explanation import InputsExplanation

from .models import set_seeded_weights

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def model():
    image = keras.Input((16, 16, 3), name="image")
    features = keras.Input((4,), name="features")
    h = layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(image)
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    t = layers.Dense(5, activation="tanh", name="tabular")(features)
    logits = layers.Dense(3, name="logits")(layers.Concatenate()([h, t]))
    return set_seeded_weights(keras.Model([image, features], logits, name="two_inputs"), seed=3)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (16, 16, 3)).astype("float32"), rng.normal(size=4).astype("float32")


def test_gradients_give_a_map_per_input(model, sample):
    image, features = sample
    kept = (image.copy(), features.copy())
    names = ["age", "weight", "lab a", "lab b"]
    found = ke.explain_prediction(
        model, [image, features], method="gradients", top_k=2, feature_names=names
    )
    assert isinstance(found, InputsExplanation) and list(found) == ["image", "features"]
    logits = keras.ops.convert_to_numpy(model([image[None], features[None]]))[0]
    top = list(np.argsort(-logits)[:2])
    assert list(found.target_ids) == top and found.layer is None
    np.testing.assert_allclose(found.scores, logits[top], rtol=1e-5)

    # the same maps as ke.gradients on the batch of one
    _, maps = ke.gradients(model, [image[None], features[None]], np.array([top]), verbose=0)
    picture, vector = found["image"], found["features"]
    assert picture.kind == "image" and picture.heatmaps.shape == (2, 16, 16)
    assert vector.kind == "features" and vector.heatmaps.shape == (2, 4)
    np.testing.assert_allclose(picture.heatmaps, np.moveaxis(maps[0][0], -1, 0), atol=1e-6)
    np.testing.assert_allclose(vector.heatmaps, np.moveaxis(maps[1][0], -1, 0), atol=1e-6)
    assert found[1] is vector and sorted(found.keys()) == ["features", "image"]

    # a table, largest |weight| first; an overlay for the image; one figure for both
    table = vector.table(1)
    assert [row[0] for row in table] == [names[i] for i in np.argsort(-vector.heatmaps[1])]
    assert [row[1] for row in table] == [float(features[names.index(r[0])]) for r in table]
    assert picture.overlay(1).size == (16, 16)
    figure = found.figure()
    assert len(figure.axes) == 4  # 2 classes x 2 inputs
    assert found._repr_png_().startswith(b"\x89PNG")
    np.testing.assert_array_equal(image, kept[0])
    np.testing.assert_array_equal(features, kept[1])


def test_a_cam_belongs_to_its_branch_input(model, sample):
    image, features = sample
    picture = Image.fromarray((image * 255).astype("uint8"))
    found = ke.explain_prediction(
        model, {"features": features[None], "image": picture}, preprocessing="scale01"
    )
    assert found.layer == "conv" and list(found) == ["image", "features"]
    np.testing.assert_allclose(found["image"].values, np.asarray(picture) / 255.0, atol=1e-6)
    _, cams = ke.gradcam(
        model, [found["image"].values[None], features[None]], np.array(found.target_ids),
        verbose=0,
    )  # fmt: skip
    np.testing.assert_allclose(found["image"].heatmaps[0], cams[0, ..., 0], atol=1e-5)
    assert found["features"].heatmaps is None and "branch" in found["features"].note
    assert "features (features)" in repr(found)


def test_bad_input(model, sample):
    image, features = sample
    with pytest.raises(ValueError, match="missing \\['features'\\]"):
        ke.explain_prediction(model, {"image": image})
    with pytest.raises(ValueError, match="'features'.*shape"):
        ke.explain_prediction(model, [image, features[:3]])
    with pytest.raises(TypeError, match="not a picture"):
        ke.explain_prediction(model, [image, Image.new("RGB", (4, 4))])
    with pytest.raises(ValueError, match="2 names for the input 'features'"):
        ke.explain_prediction(model, [image, features], method="gradients", feature_names="ab")
    with pytest.raises(ValueError, match="takes no `layer`"):
        ke.explain_prediction(model, [image, features], method="gradients", layer="conv")
    found = ke.explain_prediction(model, [image, features], method="gradients")
    with pytest.raises(TypeError, match="table\\(\\)"):
        found["features"].overlay()
    with pytest.raises(KeyError, match="'image', 'features'"):
        found["images"]
