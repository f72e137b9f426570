"""An explicit ``outputs=`` layer in ``ke.inspection.expose`` is taken as given, except that a
``(batch, 1, 1, units)`` head (a 1x1 conv after pooling) is followed to its ``(batch, units)``."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

import keras_explainable as ke


def test_an_explicit_one_by_one_head_is_followed_to_its_flatten():
    keras.utils.set_random_seed(1)
    x = keras.Input((6, 6, 2))
    a = layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(a)
    head = layers.Conv2D(3, 1, name="head")(pooled)  # (batch, 1, 1, 3)
    model = keras.Model(x, layers.Flatten(name="flat")(layers.Dropout(0.1)(head)))
    exposed = ke.inspection.expose(model, arguments="conv", outputs="head")
    assert exposed.logits_tap.layer.name == "flat"
    batch = np.random.default_rng(0).uniform(size=(2, 6, 6, 2)).astype("float32")
    logits, activations = exposed(batch)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(model(batch)), atol=1e-6
    )
    assert tuple(activations.shape) == (2, 4, 4, 4)
    # any other layer is taken as given: a spatial one, or one by name in a dict
    assert ke.inspection.expose(model, "conv", outputs="conv").logits_tap.layer.name == "conv"
    given = ke.inspection.expose(model, "conv", outputs={"name": "head", "link": "input"})
    assert given.logits_tap.layer.name == "head" and given.logits_tap.link == "input"
