"""The default CAM layer of segmenters and detectors (``_dense_heads``), on tiny graphs.

Symbolic only (no forward pass, no compile): the choice reads Keras' graph.
The KerasHub DeepLabV3 and RetinaNet defaults are checked in test_keras_hub.
"""

from __future__ import annotations

import keras
import pytest
from keras import layers

import keras_explainable as ke


def default_path(model):
    (tap,) = ke.inspection.activation_taps(model, convention=False)
    assert tap.link == "output"
    return tap.path


def segmenter(activation_layer=False):
    inputs = keras.Input((16, 16, 3), name="image")
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(h)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="features")(h)
    h = layers.Dropout(0.1)(layers.UpSampling2D(2, interpolation="bilinear")(h))
    logits = layers.Conv2D(3, 1, name="classes")(h)  # the per-pixel classifier
    if activation_layer:
        logits = layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, logits)


@pytest.mark.parametrize("activation_layer", [False, True])
def test_a_segmenter_explains_the_features_its_classifier_reads(activation_layer):
    # the up-sampling (and dropout) between them only resamples the features
    assert default_path(segmenter(activation_layer)) == ("features",)


def test_a_segmenter_with_a_global_pooling_branch_is_not_a_classifier():
    """An ASPP-like image-pooling branch must not be taken for a classifier's pooling."""
    inputs = keras.Input((16, 16, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="encoder")(inputs)
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="image_pooling")(h)
    pooled = layers.UpSampling2D(16, name="broadcast")(layers.Conv2D(8, 1)(pooled))
    h = layers.Concatenate(name="pyramid")([h, pooled])
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="decoder")(h)
    model = keras.Model(inputs, layers.Conv2D(2, 1, name="classes")(h))
    assert default_path(model) == ("decoder",)


def fpn_detector(nested):
    """Three levels, a top-down pyramid, one class head shared by the levels (RetinaNet)."""
    inputs = keras.Input((32, 32, 3), name="images")
    c3 = layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", name="c3")(inputs)
    c4 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c4")(c3)
    c5 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c5")(c4)
    p5 = layers.Conv2D(8, 1, name="lateral5")(c5)
    p4 = layers.Add()([layers.Conv2D(8, 1, name="lateral4")(c4), layers.UpSampling2D()(p5)])
    p3 = layers.Add()([layers.Conv2D(8, 1, name="lateral3")(c3), layers.UpSampling2D()(p4)])
    levels = [p3, p4, p5]
    if nested:  # the pyramid as a nested model, as KerasHub builds it
        pyramid = keras.Model(inputs, levels, name="pyramid")
        outer = keras.Input((32, 32, 3), name="images")
        inputs, levels = outer, pyramid(outer)
    head = layers.Conv2D(2 * 3, 3, padding="same", name="class_head")  # 2 anchors x 3 classes
    flat = [layers.Reshape((-1, 3))(head(level)) for level in levels]
    return keras.Model(inputs, layers.Concatenate(axis=1, name="scores")(flat))


@pytest.mark.parametrize("nested", [False, True])
def test_a_detector_explains_the_stage_every_level_depends_on(nested):
    """lateral5 feeds every level through the top-down path, but P3 also reads c3 beside it:
    c3 is the latest feature every path to the heads crosses."""
    path = default_path(fpn_detector(nested))
    assert path == (("pyramid", "c3") if nested else ("c3",))


def test_classifiers_keep_their_default():
    inputs = keras.Input((16, 16, 3))
    features = layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    h = layers.GlobalAveragePooling2D(name="pool")(features)
    classifier = keras.Model(inputs, layers.Dense(3, name="logits")(h))
    (tap,) = ke.inspection.activation_taps(classifier)
    assert (tap.path, tap.link) == (("pool",), "input")
    # a 1x1-conv classifier whose (batch, 1, 1, units) output is flattened: not dense
    h = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(features)
    h = layers.Conv2D(3, 1, name="scores")(h)
    head = keras.Model(inputs, layers.Flatten()(h))
    (tap,) = ke.inspection.activation_taps(head)
    assert (tap.path, tap.link) == (("squeeze",), "input")
