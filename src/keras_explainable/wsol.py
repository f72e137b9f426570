"""Weakly-supervised object localization (WSOL) and semantic segmentation (WSSS) tools.

- boxes from maps: threshold, connected components (8-connectivity), bounding
  boxes (:func:`boxes_from_maps`);
- box IoU, MaxBoxAcc and MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised
  Object Localization Methods Right", CVPR 2020): :func:`box_accuracy`,
  :func:`max_box_acc`, :func:`max_box_acc_v2`;
- pseudo-label masks from per-class CAMs (:func:`pseudo_labels`) and their mIoU
  against ground-truth masks (:func:`mean_iou`).

Boxes are ``(x_min, y_min, x_max, y_max)`` in pixel indices, both ends
inclusive (``x`` = column, ``y`` = row), so a box's area is
``(x_max - x_min + 1) * (y_max - y_min + 1)`` as in the wsolevaluation code.
The box helpers (:func:`box_iou`, :func:`boxes_to_masks`,
:func:`connected_components`, :func:`as_box_lists`) live in
:mod:`keras_explainable.metrics.boxes` and are re-exported here.

Connected components use ``scipy.ndimage.label`` when SciPy is installed and
an equivalent pure-numpy labelling otherwise (same labels, slower).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .engine.data import to_numpy
from .metrics._common import as_maps, fractions_in, normalize_maps
from .metrics.boxes import (
    _component_boxes,
    as_box_lists,
    box_iou,
    boxes_to_masks,
    connected_components,
)

#: Score-map thresholds of :func:`box_accuracy`: 0, 0.01, ..., 0.99. (The
#: wsolevaluation code steps by 0.001; pass ``np.arange(0, 1, 0.001)`` to match.)
DEFAULT_THRESHOLDS = np.arange(100) / 100


def _foreground(maps: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``normalized(map) > threshold`` for every (map, threshold): ``(N, T, H, W)``."""
    return normalize_maps(maps)[:, None] > thresholds[None, :, None, None]


def boxes_from_maps(maps, threshold: float = 0.15, mode: str = "largest") -> list[np.ndarray]:
    """Bounding boxes of the thresholded regions of saliency maps.

    Each map is min-max normalised to [0, 1] (a constant map becomes zeros), the
    foreground is ``S > threshold`` (the threshold is relative to the map's
    range; for non-negative maps with minimum 0, a fraction of the maximum),
    split into 8-connected components, and each component's box is taken.

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, 1)``.
        threshold: in [0, 1]; the default 0.15 is the Grad-CAM paper's 15% of
            the maximum.
        mode: ``"largest"`` (the component with the most pixels, ties to the
            first in raster order) or ``"all"``.

    Returns:
        a list of N int arrays ``(K, 4)`` of ``(x_min, y_min, x_max, y_max)``;
        ``K = 0`` when nothing exceeds the threshold.

    Example:
        >>> _, maps = ke.gradcam(model, x, y)
        >>> ke.wsol.boxes_from_maps(maps, threshold=0.15)[0]
        array([[ 3,  2, 10,  9]])

    References:
        Selvaraju et al., "Grad-CAM", ICCV 2017 (15% threshold); Choe et al.,
        CVPR 2020 (all components, "multi-contour").
    """
    if mode not in ("largest", "all"):
        raise ValueError(f"`mode` is 'largest' or 'all'; got {mode!r}.")
    threshold = fractions_in([threshold], "threshold")
    maps = as_maps(maps)
    labels, count = connected_components(_foreground(maps, threshold)[:, 0])
    owner, boxes, areas = _component_boxes(labels, count)
    result = []
    for i in range(len(maps)):
        mine = np.flatnonzero(owner == i)
        if mode == "largest" and mine.size:
            mine = mine[[np.argmax(areas[mine])]]
        result.append(boxes[mine])
    return result


class BoxAccuracy(NamedTuple):
    """The result of :func:`box_accuracy`.

    Attributes:
        max_box_acc: ``(D,)`` for each IoU threshold, the best accuracy over
            score thresholds (a fraction in [0, 1]).
        box_acc: ``(T, D)`` accuracy at each score threshold and IoU threshold.
        best_threshold: ``(D,)`` the score threshold reaching ``max_box_acc``.
        best_iou: ``(N, T)`` each image's best box IoU at each score threshold.
        thresholds: ``(T,)`` the score thresholds.
        iou_thresholds: ``(D,)`` the IoU thresholds.
    """

    max_box_acc: np.ndarray
    box_acc: np.ndarray
    best_threshold: np.ndarray
    best_iou: np.ndarray
    thresholds: np.ndarray
    iou_thresholds: np.ndarray


