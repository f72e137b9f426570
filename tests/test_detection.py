"""``ke.targets.detection`` on a tiny fake detector, against numpy.

The detector is linear: ``flatten(x) @ W + c`` reshaped into class scores
``(batch, 6 detections, 3 classes)`` and box offsets ``(batch, 6, 4)`` from six
fixed anchors (``center_xywh`` encoding, decoded by a user ``decode``). Its
input gradients are columns of ``W``, so every expected map has a closed form;
the IoU term's gradient is checked against central finite differences of a
numpy forward pass.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops

import keras_explainable as ke
from keras_explainable.methods import gradient

from .models import set_seeded_weights, weights_of

N, DETECTIONS, CLASSES = 3, 6, 3
SHAPE = (4, 4, 2)
ANCHORS = np.array(  # xyxy, on a 16 x 16 image
    [[0, 0, 8, 8], [4, 4, 12, 12], [8, 8, 16, 16], [0, 8, 8, 16], [8, 0, 16, 8], [2, 2, 14, 14]],
    "float32",
)
CHOSEN = np.array([2, 5, 0])  # the detection each sample's reference box comes from


def identity(g):
    return g


def _decode(deltas, xp):
    """center_xywh offsets from ANCHORS -> xyxy boxes (numpy or keras.ops)."""
    anchors = ANCHORS.astype("float64") if xp is np else ops.convert_to_tensor(ANCHORS)
    size = anchors[:, 2:] - anchors[:, :2]
    center = (anchors[:, :2] + anchors[:, 2:]) / 2
    middle = deltas[..., :2] * size + center
    half = xp.exp(deltas[..., 2:]) * size / 2
    return xp.concatenate([middle - half, middle + half], axis=-1)


def decode(deltas):
    return _decode(deltas, ops)


@pytest.fixture(scope="module")
def detector():
    inputs = keras.Input(SHAPE)
    flat = layers.Flatten()(inputs)
    cls = layers.Reshape((DETECTIONS, CLASSES), name="cls")(
        layers.Dense(DETECTIONS * CLASSES, name="cls_dense")(flat)
    )
    deltas = layers.Reshape((DETECTIONS, 4), name="deltas")(
        layers.Dense(DETECTIONS * 4, name="box_dense")(flat)
    )
    model = keras.Model(inputs, {"cls": cls, "deltas": deltas}, name="fake_detector")
    return set_seeded_weights(model, seed=4, scale=0.2)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(6).uniform(-1, 1, (N, *SHAPE)).astype("float32")


def np_forward(model, x):
    """``(class scores, decoded xyxy boxes)`` in float64."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    kc, bc = (np.asarray(w, np.float64) for w in weights_of(model.get_layer("cls_dense")))
    kb, bb = (np.asarray(w, np.float64) for w in weights_of(model.get_layer("box_dense")))
    scores = (flat @ kc + bc).reshape(len(x), DETECTIONS, CLASSES)
    deltas = (flat @ kb + bb).reshape(len(x), DETECTIONS, 4)
    return scores, _decode(deltas, np)


def np_iou(boxes, box):
    """IoU of xyxy ``boxes (..., 4)`` with one xyxy ``box (4,)``."""
    top_left = np.maximum(boxes[..., :2], box[:2])
    bottom_right = np.minimum(boxes[..., 2:], box[2:])
    overlap = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return overlap / (area(boxes) + area(box) - overlap)


def column_map(model, detections, classes):
    """The input gradient of score (detection, class): a column of W, channel mean."""
    kernel = weights_of(model.get_layer("cls_dense"))[0]
    columns = kernel[:, np.asarray(detections) * CLASSES + np.asarray(classes)]
    return columns.T.reshape(-1, *SHAPE).mean(axis=-1)[..., None]  # (batch, 4, 4, 1)


@pytest.fixture(scope="module")
def reference_boxes(detector, x):
    """Each sample's box: the decoded box of its CHOSEN detection, shifted a little."""
    _, boxes = np_forward(detector, x)
    return (boxes[np.arange(N), CHOSEN] + 0.05).astype("float32")


