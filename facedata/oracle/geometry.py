"""The oracle's own geometry, written from the documented conventions only (README "Conventions" and
"Samples"; docs/spec ../shared/specs/mtcnn-reference.md). Nothing here is imported from the samplers or
the detector, so a bug there cannot hide behind the same bug here.

Conventions:
- boxes are x1, y1, x2, y2 in continuous pixel coordinates, x2 exclusive: area (x2 - x1)(y2 - y1); the
  reference's "+1" areas ((x2 - x1 + 1)(y2 - y1 + 1)) only when a recipe says `plus_one_iou`;
- pixel index i covers the continuous interval [i, i + 1): its centre is at i + 0.5;
- a sample is cut by rotating the image `angle` degrees counter-clockwise as displayed (y down) about the
  crop centre, cutting the crop box (zero outside the image), mirroring if `mirror` (x -> x1 + x2 - x,
  left/right points swapped by the scheme's flip pairs) and resizing to size x size;
- targets live in the crop before resizing, normalised by its width/height: box offsets (gt - crop) / size,
  landmark points (p - crop corner) / size.
"""

from __future__ import annotations

import numpy as np


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64)


def _extent(lo: np.ndarray, hi: np.ndarray, extra: float) -> np.ndarray:
    return np.maximum(hi - lo + extra, 0.0)


def iou(a: np.ndarray, b: np.ndarray, *, plus_one: bool = False) -> np.ndarray:
    """Intersection over union of boxes a[..., 4] and b[..., 4] (broadcast: a[:, None], b[None] for a
    matrix); 0 where the union is empty."""
    a, b = _f64(a), _f64(b)
    extra = 1.0 if plus_one else 0.0
    inter = _extent(np.maximum(a[..., 0], b[..., 0]), np.minimum(a[..., 2], b[..., 2]), extra) * _extent(
        np.maximum(a[..., 1], b[..., 1]), np.minimum(a[..., 3], b[..., 3]), extra
    )
    area_a = _extent(a[..., 0], a[..., 2], extra) * _extent(a[..., 1], a[..., 3], extra)
    area_b = _extent(b[..., 0], b[..., 2], extra) * _extent(b[..., 1], b[..., 3], extra)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def ignore_cover(crops: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Fraction of each ignore region's area inside each crop, (len(crops), len(regions)).

    A region is its face box with corners sorted and at least 1 px wide and high, so that a degenerate
    annotation (w or h <= 0) still marks a place no negative may overlap.
    """
    c, r = _f64(crops).reshape(-1, 4), _f64(regions).reshape(-1, 4)
    x1, y1 = np.minimum(r[:, 0], r[:, 2]), np.minimum(r[:, 1], r[:, 3])
    x2 = np.maximum(np.maximum(r[:, 0], r[:, 2]), x1 + 1)
    y2 = np.maximum(np.maximum(r[:, 1], r[:, 3]), y1 + 1)
    inter = _extent(np.maximum(c[:, None, 0], x1), np.minimum(c[:, None, 2], x2), 0.0) * _extent(
        np.maximum(c[:, None, 1], y1), np.minimum(c[:, None, 3], y2), 0.0
    )
    return inter / ((x2 - x1) * (y2 - y1))[None, :]


def usable(boxes: np.ndarray, flagged: np.ndarray, ignore_under: float, face_side: str = "shorter") -> np.ndarray:
    """Faces that may be sampled: not flagged (invalid / kept as ignore region), positive width and height,
    and a size >= ignore_under, the size being the shorter side (the larger for a recipe recorded with
    face_side "larger", the reference preset). Every other face is an ignore region."""
    b = _f64(boxes).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    size = np.minimum(w, h) if face_side == "shorter" else np.maximum(w, h)
    return ~np.asarray(flagged, bool) & (w > 0) & (h > 0) & (size >= ignore_under)


def box_offsets(crops: np.ndarray, faces: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(N, 4) regression targets (gt - crop) / crop size; a mirrored sample's face box is mirrored inside
    its crop first (x -> x1 + x2 - x, which also swaps the box's left and right edges)."""
    c, g = _f64(crops).reshape(-1, 4), _f64(faces).reshape(-1, 4)
    flip = np.asarray(mirror, bool).reshape(-1)
    left = np.where(flip, c[:, 0] + c[:, 2] - g[:, 2], g[:, 0])
    right = np.where(flip, c[:, 0] + c[:, 2] - g[:, 0], g[:, 2])
    w, h = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    return np.stack([(left - c[:, 0]) / w, (g[:, 1] - c[:, 1]) / h, (right - c[:, 2]) / w, (g[:, 3] - c[:, 3]) / h],
                    axis=1)


def rotate_about(x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, degrees: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate points counter-clockwise as displayed (y axis down) by `degrees` about (cx, cy)."""
    t = np.deg2rad(_f64(degrees))
    cos, sin = np.cos(t), np.sin(t)
    dx, dy = x - cx, y - cy
    return cx + cos * dx + sin * dy, cy - sin * dx + cos * dy


def landmark_targets(points: np.ndarray, crops: np.ndarray, angles: np.ndarray, mirror: np.ndarray,
                     flip_pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """(N, K, 2) targets of image points (N, K, 2): rotated about the crop centre, normalised to the crop,
    mirrored (u -> 1 - u, then left/right points trade places)."""
    p, c = _f64(points), _f64(crops).reshape(-1, 4)
    cx, cy = ((c[:, 0] + c[:, 2]) / 2)[:, None], ((c[:, 1] + c[:, 3]) / 2)[:, None]
    rx, ry = rotate_about(p[..., 0], p[..., 1], cx, cy, _f64(angles).reshape(-1, 1))
    u = (rx - c[:, None, 0]) / (c[:, 2] - c[:, 0])[:, None]
    v = (ry - c[:, None, 1]) / (c[:, 3] - c[:, 1])[:, None]
    flip = np.asarray(mirror, bool).reshape(-1)
    u[flip] = 1.0 - u[flip]
    out = np.stack([u, v], axis=2)
    swapped = out.copy()
    for a, b in flip_pairs:
        swapped[:, a], swapped[:, b] = out[:, b], out[:, a]
    return np.where(flip[:, None, None], swapped, out)