def box_accuracy(
    maps, boxes, thresholds=None, iou_thresholds=(0.5,), mode: str = "largest"
) -> BoxAccuracy:
    """Box accuracy of saliency maps over score thresholds (Choe et al., CVPR 2020).

    For each score threshold ``tau``, every map gives boxes (see
    :func:`boxes_from_maps`); the image's IoU is the best IoU between its boxes
    and its ground-truth boxes (0 without a box). Then

        BoxAcc(tau, delta) = mean_i 1[IoU_i(tau) >= delta],
        MaxBoxAcc(delta) = max_tau BoxAcc(tau, delta).

    Maps must be at the boxes' resolution (resize them first, e.g. with
    ``ke.explain(..., resizing=True)``).

    Args:
        maps: ``(N, H, W)`` or ``(N, H, W, 1)``, one per image (the ground-truth
            class's map for GT-known localisation).
        boxes: ground truth, ``(N, 4)``, ``(N, K, 4)`` or a list of ``(K_i, 4)``.
        thresholds: score thresholds in [0, 1] (default 0, 0.01, ..., 0.99).
        iou_thresholds: the IoU thresholds ``delta``.
        mode: ``"largest"`` component (MaxBoxAcc) or ``"all"`` (MaxBoxAccV2).

    Returns:
        :class:`BoxAccuracy`.

    Example:
        >>> result = ke.wsol.box_accuracy(maps, boxes, iou_thresholds=(0.3, 0.5, 0.7))
        >>> result.max_box_acc

    References:
        Choe, Oh, Lee, Chun, Akata & Shim, "Evaluating Weakly Supervised Object
        Localization Methods Right", CVPR 2020.
    """
    if mode not in ("largest", "all"):
        raise ValueError(f"`mode` is 'largest' or 'all'; got {mode!r}.")
    maps = as_maps(maps)
    boxes = as_box_lists(boxes, len(maps))
    thresholds = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    thresholds = fractions_in(thresholds, "thresholds")
    deltas = fractions_in(iou_thresholds, "iou_thresholds")
    best = np.zeros((len(maps), len(thresholds)))
    for i in range(len(maps)):
        labels, count = connected_components(_foreground(maps[i : i + 1], thresholds)[0])
        if count == 0:
            continue
        owner, component_boxes, areas = _component_boxes(labels, count)
        ious = box_iou(component_boxes, boxes[i]).max(axis=1)
        if mode == "largest":
            # the largest component of each threshold; ties to the lowest label
            order = np.lexsort((np.arange(count), -areas, owner))
            first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
            best[i, owner[first]] = ious[first]
        else:
            np.maximum.at(best[i], owner, ious)
    box_acc = (best[:, :, None] >= deltas[None, None, :]).mean(axis=0)
    top = box_acc.argmax(axis=0)
    return BoxAccuracy(box_acc.max(axis=0), box_acc, thresholds[top], best, thresholds, deltas)


def max_box_acc(maps, boxes, thresholds=None, iou_threshold: float = 0.5) -> float:
    """MaxBoxAcc: best fraction of images localised at IoU >= 0.5 over thresholds.

    The largest connected component's box per map (Choe et al., CVPR 2020; the
    CAM evaluation of Zhou et al., 2016). See :func:`box_accuracy`.

    Example:
        >>> ke.wsol.max_box_acc(maps, boxes)

    References:
        Choe et al., "Evaluating Weakly Supervised Object Localization Methods
        Right", CVPR 2020.
    """
    result = box_accuracy(maps, boxes, thresholds, (iou_threshold,), mode="largest")
    return float(result.max_box_acc[0])


def max_box_acc_v2(maps, boxes, thresholds=None, iou_thresholds=(0.3, 0.5, 0.7)) -> float:
    """MaxBoxAccV2: MaxBoxAcc averaged over IoU 0.3/0.5/0.7, boxes of all components.

    ``MaxBoxAccV2 = mean_delta max_tau BoxAcc(tau, delta)`` where each image's
    IoU is the best over the boxes of *all* its components (Choe et al.'s
    "multi-contour" evaluation). See :func:`box_accuracy`.

    Example:
        >>> ke.wsol.max_box_acc_v2(maps, boxes)

    References:
        Choe et al., "Evaluating Weakly Supervised Object Localization Methods
        Right", CVPR 2020 (and its TPAMI extension).
    """
    result = box_accuracy(maps, boxes, thresholds, iou_thresholds, mode="all")
    return float(result.max_box_acc.mean())


# --------------------------------------------------------------------------- WSSS


