"""Landmark samples (label -2) from a 5-point manifest: shifted squares, mirrored and rotated variants.

Per usable face with all K points present: `shifts_per_face` squares with the positive geometry
(crops.shifted_squares), kept when IoU with the face box > min_iou (strict, as the reference), plus
the face box itself rounded outwards (`include_original`, the reference's "original" sample, never
varied). The variants of each kept shift (`variants`):
- "random": `copies_per_shift` samples, each with its own mirror draw (p = 0.5 when `mirror`) and angle
  uniform in [-max_rotation, max_rotation] degrees (0 disables rotation);
- "reference": the reference generator's enumeration: the plain crop; with p = 0.5 its mirror; with
  p = 0.5 a +max_rotation rotation and that rotation mirrored; with p = 0.5 a -max_rotation rotation and
  its mirror (3.5 samples per kept shift on average; `copies_per_shift` must be 1, mirrors need `mirror`).
Samples with any target outside [0, 1] are dropped (reference draws: outside the open interval (0, 1)).
Box offsets of landmark samples are left at 0 (not defined under rotation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.faces import SIDES, large_enough
from facedata.fusion.schemes import SCHEMES
from facedata.samplers.crops import DRAWS, INTERPOLATIONS, shifted_squares
from facedata.samplers.geometry import landmark_targets
from facedata.samplers.iou import iou_pairs
from facedata.samplers.tasks import ImageTask
from facedata.samples import LABEL_LANDMARK, image_rng, sample_dtype

STREAM_LANDMARKS = 11
VARIANTS = ("random", "reference")


@dataclass(frozen=True)
class LandmarkRecipe:
    size: int = 12
    # 100 x 2: about 94 samples per CUHK face, enough for 3:1:1:2 at full WIDER + CUHK scale
    # (benchmarks/plan_counts.py: 65 needed per face); the reference draws 10 shifts, 3.5 variants each
    shifts_per_face: int = 100
    copies_per_shift: int = 2
    include_original: bool = True
    min_iou: float = 0.65  # kept when IoU > min_iou
    mirror: bool = True
    max_rotation: float = 5.0
    scheme: str = "mtcnn5"
    ignore_under: float = 20.0  # faces whose size is under this (px) give no landmark sample
    face_side: str = "shorter"  # the face size: facedata.faces.SIDES ("larger": --recipe reference only)
    jitter: float = 0.2
    scale_low: float = 0.8
    scale_high: float = 1.25
    interpolation: str = "linear"
    variants: str = "random"  # see VARIANTS
    draws: str = "facedata"  # crops.DRAWS; "reference" also takes IoU on x2 - x1 + 1 widths

    def __post_init__(self) -> None:
        if self.size < 1 or self.shifts_per_face < 0 or self.copies_per_shift < 1:
            raise FacedataError("need size >= 1, shifts_per_face >= 0, copies_per_shift >= 1")
        if not 0 <= self.min_iou < 1 or self.max_rotation < 0 or not 0 < self.scale_low <= self.scale_high:
            raise FacedataError("need 0 <= min_iou < 1, max_rotation >= 0, 0 < scale_low <= scale_high")
        if self.interpolation not in INTERPOLATIONS:
            raise FacedataError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if self.variants not in VARIANTS or self.draws not in DRAWS or self.face_side not in SIDES:
            raise FacedataError(f"variants must be one of {VARIANTS}, draws one of {DRAWS}, face_side one of {SIDES}")
        if self.variants == "reference" and self.copies_per_shift != 1:
            raise FacedataError("reference variants enumerate their own copies: copies_per_shift "
                                "(--landmark-copies) must be 1")
        SCHEMES.get(self.scheme)

    @property
    def plus_one_iou(self) -> bool:
        """The reference draws keep a shift on IoU with x2 - x1 + 1 widths (crops.CropRecipe.plus_one_iou)."""
        return self.draws == "reference"

    @property
    def flip_permutation(self) -> np.ndarray:
        return SCHEMES.get(self.scheme).flip_permutation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def landmark_faces(task: ImageTask, recipe: LandmarkRecipe) -> np.ndarray:
    """Positions of faces that give landmark samples: usable, large enough, every point present (the
    reference draws also skip faces starting left of or above the image)."""
    if task.points is None:
        return np.zeros(0, np.int64)
    ok = task.usable & large_enough(task.boxes, recipe.ignore_under, recipe.face_side)
    ok &= np.isfinite(task.points).all(axis=(1, 2))
    if recipe.draws == "reference":
        ok &= (task.boxes[:, 0] >= 0) & (task.boxes[:, 1] >= 0)
    return np.flatnonzero(ok)


def _variants(
    rng: np.random.Generator, crops: np.ndarray, face: np.ndarray, n_original: int, recipe: LandmarkRecipe
) -> tuple[np.ndarray, ...]:
    """(crops, face, mirror, angle) of every sample: originals plain, then each kept shift's variants."""
    shifts, shift_face = crops[n_original:], face[n_original:]
    if recipe.variants == "reference":
        n = len(shifts)
        mirror_plain, rot_plus, rot_minus = (rng.random(n) < 0.5 for _ in range(3))
        mirror_plain &= recipe.mirror
        a = float(recipe.max_rotation)
        # per shift: plain, [mirror], [+a, +a mirrored], [-a, -a mirrored] (the reference's order)
        kinds = [(np.ones(n, bool), False, 0.0), (mirror_plain, True, 0.0), (rot_plus, False, a),
                 (rot_plus & recipe.mirror, True, a), (rot_minus, False, -a), (rot_minus & recipe.mirror, True, -a)]
        take = np.stack([k[0] for k in kinds], axis=1)  # (n, 6)
        row, kind = np.nonzero(take)
        var_crops, var_face = shifts[row], shift_face[row]
        var_mirror = np.array([k[1] for k in kinds])[kind]
        var_angle = np.array([k[2] for k in kinds], np.float32)[kind]
    else:
        var_crops = np.repeat(shifts, recipe.copies_per_shift, axis=0)
        var_face = np.repeat(shift_face, recipe.copies_per_shift)
        m = len(var_crops)
        var_mirror = rng.random(m) < 0.5 if recipe.mirror else np.zeros(m, bool)
        var_angle = rng.uniform(-recipe.max_rotation, recipe.max_rotation, m).astype(np.float32)
        if recipe.max_rotation == 0:
            var_angle[:] = 0
    return (
        np.concatenate([crops[:n_original], var_crops]),
        np.concatenate([face[:n_original], var_face]),
        np.concatenate([np.zeros(n_original, bool), var_mirror]),
        np.concatenate([np.zeros(n_original, np.float32), var_angle]),
    )


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
    rows = landmark_faces(task, recipe)
    if len(rows) == 0:
        return np.zeros(0, dtype)
    rng = image_rng(seed, task.image_id, STREAM_LANDMARKS)
    face = np.repeat(rows, recipe.shifts_per_face)
    crops, inside = shifted_squares(rng, task.boxes[face], task.width, task.height, recipe)
    n_original = 0
    if recipe.include_original:
        b = task.boxes[rows].astype(np.float64)
        original = np.concatenate([np.floor(b[:, :2]), np.ceil(b[:, 2:])], axis=1).astype(np.int64)
        fits = (original[:, :2] >= 0).all(axis=1) & (original[:, 2] <= task.width) & (
            original[:, 3] <= task.height
        )
        n_original = int(fits.sum())
        crops, face = np.concatenate([original[fits], crops]), np.concatenate([rows[fits], face])
        inside = np.concatenate([np.ones(n_original, bool), inside])
    crops, face = crops[inside], face[inside]
    keep = iou_pairs(crops, task.boxes[face], plus_one=recipe.plus_one_iou) > recipe.min_iou
    keep[:n_original] = True  # the original is the face box itself (the reference never tests it)
    crops, face = crops[keep], face[keep]
    crops, face, mirror, angle = _variants(rng, crops, face, n_original, recipe)
    if len(crops) == 0:
        return np.zeros(0, dtype)
    targets = landmark_targets(task.points[face], crops, angle, mirror, scheme.flip_permutation)
    if recipe.draws == "reference":
        ok = ((targets > 0) & (targets < 1)).all(axis=(1, 2))
    else:
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