def run(model, x, y, target):
    scores, maps = gradient.gradients(model, x, y, gradient_filter=identity, target=target)
    return ops.convert_to_numpy(scores), ops.convert_to_numpy(maps)


# --------------------------------------------------------------------------- against numpy


def test_box_picks_the_best_overlapping_detection(detector, x, reference_boxes):
    y = np.array([1, 0, 2])
    scores_np, boxes_np = np_forward(detector, x)
    best = np.array([np_iou(boxes_np[b], reference_boxes[b]).argmax() for b in range(N)])
    np.testing.assert_array_equal(best, CHOSEN)  # the reference box's own detection

    target = ke.targets.detection(box=reference_boxes, scores="cls", boxes="deltas", decode=decode)
    scores, maps = run(detector, x, y, target)
    np.testing.assert_allclose(scores[:, 0], scores_np[np.arange(N), best, y], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps, column_map(detector, best, y), rtol=1e-5, atol=1e-6)

    # the same detections picked by index (one per sample) give the same scores and maps
    by_index = run(detector, x, y, ke.targets.detection(index=best, scores="cls"))
    np.testing.assert_allclose(by_index[0], scores, atol=1e-6)
    np.testing.assert_allclose(by_index[1], maps, atol=1e-6)

    # through explain: the boxes are sliced into batches of 2 (2 + 1, padded) with x
    engine_scores, engine_maps = ke.explain(
        gradient.gradients, detector, x, y, batch_size=2, verbose=0, target=target,
        postprocessing=None, gradient_filter=identity,
    )  # fmt: skip
    np.testing.assert_allclose(engine_scores, scores, atol=1e-5)
    np.testing.assert_allclose(engine_maps, maps, atol=1e-5)


def test_box_in_another_format_and_one_box_for_every_sample(detector, x, reference_boxes):
    y = np.array([0, 1, 2])
    scores_np, boxes_np = np_forward(detector, x)
    box = reference_boxes[1]  # one box for all samples
    best = np_iou(boxes_np, box).argmax(axis=1)

    def decode_yxyx(deltas):  # the box and the decoded boxes share one format
        return ops.take(decode(deltas), np.array([1, 0, 3, 2]), axis=-1)

    target = ke.targets.detection(
        box=box[[1, 0, 3, 2]], box_format="yxyx", scores="cls", boxes="deltas", decode=decode_yxyx
    )
    scores, _ = run(detector, x, y, target)
    np.testing.assert_allclose(scores[:, 0], scores_np[np.arange(N), best, y], rtol=1e-5, atol=1e-5)


def test_without_index_or_box_each_class_takes_its_most_confident_detection(detector, x):
    y = np.array([[0, 2], [1, 1], [2, 0]])
    scores_np, _ = np_forward(detector, x)
    scores, maps = run(detector, x, y, ke.targets.detection(scores="cls"))
    best = scores_np.argmax(axis=1)  # (batch, classes)
    np.testing.assert_allclose(scores, np.take_along_axis(scores_np.max(1), y, 1), atol=1e-5)
    for j in range(2):
        expected = column_map(detector, best[np.arange(N), y[:, j]], y[:, j])[..., 0]
        np.testing.assert_allclose(maps[..., j], expected, rtol=1e-5, atol=1e-6)


def test_a_shared_index_and_every_class(detector, x):
    scores_np, _ = np_forward(detector, x)
    scores, maps = run(detector, x, None, ke.targets.detection(index=4, scores="cls"))
    np.testing.assert_allclose(scores, scores_np[:, 4], rtol=1e-5, atol=1e-5)
    assert maps.shape == (N, 4, 4, CLASSES)
    for c in range(CLASSES):
        expected = column_map(detector, [4] * N, [c] * N)[..., 0]
        np.testing.assert_allclose(maps[..., c], expected, rtol=1e-5, atol=1e-6)


