"""Real detectors and segmenters from KerasHub, built from small configs (no download).

``RetinaNetObjectDetector`` and ``DeepLabV3ImageSegmenter`` on a tiny ResNet
(one basic block per stage), 64 x 64 images, seeded weights. What they return:

- RetinaNet: ``{"bbox_regression": (batch, A, 4), "cls_logits": (batch, A,
  classes)}``, ``A = sum over levels P3..P5 of (64 / 2**level)**2 * 9`` anchors
  (three scales x three aspect ratios), the boxes as ``center_xywh`` offsets from
  the anchors of ``model.anchor_generator``; ``model.predict`` decodes them and
  runs non-maximum suppression (``decode_predictions``).
- DeepLabV3: the per-pixel class logits ``(batch, 64, 64, classes)``.

keras-hub is installed without its TensorFlow dependencies (README, Tests); the
module is skipped where it is not installed (CI installs it).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_explainable as ke

from .models import seeded, uninitialized

keras_hub = pytest.importorskip("keras_hub")

SIZE, CLASSES = 64, 3
FEATURES = ("retina_net_backbone", "backbone", "stack1_block0_out")  # stride 8: every level
DECODER = ("deep_lab_v3_backbone", "segmentation_head_relu")  # before the 1x1 classifier


def tiny_resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 16, 16],
        stackwise_num_blocks=[1, 1, 1, 1],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="basic_block",
        image_shape=(SIZE, SIZE, 3),
    )


def retinanet(seed=3):
    with uninitialized():  # the task compiles (an optimizer) in its constructor: outside
        backbone = keras_hub.models.RetinaNetBackbone(
            image_encoder=tiny_resnet(), min_level=3, max_level=5, use_p5=False,
            image_shape=(SIZE, SIZE, 3),
        )  # fmt: skip
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone, num_classes=CLASSES, pre_logits_num_conv_layers=1
    )
    return seeded(detector, seed)


def deeplab(seed=5):
    with uninitialized():
        backbone = keras_hub.models.DeepLabV3Backbone(
            image_encoder=tiny_resnet(), spatial_pyramid_pooling_key="P4", upsampling_size=4,
            dilation_rates=[1, 2], low_level_feature_key="P2", projection_filters=8,
            image_shape=(SIZE, SIZE, 3),
        )  # fmt: skip
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=CLASSES)
    return seeded(segmenter, seed)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def detector():
    return retinanet()


def np_decoded_boxes(model, deltas):
    """The model's own anchors, and its center_xywh offsets decoded to its box format, numpy."""
    levels = model.anchor_generator(np.zeros((1, SIZE, SIZE, 3), "float32"))
    anchors = np.concatenate([keras.ops.convert_to_numpy(a) for a in levels.values()], 0)
    assert model.anchor_generator.bounding_box_format == model.bounding_box_format == "yxyx"
    anchors = anchors.astype(np.float64)[:, [1, 0, 3, 2]]  # yxyx -> xyxy
    size = anchors[:, 2:] - anchors[:, :2]
    center = (anchors[:, :2] + anchors[:, 2:]) / 2
    middle = deltas[..., :2] * size + center
    half = np.exp(deltas[..., 2:]) * size / 2
    return np.concatenate([middle - half, middle + half], -1)[..., [1, 0, 3, 2]]  # -> yxyx


def np_iou_yxyx(boxes, box):
    top_left = np.maximum(boxes[..., :2], box[:2])
    bottom_right = np.minimum(boxes[..., 2:], box[2:])
    overlap = np.prod(np.clip(bottom_right - top_left, 0, None), -1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), -1)  # noqa: E731
    return overlap / (area(boxes) + area(box) - overlap)


