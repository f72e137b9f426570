"""Boxes and connected components shared by the localization metrics and ``ke.wsol``.

Boxes are ``(x_min, y_min, x_max, y_max)`` in pixel indices, both ends
inclusive (``x`` = column, ``y`` = row): a box's area is
``(x_max - x_min + 1) * (y_max - y_min + 1)``, as in the wsolevaluation code.

Connected components use ``scipy.ndimage.label`` when SciPy is installed and
an equivalent pure-numpy labelling otherwise (same labels, about 10-20 times
slower).
"""

from __future__ import annotations

import numpy as np

from ..engine.data import to_numpy

try:  # optional: only makes connected components faster
    from scipy import ndimage as _ndimage
except ImportError:  # pragma: no cover - exercised by forcing the numpy path in tests
    _ndimage = None


# --------------------------------------------------------------------------- boxes


def as_box_lists(boxes, count: int | None = None) -> list[np.ndarray]:
    """Boxes as a list of ``(K_i, 4)`` int arrays, one per image.

    Args:
        boxes: a list of per-image arrays (``(4,)`` or ``(K, 4)``), an ``(N, 4)``
            array (one box per image) or an ``(N, K, 4)`` array, each box
            ``(x_min, y_min, x_max, y_max)``, inclusive.
        count: the expected number of images, if known.

    Returns:
        a list of int64 ``(K_i, 4)`` arrays.

    Example:
        >>> ke.wsol.as_box_lists(np.array([[0, 0, 9, 9]]))
        [array([[0, 0, 9, 9]])]
    """
    if isinstance(boxes, np.ndarray) or hasattr(boxes, "shape"):
        boxes = to_numpy(boxes)
        if boxes.ndim == 2 and boxes.shape[1] == 4:
            boxes = list(boxes[:, None, :])
        elif boxes.ndim == 3 and boxes.shape[2] == 4:
            boxes = list(boxes)
        else:
            raise ValueError(
                f"`boxes` must be (N, 4), (N, K, 4) or a list of (K, 4) arrays of (x_min, y_min, "
                f"x_max, y_max); got shape {boxes.shape}."
            )
    result = []
    for i, item in enumerate(boxes):
        item = np.asarray(item, dtype=np.float64).reshape(-1, 4) if len(item) else np.zeros((0, 4))
        if item.shape[0] == 0:
            raise ValueError(f"Image {i} has no ground-truth box; give at least one per image.")
        if np.any(item[:, 2] < item[:, 0]) or np.any(item[:, 3] < item[:, 1]):
            raise ValueError(
                f"Box {item.tolist()} of image {i} is not (x_min, y_min, x_max, y_max) with "
                "x_min <= x_max and y_min <= y_max."
            )
        result.append(np.round(item).astype(np.int64))
    if count is not None and len(result) != count:
        raise ValueError(f"`boxes` lists {len(result)} images for {count} maps; give one per map.")
    return result


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of every pair of inclusive pixel boxes.

    ``IoU = |A ∩ B| / |A ∪ B|`` with areas ``(x_max - x_min + 1) * (y_max - y_min + 1)``.

    Args:
        boxes_a: ``(A, 4)`` boxes ``(x_min, y_min, x_max, y_max)``.
        boxes_b: ``(B, 4)`` boxes.

    Returns:
        ``(A, B)`` IoUs.

    Example:
        >>> ke.wsol.box_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]])
        array([[0.33333333]])

    References:
        Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV
        2010; Choe et al., CVPR 2020 (the ``+ 1`` pixel convention).
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area = lambda box: (box[..., 2] - box[..., 0] + 1) * (box[..., 3] - box[..., 1] + 1)
    return inter / (area(a) + area(b) - inter)


def boxes_to_masks(boxes, shape) -> np.ndarray:
    """The union of each image's boxes as a bool mask ``(N, H, W)``.

    Args:
        boxes: boxes in any form :func:`as_box_lists` takes.
        shape: the masks' ``(H, W)``; boxes are clipped to it.

    Returns:
        bool ``(N, H, W)``.

    Example:
        >>> ke.wsol.boxes_to_masks([[2, 1, 4, 3]], (8, 8))[0].sum()
        9
    """
    boxes = as_box_lists(boxes)
    height, width = shape
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    masks = np.zeros((len(boxes), height, width), dtype=bool)
    for i, image_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in image_boxes:
            masks[i] |= (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)
    return masks