def test_iou_weight_adds_the_boxes_overlap_and_its_gradient(detector, x, reference_boxes):
    y = np.array([2, 2, 1])
    weight = 0.7

    def np_score(xs):
        scores_np, boxes_np = np_forward(detector, xs)
        rows = np.arange(len(xs))
        ious = np.array([np_iou(boxes_np[b, CHOSEN[b]], reference_boxes[b]) for b in rows])
        return scores_np[rows, CHOSEN, y] + weight * ious

    target = ke.targets.detection(
        box=reference_boxes, scores="cls", boxes="deltas", decode=decode, iou_weight=weight
    )
    scores, maps = run(detector, x, y, target)
    np.testing.assert_allclose(scores[:, 0], np_score(x), rtol=1e-5, atol=1e-5)
    # central finite differences of the numpy score, channel mean
    eps, flat = 1e-4, x.astype(np.float64).reshape(N, -1)
    numeric = np.zeros_like(flat)
    for i in range(flat.shape[1]):
        step = np.zeros_like(flat)
        step[:, i] = eps
        up, down = (flat + step).reshape(x.shape), (flat - step).reshape(x.shape)
        numeric[:, i] = (np_score(up) - np_score(down)) / (2 * eps)
    expected = numeric.reshape(N, *SHAPE).mean(axis=-1)[..., None]
    np.testing.assert_allclose(maps, expected, atol=2e-4)
    assert np.abs(expected - column_map(detector, CHOSEN, y)).max() > 1e-3  # the IoU counts


# --------------------------------------------------------------------------- bad input


def test_bad_arguments_are_clear_errors(detector, x, reference_boxes):
    with pytest.raises(ValueError, match="not both"):
        ke.targets.detection(index=1, box=reference_boxes)
    with pytest.raises(ValueError, match=r"shape \(samples, 4\); got shape \(3,\)"):
        ke.targets.detection(box=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="row number >= 0"):
        ke.targets.detection(index=-1)
    with pytest.raises(ValueError, match="one per sample"):
        ke.targets.detection(index=np.array([[1, 2]]))
    with pytest.raises(ValueError, match="box_format"):
        ke.targets.detection(box=reference_boxes, box_format="xyz")
    with pytest.raises(ValueError, match="give box= too"):
        ke.targets.detection(iou_weight=1.0)
    with pytest.raises(TypeError, match="output name or position"):
        ke.targets.detection(scores=["cls"])
    with pytest.raises(ValueError, match="NaN"):
        ke.targets.detection(box=[[0.0, 0.0, np.nan, 1.0]])


def test_bad_models_and_outputs_are_clear_errors(detector, x, reference_boxes):
    y = np.array([0, 1, 2])

    def explain(target):
        return ke.gradients(detector, x, y, target=target, verbose=0)

    with pytest.raises(ValueError, match=r"several outputs.*scores="):
        explain(ke.targets.detection(index=0))
    with pytest.raises(ValueError, match="Did you mean 'deltas'"):
        explain(ke.targets.detection(box=reference_boxes, scores="cls", boxes="delta"))
    with pytest.raises(ValueError, match="which output"):
        explain(ke.targets.detection(box=reference_boxes, scores="cls"))
    with pytest.raises(ValueError, match=r"pick an index in \[0, 5\]"):
        explain(ke.targets.detection(index=6, scores="cls"))
    with pytest.raises(ValueError, match="one row per sample"):
        explain(ke.targets.detection(box=reference_boxes[:2], scores="cls", boxes="deltas"))
    with pytest.raises(ValueError, match=r"\(batch, detections, 4\)"):
        explain(ke.targets.detection(box=reference_boxes, scores="cls", boxes="cls"))


def test_a_classifier_is_not_a_detector(x):
    inputs = keras.Input(SHAPE)
    classifier = keras.Model(inputs, layers.Dense(CLASSES)(layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match=r"\(batch, detections, classes\); the output 0 has shape"):
        ke.gradients(classifier, x, np.array([0, 1, 2]), target=ke.targets.detection(index=0))


def test_nothing_the_user_passed_is_changed(detector, x, reference_boxes):
    boxes, before = reference_boxes.copy(), reference_boxes.copy()
    target = ke.targets.detection(box=boxes, scores="cls", boxes="deltas", decode=decode)
    ke.gradients(detector, x, np.array([0, 1, 2]), target=target, verbose=0)
    np.testing.assert_array_equal(boxes, before)
    assert target.decode is decode and target.scores == "cls"  # the target itself unbound
