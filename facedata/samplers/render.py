"""Cut the pixels of planned samples from a decoded image (geometry in facedata.samplers.geometry)."""

from __future__ import annotations

import cv2
import numpy as np

from facedata.samplers.geometry import pixel_crop_matrices

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def _cut(image: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """image[y1:y2, x1:x2] zero-padded where the box leaves the image."""
    h, w = image.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1, image.shape[2]), image.dtype)
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return out


def render(image: np.ndarray, records: np.ndarray, size: int, interpolation: str = "linear") -> np.ndarray:
    """(N, size, size, 3) uint8 crops of `records` (crop, angle, mirror fields) from a BGR HWC image.

    Crop boxes must be whole pixels (geometry's module doc has the full rule). Unrotated crops are a slice
    + cv2.resize. Rotated "linear" crops are one cv2.warpAffine straight to size x size: output pixel (i, j)
    reads the source bilinearly (zero outside) at pixel index p - 0.5, p the crop point
    (x1 + (i + 0.5) * w / size, y1 + (j + 0.5) * h / size) rotated back about the crop centre. (Warping
    each ~150 px window before the resize took 3x the time of resizing every crop of a PNet build.)
    Rotated "area" crops warp the window at its own size (crop pixel k reads the point x1 + k + 0.5 rotated
    back), then resize it with INTER_AREA. Mirroring flips the result.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    flag = _INTERPOLATION[interpolation]
    crops = np.asarray(records["crop"], np.float64).reshape(-1, 4)
    boxes = np.rint(crops).astype(np.int64)
    if not np.array_equal(boxes, crops):
        raise ValueError("crop boxes must be whole pixels")
    if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise ValueError("crop boxes must have positive width and height")
    angles = np.asarray(records["angle"], np.float64).reshape(-1)
    mirror = (np.asarray(records["mirror"]) != 0).tolist()
    composed = interpolation == "linear"
    rotated = np.flatnonzero(angles != 0)
    matrices = dict(zip(rotated.tolist(), pixel_crop_matrices(crops[rotated], angles[rotated],
                                                              size if composed else None), strict=True))
    h, w = image.shape[:2]
    dsize = (size, size)
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if i in matrices:
            patch = cv2.warpAffine(
                image, matrices[i], dsize if composed else (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
            )
        elif x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
            patch = image[y1:y2, x1:x2]
        else:
            patch = _cut(image, x1, y1, x2, y2)
        # the hot path (hundreds of crops per image): resize (a copy when the patch is already size x size)
        # and flip straight into the output
        if mirror[i]:
            cv2.flip(cv2.resize(patch, dsize, interpolation=flag), 1, dst=out[i])
        else:
            cv2.resize(patch, dsize, dst=out[i], interpolation=flag)
    return out