@pytest.mark.slow
def test_retinanet_detection_with_no_configuration(detector, images):
    outputs = detector(images, training=False)  # predict() decodes and suppresses
    anchors = sum((SIZE // 2**level) ** 2 for level in (3, 4, 5)) * 9
    assert sorted(outputs) == ["bbox_regression", "cls_logits"]
    assert tuple(outputs["cls_logits"].shape) == (2, anchors, CLASSES)
    assert tuple(outputs["bbox_regression"].shape) == (2, anchors, 4)
    logits = keras.ops.convert_to_numpy(outputs["cls_logits"]).astype(np.float64)
    deltas = keras.ops.convert_to_numpy(outputs["bbox_regression"]).astype(np.float64)
    boxes = np_decoded_boxes(detector, deltas)  # (2, anchors, 4), yxyx like model.predict's

    # explain the detections whose decoded boxes are these (as model.predict would return them)
    chosen = np.array([100, 700])
    box = boxes[np.arange(2), chosen].astype("float32")
    best = np.array([np_iou_yxyx(boxes[b], box[b]).argmax() for b in range(2)])
    y = np.array([2, 0])
    # the default layer: the stride-8 stage every pyramid level (and so both heads) reads
    # (convention=False: the two outputs are outputs, not [logits, activations])
    (tap,) = ke.inspection.activation_taps(detector, convention=False)
    assert tap.path == FEATURES and tap.link == "output"
    scores, maps = ke.gradcam(
        detector, images, y, target=ke.targets.detection(box=box), batch_size=2, verbose=0
    )
    np.testing.assert_allclose(scores[:, 0], logits[np.arange(2), best, y], rtol=1e-4, atol=1e-4)
    assert maps.shape == (2, SIZE, SIZE, 1) and np.isfinite(maps).all()
    assert (boxes[np.arange(2), best] == boxes[np.arange(2), chosen]).all()


@pytest.mark.slow
def test_deeplab_segmentation_gives_finite_maps(images):
    segmenter = deeplab()
    # training=False, as explain runs it: with training=None this model's pyramid pooling
    # runs its batch norms in training mode (and updates their statistics)
    logits = keras.ops.convert_to_numpy(segmenter(images, training=False)).astype(np.float64)
    assert logits.shape == (2, SIZE, SIZE, CLASSES)
    y = np.array([1, 2])
    # the default layer: the decoder's last features, before the up-sampling and the
    # 1x1 classifier (not the input of the pyramid pooling's global-pooling branch)
    (tap,) = ke.inspection.activation_taps(segmenter)
    assert tap.path == DECODER and tap.link == "output"
    scores, maps = ke.gradcam(
        segmenter, images, y, target=ke.targets.segmentation(), batch_size=2, verbose=0
    )
    region = logits.argmax(-1) == y[:, None, None]  # the pixels assigned to each class
    expected = (logits[np.arange(2), ..., y] * region).sum(axis=(1, 2))
    np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-3, atol=1e-3)
    assert maps.shape == (2, SIZE, SIZE, 1) and np.isfinite(maps).all() and maps.max() > 0

    # explain_prediction picks and reports the same layer
    explanation = ke.explain_prediction(
        segmenter, images[1], targets=[2], target=ke.targets.segmentation()
    )
    assert explanation.layer == "/".join(DECODER)
    np.testing.assert_allclose(explanation.scores[0], expected[1], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- image + table


def signed(gradient):  # the raw gradient (a module-level function: one compiled step)
    return gradient


@pytest.fixture(scope="module")
def image_and_table():
    """A KerasHub ResNet image encoder and a tabular branch, joined before the classifier."""
    with uninitialized():
        encoder = tiny_resnet()
        image = keras.Input((SIZE, SIZE, 3), name="image")
        table = keras.Input((4,), name="table")  # e.g. age, weight and two lab values
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(encoder(image))
        tabular = keras.layers.Dense(8, activation="tanh", name="tabular")(table)
        joined = keras.layers.Concatenate()([pooled, tabular])
        logits = keras.layers.Dense(CLASSES, name="logits")(joined)
        model = keras.Model([image, table], logits, name="image_and_table")
    return seeded(model, 7)


@pytest.mark.slow
def test_image_and_table_one_map_per_input(image_and_table, images):
    model = image_and_table
    table = np.random.default_rng(4).normal(size=(2, 4)).astype("float32")
    x, y = {"image": images, "table": table}, np.array([2, 0])
    weights = [w.copy() for w in model.get_weights()]

    _, maps = ke.gradients(
        model, x, y, gradient_filter=signed, postprocessing=None, batch_size=2, verbose=0
    )
    assert sorted(maps) == ["image", "table"]
    assert maps["image"].shape == (2, SIZE, SIZE, 1) and maps["table"].shape == (2, 4, 1)

    # central differences, all in one predict: each table feature, and two pixels (all
    # channels moved: the map is the channel mean, so the difference is 3x the map; a
    # smaller step there, as a step across a ReLU's kink in the encoder bends the difference)
    eps, pixel_eps, pixels = 1e-2, 2e-3, [(5, 9), (40, 33)]
    rows_image, rows_table = [], []
    for sample in range(2):
        for sign in (1, -1):
            for feature in range(4):
                moved = table[sample].copy()
                moved[feature] += sign * eps
                rows_image.append(images[sample])
                rows_table.append(moved)
            for i, j in pixels:
                moved = images[sample].copy()
                moved[i, j] += sign * pixel_eps
                rows_image.append(moved)
                rows_table.append(table[sample])
    logits = model.predict([np.stack(rows_image), np.stack(rows_table)], verbose=0)
    logits = logits.astype(np.float64).reshape(2, 2, 6, CLASSES)  # sample, sign, row, class
    chosen = np.take_along_axis(logits, y[:, None, None, None], -1)[..., 0]
    difference = (chosen[:, 0] - chosen[:, 1]) / (2 * np.array([eps] * 4 + [pixel_eps] * 2))
    np.testing.assert_allclose(maps["table"][..., 0], difference[:, :4], rtol=2e-2, atol=2e-3)
    at_pixels = np.stack([maps["image"][:, i, j, 0] for i, j in pixels], -1)
    np.testing.assert_allclose(3 * at_pixels, difference[:, 4:], rtol=2e-2, atol=2e-3)

    # Grad-CAM: the default layer is the encoder's last stage (the pooling's input, inside
    # the KerasHub model), its one map resized to the image, the input its branch reads
    (tap,) = ke.inspection.activation_taps(model)
    assert tap.path == ("pool",) and tap.link == "input"
    scores, cams = ke.gradcam(model, x, y, batch_size=2, verbose=0)
    assert cams.shape == (2, SIZE, SIZE, 1) and np.isfinite(cams).all() and cams.max() > 0
    direct = model.predict([images, table], verbose=0)
    np.testing.assert_allclose(scores[:, 0], direct[np.arange(2), y], rtol=1e-4, atol=1e-4)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
