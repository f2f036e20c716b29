"""IoU crop sampler (MTCNN positives, parts and negatives) as a pure function of (task, recipe, seed).

Geometry follows the reference recipe (docs: ../shared/specs/mtcnn-reference.md §1) with its bugs fixed:
bounded negative loop, zero-face images give negatives only, every draw from image_rng, invalid /
degenerate / tiny faces are ignore regions that no negative may overlap, float32 targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.faces import SIDES, large_enough
from facedata.samplers.geometry import offsets_for
from facedata.samplers.iou import coverage_matrix, iou_matrix, iou_pairs
from facedata.samplers.tasks import ImageTask
from facedata.samples import (
    LABEL_NEGATIVE,
    LABEL_PART,
    LABEL_POSITIVE,
    NO_FACE,
    SAMPLE_DTYPE,
    image_rng,
)

# image_rng streams of the crop planner (the landmark planner uses its own, see landmarks.py).
STREAM_RANDOM_NEGATIVES, STREAM_NEAR_NEGATIVES, STREAM_POSITIVES = 1, 2, 3
DROPPED = -128  # classify(): IoU between the negative and part thresholds, never saved
INTERPOLATIONS = ("linear", "area")
# "facedata": inclusive integer ranges on continuous widths (x2 - x1). "reference": the reference script's
# integer draws (widths x2 - x1 + 1, numpy randint's truncated bounds with exclusive high, faces with
# x1 or y1 < 0 not sampled), for reproducing its class counts (spec §1).
DRAWS = ("facedata", "reference")


@dataclass(frozen=True)
class CropRecipe:
    """Every count and threshold of the crop sampler. Defaults: facedata's fixed recipe (the reference's
    values except 75 random negatives per image; samplers/presets.py holds the reference preset).

    Negatives are kept when max IoU with every face (ignore regions included) < negative_iou and they
    cover at most `ignore_cover` of any ignore region's area (0: no overlap at all).
    """

    size: int = 12  # output side in pixels
    min_crop: int | None = None  # smallest negative crop side; None = size
    negatives_per_image: int = 75  # reference 50: 3:1:1:2 at full WIDER needs ~60 (benchmarks/plan_counts.py)
    negative_max_tries: int = 1000  # bound of the random-negative loop per image
    near_negatives_per_face: int = 5
    positive_tries_per_face: int = 20
    ignore_under: float = 20.0  # faces whose size is under this (px) are not sampled: ignore regions
    face_side: str = "shorter"  # the face size: facedata.faces.SIDES ("larger": --recipe reference only)
    negative_iou: float = 0.3
    part_iou: float = 0.4
    positive_iou: float = 0.65
    ignore_cover: float = 0.0
    jitter: float = 0.2
    scale_low: float = 0.8
    scale_high: float = 1.25
    plus_one_iou: bool = False  # reference (x2 - x1 + 1) areas
    interpolation: str = "linear"
    draws: str = "facedata"  # see DRAWS

    def __post_init__(self) -> None:
        if self.size < 1 or (self.min_crop is not None and self.min_crop < 1):
            raise FacedataError("size and min_crop must be >= 1")
        for name in ("negatives_per_image", "negative_max_tries", "near_negatives_per_face",
                     "positive_tries_per_face"):
            if getattr(self, name) < 0:
                raise FacedataError(f"{name} must be >= 0")
        if not 0 <= self.negative_iou <= self.part_iou <= self.positive_iou <= 1:
            raise FacedataError("need 0 <= negative_iou <= part_iou <= positive_iou <= 1")
        if not 0 < self.scale_low <= self.scale_high or self.jitter < 0 or not 0 <= self.ignore_cover <= 1:
            raise FacedataError("need 0 < scale_low <= scale_high, jitter >= 0, 0 <= ignore_cover <= 1")
        if self.interpolation not in INTERPOLATIONS:
            raise FacedataError(f"interpolation must be one of {INTERPOLATIONS}, not {self.interpolation!r}")
        if self.draws not in DRAWS:
            raise FacedataError(f"draws must be one of {DRAWS}, not {self.draws!r}")
        if self.face_side not in SIDES:
            raise FacedataError(f"face_side must be one of {SIDES}, not {self.face_side!r}")

    @property
    def crop_min(self) -> int:
        return self.size if self.min_crop is None else self.min_crop

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(iou: np.ndarray, recipe: CropRecipe) -> np.ndarray:
    """int8 labels from IoU: >= positive_iou 1, >= part_iou -1, < negative_iou 0, otherwise DROPPED."""
    iou = np.asarray(iou)
    out = np.full(iou.shape, DROPPED, np.int8)
    out[iou < recipe.negative_iou] = LABEL_NEGATIVE
    out[iou >= recipe.part_iou] = LABEL_PART
    out[iou >= recipe.positive_iou] = LABEL_POSITIVE
    return out


def negative_mask(crops: np.ndarray, boxes: np.ndarray, usable: np.ndarray, recipe: CropRecipe) -> np.ndarray:
    """True where a crop may be a negative: max IoU vs all faces < negative_iou, ignore regions clear."""
    crops = np.asarray(crops, np.float64).reshape(-1, 4)
    ok = np.ones(len(crops), bool)
    if len(boxes) == 0 or len(crops) == 0:
        return ok
    ok &= iou_matrix(crops, boxes, plus_one=recipe.plus_one_iou).max(axis=1) < recipe.negative_iou
    ignore = boxes[~usable]
    if len(ignore):
        ok &= coverage_matrix(crops, ignore).max(axis=1) <= recipe.ignore_cover
    return ok


def label_boxes(
    crops: np.ndarray, boxes: np.ndarray, usable: np.ndarray, recipe: CropRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """Label arbitrary crops (e.g. detector outputs) against all faces of an image.

    Returns (labels int8, best face position int64 or -1). Negatives per negative_mask; otherwise the
    best-IoU face decides: pos/part if it is usable, DROPPED if it is an ignore region or the IoU falls
    between the negative and part thresholds.
    """
    crops = np.asarray(crops, np.float64).reshape(-1, 4)
    labels = np.full(len(crops), DROPPED, np.int8)
    best = np.full(len(crops), -1, np.int64)
    neg = negative_mask(crops, boxes, usable, recipe)
    labels[neg] = LABEL_NEGATIVE
    if len(boxes) and len(crops):
        iou = iou_matrix(crops, boxes, plus_one=recipe.plus_one_iou)
        arg = iou.argmax(axis=1)
        cls = classify(iou[np.arange(len(crops)), arg], recipe)
        face_ok = ~neg & usable[arg] & ((cls == LABEL_POSITIVE) | (cls == LABEL_PART))
        labels[face_ok] = cls[face_ok]
        best[face_ok] = arg[face_ok]
    return labels, best


def empty_records(n: int, dtype: np.dtype = SAMPLE_DTYPE) -> np.ndarray:
    return np.zeros(n, dtype)


def _negative_side_range(task: ImageTask, recipe: CropRecipe) -> tuple[int, int] | None:
    """Inclusive crop side range [min_crop, half the shorter side], or None if the image is too small
    (reference draws: randint(min_crop, short / 2), high exclusive)."""
    short = min(task.width, task.height)
    low = recipe.crop_min
    if recipe.draws == "reference":
        return (low, int(short / 2) - 1) if int(short / 2) > low else None
    if short < low:
        return None
    return low, min(short, max(low, short // 2))


def _random_negatives(task: ImageTask, recipe: CropRecipe, seed: int, usable: np.ndarray) -> np.ndarray:
    sides = _negative_side_range(task, recipe)
    want = recipe.negatives_per_image
    if sides is None or want == 0:
        return np.zeros((0, 4), np.int64)
    rng = image_rng(seed, task.image_id, STREAM_RANDOM_NEGATIVES)
    chunk = max(2 * want, 64)
    kept: list[np.ndarray] = []
    n_kept = tries = 0
    while n_kept < want and tries < recipe.negative_max_tries:
        k = min(chunk, recipe.negative_max_tries - tries)
        tries += k
        s = rng.integers(sides[0], sides[1], size=k, endpoint=True)
        # reference: randint(0, W - size), high exclusive (an image exactly 2 x min_crop wide has none)
        exclusive = recipe.draws == "reference"
        x = rng.integers(0, np.maximum(task.width - s - exclusive, 0), endpoint=True)
        y = rng.integers(0, np.maximum(task.height - s - exclusive, 0), endpoint=True)
        crops = np.stack([x, y, x + s, y + s], axis=1)
        crops = crops[negative_mask(crops, task.boxes, usable, recipe)]
        kept.append(crops)
        n_kept += len(crops)
    return np.concatenate(kept)[:want]


def sampled_faces(task: ImageTask, recipe: CropRecipe) -> np.ndarray:
    """task.usable restricted to the recipe's size rule (so verify_labels, which applies the recipe's
    rule to the manifest, sees the same ignore regions whatever rule built the task); the
    reference draws also skip faces starting left of or above the image."""
    usable = task.usable & large_enough(task.boxes, recipe.ignore_under, recipe.face_side)
    if recipe.draws == "reference":
        usable &= (task.boxes[:, 0] >= 0) & (task.boxes[:, 1] >= 0)
    return usable


def _near_negatives(
    task: ImageTask, recipe: CropRecipe, seed: int, usable: np.ndarray
) -> tuple[np.ndarray, ...]:
    rows = np.flatnonzero(usable)
    sides = _negative_side_range(task, recipe)
    tries = recipe.near_negatives_per_face
    if sides is None or tries == 0 or len(rows) == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    rng = image_rng(seed, task.image_id, STREAM_NEAR_NEGATIVES)
    face = np.repeat(rows, tries)
    b = task.boxes[face].astype(np.float64)
    fx1, fy1 = np.floor(b[:, 0]).astype(np.int64), np.floor(b[:, 1]).astype(np.int64)
    if recipe.draws == "reference":  # randint(max(-size, -x1), x2 - x1 + 1), nx1 = int(max(0, x1 + dx))
        w, h = np.trunc(b[:, 2] - b[:, 0] + 1).astype(np.int64), np.trunc(b[:, 3] - b[:, 1] + 1).astype(np.int64)
    else:
        w, h = np.ceil(b[:, 2] - b[:, 0]).astype(np.int64), np.ceil(b[:, 3] - b[:, 1]).astype(np.int64)
    s = rng.integers(sides[0], sides[1], size=len(face), endpoint=True)
    low_x, low_y = np.maximum(-s, -fx1), np.maximum(-s, -fy1)
    dx = rng.integers(low_x, np.maximum(w, low_x + 1))
    dy = rng.integers(low_y, np.maximum(h, low_y + 1))
    if recipe.draws == "reference":
        x1 = np.floor(np.maximum(0, b[:, 0] + dx)).astype(np.int64)
        y1 = np.floor(np.maximum(0, b[:, 1] + dy)).astype(np.int64)
    else:
        x1, y1 = np.maximum(0, fx1 + dx), np.maximum(0, fy1 + dy)
    crops = np.stack([x1, y1, x1 + s, y1 + s], axis=1)
    inside = (crops[:, 2] <= task.width) & (crops[:, 3] <= task.height)
    crops, face = crops[inside], face[inside]
    ok = negative_mask(crops, task.boxes, usable, recipe)
    return crops[ok], face[ok]


def shifted_squares(
    rng: np.random.Generator, boxes: np.ndarray, width: int, height: int, recipe: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Reference positive geometry: one square per box row, side in [scale_low·min, scale_high·max],
    centre jittered by ±jitter·w/h, top-left clipped at 0; returns (crops, inside mask).

    recipe.draws "reference": w = x2 - x1 + 1, side randint(int(0.8·min), ceil(1.25·max)) and jitter
    randint(-0.2·w, 0.2·w) with numpy's truncated bounds and exclusive high, as the reference script.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if recipe.draws == "reference":
        w, h = w + 1, h + 1
        low = np.maximum(1, np.trunc(recipe.scale_low * np.minimum(w, h))).astype(np.int64)
        high = np.maximum(low, np.ceil(recipe.scale_high * np.maximum(w, h)).astype(np.int64) - 1)
        jx, jy = np.trunc(recipe.jitter * w).astype(np.int64), np.trunc(recipe.jitter * h).astype(np.int64)
        dx = rng.integers(-jx, np.maximum(jx - 1, -jx), endpoint=True)
        dy = rng.integers(-jy, np.maximum(jy - 1, -jy), endpoint=True)
        s = rng.integers(low, high, endpoint=True)
    else:
        low = np.maximum(1, np.ceil(recipe.scale_low * np.minimum(w, h))).astype(np.int64)
        high = np.maximum(low, np.floor(recipe.scale_high * np.maximum(w, h))).astype(np.int64)
        s = rng.integers(low, high, endpoint=True)
        jx, jy = np.floor(recipe.jitter * w).astype(np.int64), np.floor(recipe.jitter * h).astype(np.int64)
        dx = rng.integers(-jx, jx, endpoint=True)
        dy = rng.integers(-jy, jy, endpoint=True)
    x1 = np.maximum(0, np.floor(b[:, 0] + w / 2 + dx - s / 2)).astype(np.int64)
    y1 = np.maximum(0, np.floor(b[:, 1] + h / 2 + dy - s / 2)).astype(np.int64)
    crops = np.stack([x1, y1, x1 + s, y1 + s], axis=1)
    return crops, (crops[:, 2] <= width) & (crops[:, 3] <= height)


def _positives(task: ImageTask, recipe: CropRecipe, seed: int, usable: np.ndarray) -> tuple[np.ndarray, ...]:
    rows = np.flatnonzero(usable)
    tries = recipe.positive_tries_per_face
    if tries == 0 or len(rows) == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
    rng = image_rng(seed, task.image_id, STREAM_POSITIVES)
    face = np.repeat(rows, tries)
    crops, inside = shifted_squares(rng, task.boxes[face], task.width, task.height, recipe)
    crops, face = crops[inside], face[inside]
    label = classify(iou_pairs(crops, task.boxes[face], plus_one=recipe.plus_one_iou), recipe)
    keep = (label == LABEL_POSITIVE) | (label == LABEL_PART)
    return crops[keep], face[keep], label[keep]


def plan_crops(task: ImageTask, recipe: CropRecipe, seed: int) -> np.ndarray:
    """SAMPLE_DTYPE records: random negatives, near-face negatives, then positives/parts (no pixels).

    face_index is -1 for random negatives and the face row the crop was drawn for otherwise (for a
    near-face negative only provenance: negatives are checked against every face). Depends only on
    (task, recipe, seed).
    """
    usable = sampled_faces(task, recipe)
    neg = _random_negatives(task, recipe, seed, usable)
    near, near_face = _near_negatives(task, recipe, seed, usable)
    pos, pos_face, pos_label = _positives(task, recipe, seed, usable)
    out = empty_records(len(neg) + len(near) + len(pos))
    out["origin"] = task.origin
    out["image_index"] = task.image_index
    out["crop"] = np.concatenate([neg, near, pos]).astype(np.float32)
    out["label"][: len(neg) + len(near)] = LABEL_NEGATIVE
    out["face_index"][: len(neg)] = NO_FACE
    out["face_index"][len(neg) : len(neg) + len(near)] = task.face_index[near_face]
    p = slice(len(neg) + len(near), None)
    out["label"][p] = pos_label
    out["face_index"][p] = task.face_index[pos_face]
    out["bbox"][p] = offsets_for(pos, task.boxes[pos_face])
    return out

