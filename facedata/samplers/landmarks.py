"""Landmark samples (label -2) from a 5-point manifest: shifted squares, random mirror and rotation.

Per usable face with all K points present: `shifts_per_face` squares with the positive geometry
(crops.shifted_squares), kept when IoU with the face box > min_iou (strict, as the reference), plus
the face box itself rounded outwards (`include_original`, the reference's "original" sample). Each kept
crop gives `copies_per_shift` samples, each with its own mirror draw (p = 0.5 when `mirror`) and angle
uniform in [-max_rotation, max_rotation] degrees (the reference used exactly 0 or ±5 with fixed
copies; 0 disables rotation). Samples with any target outside [0, 1] are dropped. Box offsets of
landmark samples are left at 0 (not defined under rotation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.faces import large_enough
from facedata.fusion.schemes import SCHEMES
from facedata.samplers.crops import INTERPOLATIONS, shifted_squares
from facedata.samplers.geometry import landmark_targets
from facedata.samplers.iou import iou_pairs
from facedata.samplers.tasks import ImageTask
from facedata.samples import LABEL_LANDMARK, image_rng, sample_dtype

STREAM_LANDMARKS = 11


@dataclass(frozen=True)
class LandmarkRecipe:
    size: int = 12
    shifts_per_face: int = 10
    copies_per_shift: int = 1
    include_original: bool = True
    min_iou: float = 0.65  # kept when IoU > min_iou
    mirror: bool = True
    max_rotation: float = 5.0
    scheme: str = "mtcnn5"
    min_face: float = 20.0
    jitter: float = 0.2
    scale_low: float = 0.8
    scale_high: float = 1.25
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        if self.size < 1 or self.shifts_per_face < 0 or self.copies_per_shift < 1:
            raise FacedataError("need size >= 1, shifts_per_face >= 0, copies_per_shift >= 1")
        if not 0 <= self.min_iou < 1 or self.max_rotation < 0 or not 0 < self.scale_low <= self.scale_high:
            raise FacedataError("need 0 <= min_iou < 1, max_rotation >= 0, 0 < scale_low <= scale_high")
        if self.interpolation not in INTERPOLATIONS:
            raise FacedataError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        SCHEMES.get(self.scheme)

    @property
    def flip_permutation(self) -> np.ndarray:
        return SCHEMES.get(self.scheme).flip_permutation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def landmark_faces(
    boxes: np.ndarray, usable: np.ndarray, points: np.ndarray | None, min_face: float
) -> np.ndarray:
    """Positions of faces that give landmark samples: usable, large enough, every point present."""
    if points is None:
        return np.zeros(0, np.int64)
    complete = np.isfinite(points).all(axis=(1, 2))
    return np.flatnonzero(usable & large_enough(boxes, min_face) & complete)


def plan_landmarks(task: ImageTask, recipe: LandmarkRecipe, seed: int) -> np.ndarray:
    """Label -2 records with crop, mirror, angle and landmark targets (no pixels)."""
    scheme = SCHEMES.get(recipe.scheme)
    dtype = sample_dtype(scheme.num_points)
    if task.points is None:
        return np.zeros(0, dtype)
    if task.points.shape[1] != scheme.num_points:
        raise FacedataError(
            f"{task.image_id}: faces have {task.points.shape[1]} points, scheme {scheme.name!r} has "
            f"{scheme.num_points}"
        )
    rows = landmark_faces(task.boxes, task.usable, task.points, recipe.min_face)
    if len(rows) == 0:
        return np.zeros(0, dtype)
    rng = image_rng(seed, task.image_id, STREAM_LANDMARKS)
    face = np.repeat(rows, recipe.shifts_per_face)
    crops, inside = shifted_squares(rng, task.boxes[face], task.width, task.height, recipe)
    if recipe.include_original:
        b = task.boxes[rows].astype(np.float64)
        original = np.concatenate([np.floor(b[:, :2]), np.ceil(b[:, 2:])], axis=1).astype(np.int64)
        fits = (original[:, :2] >= 0).all(axis=1) & (original[:, 2] <= task.width) & (
            original[:, 3] <= task.height
        )
        crops, inside = np.concatenate([original, crops]), np.concatenate([fits, inside])
        face = np.concatenate([rows, face])
    crops, face = crops[inside], face[inside]
    keep = iou_pairs(crops, task.boxes[face]) > recipe.min_iou
    crops = np.repeat(crops[keep], recipe.copies_per_shift, axis=0)
    face = np.repeat(face[keep], recipe.copies_per_shift)
    n = len(crops)
    mirror = rng.random(n) < 0.5 if recipe.mirror else np.zeros(n, bool)
    angle = rng.uniform(-recipe.max_rotation, recipe.max_rotation, n).astype(np.float32)
    if recipe.max_rotation == 0:
        angle[:] = 0
    targets = landmark_targets(task.points[face], crops, angle, mirror, scheme.flip_permutation)
    ok = ((targets >= 0) & (targets <= 1)).all(axis=(1, 2))
    out = np.zeros(int(ok.sum()), dtype)
    out["label"] = LABEL_LANDMARK
    out["origin"] = task.origin
    out["mirror"] = mirror[ok]
    out["image_index"] = task.image_index
    out["face_index"] = task.face_index[face[ok]]
    out["angle"] = angle[ok]
    out["crop"] = crops[ok].astype(np.float32)
    out["landmarks"] = targets[ok].reshape(len(out), -1)
    return out