def pseudo_labels(cams, background_threshold: float = 0.15, image_labels=None) -> np.ndarray:
    """Segmentation pseudo-labels from per-class CAMs with a background threshold.

    Each class map is rectified and divided by its maximum (``relu(M) / max``,
    a map without positive values stays 0); classes absent from the image
    (``image_labels``) are zeroed. A pixel takes its highest-scoring class if
    that score exceeds ``background_threshold``, else the background:

        label = argmax([t, M_0, ..., M_{K-1}])  (0 = background, k + 1 = class k).

    Args:
        cams: ``(N, H, W, K)`` one map per class (e.g. ``ke.gradcam(model, x,
            None)`` explains every class).
        background_threshold: the constant background score ``t`` (0.15, the
            CAM evaluation threshold of IRN, Ahn et al., CVPR 2019).
        image_labels: optional ``(N, K)`` image-level labels (bool or 0/1).

    Returns:
        int64 ``(N, H, W)`` labels.

    Example:
        >>> _, cams = ke.gradcam(model, x, None)
        >>> labels = ke.wsol.pseudo_labels(cams, 0.15, image_labels=y_multi_hot)

    References:
        Ahn, Cho & Kwak, "Weakly Supervised Learning of Instance Segmentation with
        Inter-pixel Relations" (IRN), CVPR 2019.
    """
    cams = to_numpy(cams).astype(np.float64)
    if cams.ndim != 4:
        raise ValueError(f"`cams` must be (N, H, W, classes); got shape {cams.shape}.")
    cams = np.maximum(cams, 0)
    peak = cams.max(axis=(1, 2), keepdims=True)
    cams = np.where(peak > 0, cams / np.where(peak > 0, peak, 1.0), 0.0)
    if image_labels is not None:
        image_labels = to_numpy(image_labels)
        if image_labels.shape != (cams.shape[0], cams.shape[-1]):
            raise ValueError(
                f"`image_labels` must be (N, classes) = {(cams.shape[0], cams.shape[-1])}; got "
                f"{image_labels.shape}."
            )
        cams = cams * (image_labels.astype(bool)[:, None, None, :])
    background = np.full(cams.shape[:3] + (1,), float(background_threshold))
    return np.concatenate([background, cams], axis=-1).argmax(axis=-1)


class SegmentationScore(NamedTuple):
    """The result of :func:`mean_iou`.

    Attributes:
        miou: the mean IoU over classes that occur in the predictions or targets.
        iou: ``(classes,)`` per-class IoU (NaN where a class occurs nowhere).
        confusion: ``(classes, classes)`` counts, rows = ground truth, columns = prediction.
    """

    miou: float
    iou: np.ndarray
    confusion: np.ndarray


def mean_iou(predictions, targets, num_classes: int | None = None, ignore_index: int = 255):
    """Mean intersection over union of label masks.

    ``IoU_k = TP_k / (TP_k + FP_k + FN_k)`` from the confusion matrix summed over
    all images; pixels whose target is ``ignore_index`` are skipped;
    ``mIoU = mean_k IoU_k`` over classes present in predictions or targets.

    Args:
        predictions: int ``(N, H, W)`` labels (e.g. from :func:`pseudo_labels`).
        targets: int ``(N, H, W)`` ground truth.
        num_classes: the number of labels (default: the largest label + 1).
        ignore_index: target label to skip (255, as in PASCAL VOC).

    Returns:
        :class:`SegmentationScore` ``(miou, iou, confusion)``.

    Example:
        >>> ke.wsol.mean_iou(ke.wsol.pseudo_labels(cams), masks).miou

    References:
        Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010.
    """
    predictions = to_numpy(predictions)
    targets = to_numpy(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"`predictions` {predictions.shape} and `targets` {targets.shape} must have the same "
            "shape."
        )
    valid = targets != ignore_index
    predicted, truth = predictions[valid].astype(np.int64), targets[valid].astype(np.int64)
    if num_classes is None:
        num_classes = int(max(predicted.max(initial=0), truth.max(initial=0))) + 1
    for name, values in (("predictions", predicted), ("targets", truth)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"`{name}` holds labels outside [0, {num_classes - 1}]; set num_classes (or "
                "ignore_index for void pixels)."
            )
    confusion = np.bincount(
        truth * num_classes + predicted, minlength=num_classes * num_classes
    ).reshape(num_classes, num_classes)
    hits = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - hits
    iou = np.where(union > 0, hits / np.where(union > 0, union, 1), np.nan)
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    return SegmentationScore(miou, iou, confusion)


__all__ = [
    "DEFAULT_THRESHOLDS",
    "BoxAccuracy",
    "SegmentationScore",
    "as_box_lists",
    "box_accuracy",
    "box_iou",
    "boxes_from_maps",
    "boxes_to_masks",
    "connected_components",
    "max_box_acc",
    "max_box_acc_v2",
    "mean_iou",
    "pseudo_labels",
]
