"""The one definition of how a sample's crop, mirror flag and angle map image coordinates to targets.

A sample is cut as follows (render, the planners and verify_labels all use these helpers, so pixels
and targets agree exactly):

1. rotate the whole image by `angle` degrees (counter-clockwise as displayed, cv2.getRotationMatrix2D)
   about the crop centre ((x1 + x2) / 2, (y1 + y2) / 2), in continuous coordinates;
2. cut the crop box x1, y1, x2, y2 (integer pixels; x2 exclusive) from the rotated image, zero-padded
   where it leaves the image;
3. mirror horizontally if `mirror` (x -> x1 + x2 - x), swapping left/right points with the landmark
   scheme's flip permutation;
4. resize to size x size.

Pixels (render): a point of the rotated image is read from the source by rotating it back about the crop
centre to (sx, sy) and interpolating bilinearly at pixel index (sx - 0.5, sy - 0.5), zero outside the image.
- rotated, "linear" (the default): output pixel (i, j) reads the crop point
  (x1 + (i + 0.5) * w / size, y1 + (j + 0.5) * h / size), w and h the crop's width and height: one
  cv2.warpAffine straight to size x size, one interpolation;
- rotated, "area": the crop window's pixel centres (x1 + k + 0.5, y1 + l + 0.5) are read (a warp at the
  crop's own size), then cv2.resize with INTER_AREA (a box filter cannot be folded into the warp);
- unrotated: the zero-padded slice image[y1:y2, x1:x2], then cv2.resize (INTER_LINEAR or INTER_AREA).
  INTER_LINEAR reads the same crop points as the rotated rule when shrinking (when enlarging it clamps
  them to the slice's edge pixels), so a rotated linear crop tends to the unrotated one as the angle
  goes to 0.
The size x size result is then flipped if `mirror`.

Targets are expressed in the crop before resizing, normalised by the crop width/height, so they do not
depend on the output size: box offsets (gt - crop) / size, landmark points (p - crop corner) / size.
"""

from __future__ import annotations

import numpy as np


def rotation_matrices(centres: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(N, 2, 3) float64 matrices, exactly cv2.getRotationMatrix2D(centre, angle, 1.0) vectorised."""
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    theta = np.deg2rad(np.asarray(angles, np.float64).reshape(-1))
    alpha, beta = np.cos(theta), np.sin(theta)
    m = np.empty((len(c), 2, 3), np.float64)
    m[:, 0, 0], m[:, 0, 1] = alpha, beta
    m[:, 1, 0], m[:, 1, 1] = -beta, alpha
    m[:, 0, 2] = (1 - alpha) * c[:, 0] - beta * c[:, 1]
    m[:, 1, 2] = beta * c[:, 0] + (1 - alpha) * c[:, 1]
    return m


def crop_centres(crops: np.ndarray) -> np.ndarray:
    c = np.asarray(crops, np.float64).reshape(-1, 4)
    return np.stack([(c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2], axis=1)


def pixel_crop_matrices(crops: np.ndarray, angles: np.ndarray, size: int | None = None) -> np.ndarray:
    """(N, 2, 3) cv2.warpAffine matrices from image pixel indices to sample pixel indices (steps 1-2 above).

    Pixel index k covers the continuous interval [k, k + 1), so a rotation about continuous point c is a
    rotation about pixel index c - 0.5. Without `size` the target is the crop window at its own size
    (crop pixel k is the continuous point x1 + k + 0.5); with it, the size x size output whose pixel j is
    the continuous point x1 + (j + 0.5) * w / size, i.e. crop pixel index k maps to (k + 0.5) * size / w - 0.5.
    """
    c = np.asarray(crops, np.float64).reshape(-1, 4)
    m = rotation_matrices(crop_centres(c) - 0.5, np.asarray(angles, np.float64))
    m[:, :, 2] -= c[:, :2]
    if size is not None:
        scale = size / (c[:, 2:] - c[:, :2])  # (N, 2): x and y
        m *= scale[:, :, None]
        m[:, :, 2] += 0.5 * scale - 0.5
    return m


def offsets_for(crops: np.ndarray, gt_boxes: np.ndarray, mirror: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) float32 box regression targets (gt - crop) / crop size in x1, y1, x2, y2 order.

    For mirrored samples the face box is mirrored inside the crop too (x offsets swap and negate).
    No rounding (the reference's `%.2f` is not reproduced).
    """
    c = np.asarray(crops, np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    w = c[:, 2] - c[:, 0]
    h = c[:, 3] - c[:, 1]
    out = np.stack(
        [(g[:, 0] - c[:, 0]) / w, (g[:, 1] - c[:, 1]) / h, (g[:, 2] - c[:, 2]) / w, (g[:, 3] - c[:, 3]) / h],
        axis=1,
    )
    if mirror is not None:
        m = np.asarray(mirror, bool).reshape(-1)
        out[m] = np.stack([-out[m, 2], out[m, 1], -out[m, 0], out[m, 3]], axis=1)
    return out.astype(np.float32)


def landmark_targets(
    points: np.ndarray,
    crops: np.ndarray,
    angles: np.ndarray,
    mirror: np.ndarray,
    flip_permutation: np.ndarray,
) -> np.ndarray:
    """(N, K, 2) float32 landmark targets of N samples: image points (N, K, 2) through steps 1-3."""
    p = np.asarray(points, np.float64).reshape(len(crops), -1, 2)
    c = np.asarray(crops, np.float64).reshape(-1, 4)
    m = rotation_matrices(crop_centres(c), np.asarray(angles, np.float32))
    rotated = np.einsum("nij,nkj->nki", m[:, :, :2], p) + m[:, None, :, 2]
    w = (c[:, 2] - c[:, 0])[:, None]
    h = (c[:, 3] - c[:, 1])[:, None]
    u = (rotated[:, :, 0] - c[:, None, 0]) / w
    v = (rotated[:, :, 1] - c[:, None, 1]) / h
    flip = np.asarray(mirror, bool).reshape(-1)
    u[flip] = 1.0 - u[flip]
    out = np.stack([u, v], axis=2)
    out[flip] = out[flip][:, np.asarray(flip_permutation)]
    return out.astype(np.float32)
