"""Vectorised box overlap measures shared by the samplers, the hard-example labeller, the verifier and
the detector's NMS (the one IoU of the project; the independent label oracle keeps its own).

Convention (default): boxes are float x1, y1, x2, y2 in continuous pixel coordinates with x2 the
exclusive right edge (facedata.schema), so a box's area is (x2 - x1) * (y2 - y1). With `plus_one=True`
widths are x2 - x1 + 1, the MTCNN reference convention (for reproducing its numbers only).
Empty or negative extents count as zero area; an IoU with an empty union is 0.
"""

from __future__ import annotations

import numpy as np


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def box_areas(boxes: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    b = _as_boxes(boxes)
    e = 1.0 if plus_one else 0.0
    return np.maximum(b[:, 2] - b[:, 0] + e, 0) * np.maximum(b[:, 3] - b[:, 1] + e, 0)


def intersection_matrix(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """(len(a), len(b)) intersection areas."""
    a, b = _as_boxes(a), _as_boxes(b)
    e = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + e
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + e
    return np.maximum(iw, 0) * np.maximum(ih, 0)


def iou_matrix(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """(len(a), len(b)) float64 intersection over union."""
    inter = intersection_matrix(a, b, plus_one=plus_one)
    union = box_areas(a, plus_one=plus_one)[:, None] + box_areas(b, plus_one=plus_one)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def intersection_pairs(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """Intersection area of a[i] with b[i] (same length)."""
    a, b = _as_boxes(a), _as_boxes(b)
    e = 1.0 if plus_one else 0.0
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + e, 0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + e, 0)
    return iw * ih


def iou_pairs(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """IoU of a[i] with b[i] (same length), without building the full matrix."""
    inter = intersection_pairs(a, b, plus_one=plus_one)
    union = box_areas(a, plus_one=plus_one) + box_areas(b, plus_one=plus_one) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def min_overlap_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of a[i] with b[i] over the smaller of their areas (the NMS "min" overlap)."""
    inter = intersection_pairs(a, b)
    smaller = np.minimum(box_areas(a), box_areas(b))
    return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)


def ignore_regions(boxes: np.ndarray) -> np.ndarray:
    """Boxes as regions to keep clear of: corners sorted and at least 1 px wide and high.

    Degenerate annotations (w or h <= 0, e.g. the 29 in WIDER train) still mark where a face is;
    without the 1 px minimum nothing could ever "overlap" them.
    """
    b = _as_boxes(boxes)
    x1, x2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    y1, y2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    return np.stack([x1, y1, np.maximum(x2, x1 + 1), np.maximum(y2, y1 + 1)], axis=1)


def coverage_matrix(a: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """(len(a), len(regions)): fraction of each ignore region's area that each box of `a` covers."""
    r = ignore_regions(regions)
    return intersection_matrix(a, r) / box_areas(r)[None, :]
