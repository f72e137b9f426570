"""``ke.targets.detection``: the class score of one detection of an object detector.

An object detector returns, before non-maximum suppression, one row per
candidate detection (an anchor, a query): class scores ``(batch, detections,
classes)`` and boxes ``(batch, detections, 4)``, the boxes often encoded as
offsets from anchors. The target picks one detection per sample and scores its
classes at ``y``:

- ``index=``: the detection's row (an int for every sample, or one per sample);
- ``box=``: the detection whose box overlaps the given box best (IoU), e.g. a
  box ``model.predict`` returned after non-maximum suppression, which is the
  decoded box of exactly one row;
- neither: the most confident detection of each explained class.

KerasHub's ``RetinaNetObjectDetector`` needs no configuration: its outputs
(``cls_logits``, ``bbox_regression``), its anchors (its own
``anchor_generator`` on the model's image size) and its box decoding (the one
its ``decode_predictions`` runs before non-maximum suppression) are found when
the target is bound to the model. Any other detector works given the names (or
positions) of its two outputs and, when its boxes are encoded, a ``decode``
function.

Framework-free: ``keras.ops`` and ``keras.utils.bounding_boxes`` only.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
from keras import ops

from .._units import gather_units
from ._base import Classes, Target, output_names
from ._builtin import Output

_HUB_SCORES, _HUB_BOXES = "cls_logits", "bbox_regression"
_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw")
_FORMATS += tuple(f"rel_{name}" for name in _FORMATS)


def _is_hub_retinanet(model) -> bool:
    """A KerasHub RetinaNet (or any detector built the same way), recognized by its parts."""
    names = output_names(model) or []
    return (
        getattr(model, "anchor_generator", None) is not None
        and isinstance(getattr(model, "bounding_box_format", None), str)
        and _HUB_SCORES in names
        and _HUB_BOXES in names
    )


def _image_shape(model, given):
    if given is not None:
        return tuple(int(d) for d in given)
    try:
        shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            f"detection() decodes the boxes of '{model.name}' for one image size, but the model "
            f"takes images of shape {shape or 'unknown'}: pass image_shape=(height, width, "
            "channels) of the images you explain."
        )
    return tuple(int(d) for d in shape)


def hub_decoder(model, image_shape):
    """A KerasHub RetinaNet's box decoding for images of ``image_shape``.

    ``decode(deltas)`` turns ``bbox_regression`` (offsets from the anchors, in
    ``center_xywh``) into boxes in ``model.bounding_box_format``, as the model's
    ``decode_predictions`` does before non-maximum suppression. The anchors come
    from the model's own ``anchor_generator``, run inside the compiled step (they
    depend on the image size only: a constant there).
    """
    generator = model.anchor_generator
    anchor_format, box_format = generator.bounding_box_format, model.bounding_box_format

    def decode(deltas):
        levels = generator(ops.zeros((1, *image_shape), "float32"))
        levels = list(levels.values()) if isinstance(levels, dict) else [levels]
        return keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=ops.concatenate(levels, axis=0),
            boxes_delta=ops.cast(deltas, "float32"),
            anchor_format=anchor_format,
            box_format=box_format,
            encoded_format="center_xywh",
            image_shape=image_shape,
        )

    return decode


def box_iou(boxes, reference):
    """IoU of ``xyxy`` boxes ``(batch, detections, 4)`` with ``(batch, 4)`` reference boxes."""
    reference = ops.expand_dims(reference, 1)
    top_left = ops.maximum(boxes[..., :2], reference[..., :2])
    bottom_right = ops.minimum(boxes[..., 2:], reference[..., 2:])
    overlap = ops.prod(ops.maximum(bottom_right - top_left, 0.0), axis=-1)

    def area(b):
        return ops.prod(ops.maximum(b[..., 2:] - b[..., :2], 0.0), axis=-1)

    union = area(boxes) + area(reference) - overlap
    return overlap / ops.maximum(union, 1e-12)


class Detection(Target):
    """The class scores of one detection (see :func:`detection`)."""

    def __init__(self, index, box, scores, boxes, decode, box_format, image_shape, iou_weight):
        self.index = index
        self.box = box
        self.scores = scores
        self.boxes = boxes
        self.decode = decode
        self.box_format = box_format
        self.image_shape = image_shape
        self.iou_weight = iou_weight
        self._pick_scores = self._pick_boxes = None

    # ------------------------------------------------------------------ set-up

    def per_sample(self):
        rows = {}
        if isinstance(self.index, np.ndarray):
            rows["index"] = self.index
        if self.box is not None and self.box.ndim == 2:
            rows["box"] = self.box
        return rows

    def bind(self, model) -> Target:
        clone = copy.copy(self)
        if _is_hub_retinanet(model):
            clone.scores = _HUB_SCORES if self.scores is None else self.scores
            clone.boxes = _HUB_BOXES if self.boxes is None else self.boxes
            if clone.box_format is None:
                clone.box_format = model.bounding_box_format
            if self.decode is None and clone.boxes == _HUB_BOXES and self.box is not None:
                clone.image_shape = _image_shape(model, self.image_shape)
                clone.decode = hub_decoder(model, clone.image_shape)
        names = output_names(model)
        if clone.scores is None:
            if names is not None and len(names) > 1:
                raise ValueError(
                    f"'{model.name}' has several outputs, {names}: say which holds the class "
                    "scores (batch, detections, classes) and which the boxes, e.g. "
                    "ke.targets.detection(box=..., scores='classes', boxes='boxes')."
                )
            clone.scores = 0
        clone._pick_scores = Output(clone.scores, Classes()).bind(model)
        if self.box is not None:
            if clone.boxes is None:
                raise ValueError(
                    f"detection(box=...) compares boxes, but which output of '{model.name}' "
                    f"holds them ({names or 'unknown names'})? Pass boxes= its name or position "
                    "(and decode= if they are offsets from anchors)."
                )
            clone._pick_boxes = Output(clone.boxes, Classes()).bind(model)
            if clone.box_format is None:
                clone.box_format = "xyxy"
            if clone.box_format.startswith("rel_") and clone.image_shape is None:
                clone.image_shape = _image_shape(model, None)
        return clone

    # ------------------------------------------------------------------ scores

    def _class_scores(self, outputs):
        picker = self._pick_scores or Output(0 if self.scores is None else self.scores, Classes())
        scores = picker.pick(outputs)
        if len(scores.shape) != 3:
            raise ValueError(
                f"detection() reads class scores shaped (batch, detections, classes); the output "
                f"{picker.key!r} has shape {tuple(scores.shape)}. Name the right one with "
                "scores=, or reshape the detector's output in a wrapper model."
            )
        return scores

    def _decoded_boxes(self, outputs):
        if self._pick_boxes is None and self.boxes is None:
            raise ValueError("detection(box=...) needs boxes= the output holding the boxes.")
        picker = self._pick_boxes or Output(self.boxes, Classes())
        boxes = picker.pick(outputs)
        if self.decode is not None:
            boxes = self.decode(boxes)
        if len(boxes.shape) != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                f"detection(box=...) needs boxes shaped (batch, detections, 4); the output "
                f"{picker.key!r}{' decoded' if self.decode else ''} has shape "
                f"{tuple(boxes.shape)}."
            )
        return boxes

    def _to_xyxy(self, boxes):
        if self.box_format == "xyxy":
            return boxes
        height, width = (None, None) if self.image_shape is None else self.image_shape[:2]
        return keras.utils.bounding_boxes.convert_format(
            boxes, source=self.box_format, target="xyxy", height=height, width=width
        )

    def _reference(self, scores):
        if self.box.ndim == 2:
            return self._to_xyxy(ops.cast(self.rows("box"), "float32"))
        zeros = ops.zeros_like(scores[:, 0, :1], dtype="float32")  # (batch, 1)
        return self._to_xyxy(zeros + ops.convert_to_tensor(self.box, "float32"))

    def __call__(self, outputs, units):
        scores = self._class_scores(outputs)
        overlaps = None
        if self.index is not None:
            if isinstance(self.index, np.ndarray):
                index = ops.cast(self.rows("index"), "int32")
            else:
                index = ops.zeros_like(scores[:, 0, 0], dtype="int32") + self.index
        elif self.box is not None:
            boxes = self._to_xyxy(ops.cast(self._decoded_boxes(outputs), "float32"))
            overlaps = box_iou(boxes, self._reference(scores))  # (batch, detections)
            index = ops.cast(ops.argmax(ops.stop_gradient(overlaps), axis=1), "int32")
        else:  # the most confident detection of each class
            return gather_units(ops.max(scores, axis=1), units)
        rows = ops.reshape(index, (-1, 1, 1)) + ops.zeros_like(scores[:, :1, :], dtype="int32")
        picked = ops.take_along_axis(scores, rows, axis=1)[:, 0]  # (batch, classes)
        result = gather_units(picked, units)
        if overlaps is not None and self.iou_weight:
            iou = ops.take_along_axis(overlaps, ops.reshape(index, (-1, 1)), axis=1)
            result = ops.cast(result, "float32") + self.iou_weight * iou
        return result

    def units_of(self, outputs) -> int | None:
        scores = self._class_scores(outputs)
        detections = scores.shape[1]
        if detections is not None and self.index is not None:
            largest = int(np.max(self.index))
            if largest >= detections:
                raise ValueError(
                    f"detection(index={largest}): the detector returns {detections} detections "
                    f"per image; pick an index in [0, {detections - 1}] (rows before "
                    "non-maximum suppression)."
                )
        if self.box is not None:
            boxes = self._decoded_boxes(outputs) if self.decode is None else None
            if boxes is not None and None not in (boxes.shape[1], detections):
                if boxes.shape[1] != detections:
                    raise ValueError(
                        f"detection(): the class scores hold {detections} detections but the "
                        f"boxes {boxes.shape[1]}; name the matching outputs (scores=, boxes=)."
                    )
        return None if scores.shape[-1] is None else int(scores.shape[-1])

    def __repr__(self):
        if self.index is not None:
            how = f"index={self.index if np.isscalar(self.index) else 'per sample'}"
        elif self.box is not None:
            how = "box=" + ("per sample" if self.box.ndim == 2 else str(self.box.tolist()))
        else:
            how = "the most confident"
        return f"ke.targets.detection({how})"


def _checked_index(index):
    if index is None:
        return None
    if isinstance(index, (bool, np.bool_)):
        raise TypeError("detection(index=...) is a detection's row number, not a bool.")
    if isinstance(index, (int, np.integer)):
        if index < 0:
            raise ValueError(f"detection(index=...) is a row number >= 0; got {index}.")
        return int(index)
    array = np.asarray(ops.convert_to_numpy(index) if hasattr(index, "shape") else index)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise ValueError(
            "detection(index=...) is one row number for every sample (an int) or one per "
            f"sample, shape (samples,), integers >= 0; got shape {array.shape}, {array.dtype}."
        )
    return array


def _checked_box(box):
    if box is None:
        return None
    array = np.asarray(ops.convert_to_numpy(box) if hasattr(box, "shape") else box)
    if array.ndim not in (1, 2) or array.shape[-1] != 4:
        raise ValueError(
            "detection(box=...) is one box (4 coordinates) for every sample, or one per sample, "
            f"shape (samples, 4); got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError("detection(box=...) holds non-numbers, NaN or Inf; clean them first.")
    return array.astype("float32")


def detection(
    index=None,
    box=None,
    scores=None,
    boxes=None,
    decode=None,
    box_format=None,
    image_shape=None,
    iou_weight: float = 0.0,
) -> Target:
    """The class scores of one detection of an object detector, before non-maximum suppression.

    ``score[b, j] = class_scores[b, d_b, y[b, j]]`` for the detection ``d_b``
    of sample ``b`` (``y=None``: every class of that detection). ``d_b`` is
    ``index`` when given; else, with ``box``, the detection whose (decoded) box
    has the largest IoU with ``box[b]`` (a box that ``model.predict`` returned
    is the decoded box of exactly one detection, whose IoU is 1); else, for
    each class, the most confident detection of that class (the max over
    detections). The choice of ``d_b`` is not differentiated.

    Args:
        index: the detection's row in the detector's raw outputs: an int for
            every sample, or one per sample, ``(samples,)``.
        box: a reference box (4 numbers in ``box_format``) for every sample, or
            one per sample, ``(samples, 4)``; sliced into batches with ``x``.
        scores: the output (name or position) holding the class scores
            ``(batch, detections, classes)``; default: the model's only output,
            or ``"cls_logits"`` for KerasHub's RetinaNet.
        boxes: the output holding the boxes ``(batch, detections, 4)``, needed
            with ``box``; KerasHub RetinaNet: ``"bbox_regression"``.
        decode: a function ``(boxes output) -> (batch, detections, 4)`` boxes in
            ``box_format``, written with ``keras.ops``, for boxes encoded as
            offsets from anchors; KerasHub RetinaNet: its own anchors and
            decoding, found automatically.
        box_format: the format of ``box`` and of the (decoded) boxes, a
            ``keras.utils.bounding_boxes`` format (``"xyxy"``, ``"yxyx"``,
            ``"xywh"``, ``"center_xywh"``, ``"center_yxhw"``, ``"rel_*"``);
            default ``"xyxy"``, or the detector's ``bounding_box_format``.
        image_shape: ``(height, width, channels)`` of the images, when the
            model does not fix it and the boxes must be decoded (KerasHub) or
            are relative.
        iou_weight: adds ``iou_weight * IoU(box of d_b, box[b])`` to each score,
            so that the map also explains where the detection's box lies (as
            pytorch-grad-cam's FasterRCNNBoxScoreTarget does, with weight 1).
            Only with ``box``.

    Raises:
        ValueError / TypeError: an index or box of the wrong shape, an unknown
            format, ``box`` without a boxes output, an output of the wrong
            shape, or an index past the number of detections.

    Example:
        >>> target = ke.targets.detection(box=[[12.0, 8.0, 40.0, 30.0]] * len(x))
        >>> scores, maps = ke.gradcam(ke.inspection.expose(detector, arguments=layer),
        ...                           x, labels, target=target)
    """
    index, box = _checked_index(index), _checked_box(box)
    if index is not None and box is not None:
        raise ValueError(
            "detection() picks the detection by index= or by box=, not both: the box's best "
            "match is a detection of its own."
        )
    if box_format is not None and box_format not in _FORMATS:
        raise ValueError(f"detection(box_format={box_format!r}) is one of {list(_FORMATS)}.")
    if decode is not None and not callable(decode):
        raise TypeError(f"detection(decode=...) is a function of the boxes output; got {decode!r}.")
    for name, key in (("scores", scores), ("boxes", boxes)):
        if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int))):
            raise TypeError(f"detection({name}=...) is an output name or position; got {key!r}.")
    if iou_weight and box is None:
        raise ValueError("detection(iou_weight=...) weighs the IoU with box=: give box= too.")
    if image_shape is not None and len(tuple(image_shape)) != 3:
        raise ValueError(
            f"detection(image_shape=...) is (height, width, channels); got {image_shape!r}."
        )
    return Detection(index, box, scores, boxes, decode, box_format, image_shape, float(iou_weight))