# --------------------------------------------------------------------------- components


def _label_numpy(masks: np.ndarray) -> np.ndarray:
    """8-connected labels of a stack of 2-D masks: hooking + pointer jumping, vectorized."""
    count, height, width = masks.shape
    size = masks.size
    parent = np.arange(size + 1)
    parent[:size][~masks.reshape(-1)] = size  # background points at the sentinel
    foreground = np.flatnonzero(masks)
    if foreground.size == 0:
        return np.zeros(masks.shape, np.int64)
    while True:
        image = parent[:size].reshape(masks.shape)
        padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), constant_values=size)
        lowest = image.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(lowest, padded[:, dy : dy + height, dx : dx + width], out=lowest)
        lowest = lowest.reshape(-1)[foreground]
        current = parent[foreground]
        hook = lowest < current
        if not hook.any():
            break
        np.minimum.at(parent, current[hook], lowest[hook])  # hook roots to smaller roots
        np.minimum.at(parent, foreground[hook], lowest[hook])
        while True:  # pointer jumping: every pixel points at its root
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots = parent[foreground]
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # number components by their first pixel
    labels = np.zeros(size, np.int64)
    labels[foreground] = order[inverse] + 1
    return labels.reshape(masks.shape)


def connected_components(masks, use_scipy: bool | None = None) -> tuple[np.ndarray, int]:
    """8-connected components of a stack of 2-D masks, numbered across the stack.

    Args:
        masks: bool ``(M, H, W)`` (or ``(H, W)``).
        use_scipy: ``None`` uses SciPy when installed; ``False`` forces numpy.

    Returns:
        ``(labels, count)``: int labels shaped like ``masks`` (0 = background,
        ``1..count`` numbered by first pixel in raster order, never shared
        between masks) and the number of components.

    Example:
        >>> labels, count = ke.wsol.connected_components(maps > 0.5)

    References:
        Rosenfeld & Pfaltz, "Sequential Operations in Digital Picture Processing",
        J. ACM 1966 (8-connectivity); ``cv2.findContours``' outer contours, used
        by Choe et al., bound the same 8-connected regions.
    """
    masks = np.asarray(masks, dtype=bool)
    single = masks.ndim == 2
    stack = masks[None] if single else masks
    if stack.ndim != 3:
        raise ValueError(f"`masks` must be (H, W) or (M, H, W); got shape {masks.shape}.")
    if use_scipy is None:
        use_scipy = _ndimage is not None
    if use_scipy:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = True  # 8-connected in each plane, never across planes
        labels, count = _ndimage.label(stack, structure=structure)
    else:
        labels = _label_numpy(stack)
        count = int(labels.max())
    return (labels[0] if single else labels), int(count)


def _component_boxes(labels: np.ndarray, count: int):
    """Owner plane, inclusive box and area of components ``1..count`` of a label stack."""
    areas = np.bincount(labels.reshape(-1), minlength=count + 1)[1:]
    if _ndimage is not None:
        slices = _ndimage.find_objects(labels, max_label=count)
        spans = np.array([[s[0].start, s[2].start, s[1].start, s[2].stop - 1, s[1].stop - 1]
                          for s in slices], dtype=np.int64).reshape(-1, 5)  # fmt: skip
        return spans[:, 0], spans[:, 1:], areas
    planes, rows, cols = np.nonzero(labels)
    ids = labels[planes, rows, cols] - 1
    owner = np.zeros(count, np.int64)
    owner[ids] = planes
    boxes = np.empty((count, 4), np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], ids, cols)
    np.minimum.at(boxes[:, 1], ids, rows)
    np.maximum.at(boxes[:, 2], ids, cols)
    np.maximum.at(boxes[:, 3], ids, rows)
    return owner, boxes, areas
