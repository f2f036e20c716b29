"""Hard examples: label the previous cascade stage's detections on one image (RNet/ONet training data).

Reference `save_hard_example` (spec §3): square and round each detection, skip sides < 20 px and boxes
crossing the image border, IoU against every GT box: < 0.3 negative (at most 60 per image), else the
best GT decides, ≥ 0.65 positive, ≥ 0.4 part, offsets (gt − box)/side. Here the IoU classes come from the
crop sampler's `label_boxes` (the same rule `verify --labels` re-derives): ignore regions (invalid,
degenerate, tiny faces) count in the negative test and no negative may overlap them; a box whose best
face is an ignore region is dropped. Differences from the reference, by design:
- identical squares (two detections rounding to the same box) give one sample, not two;
- with `pad_border` border-crossing boxes are kept and rendered zero-padded (boxes wholly outside the
  image are still dropped);
- over the negative cap, which negatives stay is a seeded choice: `negative_choice="random"` keeps a
  uniformly random subset drawn from image_rng(seed, image_id, STREAM_MINED_NEGATIVES) (same for any
  worker count), "first" keeps the first ones in detection order, i.e. the highest scored — the hardest,
  as the reference does by accident of its loop order. Kept samples stay in detection order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from facedata.detect.cascade import square_boxes
from facedata.errors import FacedataError
from facedata.samplers.crops import CropRecipe, empty_records, label_boxes
from facedata.samplers.geometry import offsets_for
from facedata.samplers.tasks import ImageTask
from facedata.samples import LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE, NO_FACE, image_rng

STREAM_MINED_NEGATIVES = 21  # crop planner uses 1-3, landmark planner 11
NEGATIVE_CHOICES = ("random", "first")


@dataclass(frozen=True)
class MiningRecipe:
    """Labelling of detections; defaults are the reference's values (size 24 for RNet, 48 for ONet)."""

    size: int = 24
    negative_iou: float = 0.3
    part_iou: float = 0.4
    positive_iou: float = 0.65
    max_negatives_per_image: int = 60
    min_size: float = 20  # squared detections smaller than this are dropped
    ignore_under: float = 20  # GT faces whose shorter side is under this are ignore regions (build tasks with it)
    pad_border: bool = False
    negative_choice: str = "random"
    plus_one_iou: bool = False  # reference (x2 − x1 + 1) areas, for reproducing its numbers only

    def __post_init__(self) -> None:
        if self.max_negatives_per_image < 0:
            raise FacedataError("max_negatives_per_image must be >= 0")
        if self.negative_choice not in NEGATIVE_CHOICES:
            raise FacedataError(
                f"negative_choice must be one of {NEGATIVE_CHOICES}, not {self.negative_choice!r}"
            )
        self.crop_recipe()  # validates sizes and thresholds

    def crop_recipe(self) -> CropRecipe:
        """The sampler recipe whose IoU classes (and verification) these labels follow."""
        return CropRecipe(
            size=self.size,
            negative_iou=self.negative_iou,
            part_iou=self.part_iou,
            positive_iou=self.positive_iou,
            ignore_under=self.ignore_under,
            plus_one_iou=self.plus_one_iou,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MiningCounts:
    """Per-image (or summed) outcome of labelling; negatives before and after the cap show a weak detector."""

    detections: int = 0
    small: int = 0  # squared side < min_size
    border: int = 0  # crossing the border (or, with pad_border, wholly outside)
    duplicates: int = 0  # same square as an earlier detection
    positives: int = 0
    parts: int = 0
    negatives: int = 0  # before the cap
    negatives_kept: int = 0  # after the cap
    dropped: int = 0  # IoU between the negative and part thresholds, or best face is an ignore region

    def __add__(self, other: MiningCounts) -> MiningCounts:
        return MiningCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def samples(self) -> int:
        return self.positives + self.parts + self.negatives_kept

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _first_unique(boxes: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row, in original order."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    _, first = np.unique(boxes, axis=0, return_index=True)
    return np.sort(first)


def label_detections(
    det_boxes: np.ndarray, task: ImageTask, recipe: MiningRecipe, seed: int
) -> tuple[np.ndarray, MiningCounts]:
    """SAMPLE_DTYPE records (no pixels; render them with samplers.render at recipe.size) and counts."""
    det = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    n_det = len(det)
    det = det[np.isfinite(det).all(axis=1)]
    boxes = square_boxes(det)
    side = boxes[:, 2] - boxes[:, 0]
    big = side >= recipe.min_size
    if recipe.pad_border:
        placed = (
            (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < task.width) & (boxes[:, 1] < task.height)
        )
    else:
        placed = (
            (boxes[:, 0] >= 0)
            & (boxes[:, 1] >= 0)
            & (boxes[:, 2] <= task.width)
            & (boxes[:, 3] <= task.height)
        )
    boxes = boxes[big & placed]
    unique = _first_unique(boxes)
    duplicates = len(boxes) - len(unique)
    boxes = boxes[unique]

    labels, best = label_boxes(boxes, task.boxes, task.usable, recipe.crop_recipe())
    neg = np.flatnonzero(labels == LABEL_NEGATIVE)
    cap = recipe.max_negatives_per_image
    if len(neg) > cap:
        if recipe.negative_choice == "random":
            rng = image_rng(seed, task.image_id, STREAM_MINED_NEGATIVES)
            chosen = np.sort(rng.permutation(len(neg))[:cap])
        else:
            chosen = np.arange(cap)
        over = np.ones(len(neg), bool)
        over[chosen] = False
        labels[neg[over]] = -128  # not saved
    pos_or_part = (labels == LABEL_POSITIVE) | (labels == LABEL_PART)
    keep = np.flatnonzero(pos_or_part | (labels == LABEL_NEGATIVE))

    out = empty_records(len(keep))
    out["label"] = labels[keep]
    out["origin"] = task.origin
    out["image_index"] = task.image_index
    out["crop"] = boxes[keep].astype(np.float32)
    out["face_index"] = NO_FACE
    face_rows = pos_or_part[keep]
    if face_rows.any():
        gt = best[keep][face_rows]
        out["face_index"][face_rows] = task.face_index[gt]
        out["bbox"][face_rows] = offsets_for(boxes[keep][face_rows], task.boxes[gt])
    n_pos, n_part = int((labels == LABEL_POSITIVE).sum()), int((labels == LABEL_PART).sum())
    counts = MiningCounts(
        detections=n_det,
        small=int((~big).sum()),
        border=int((big & ~placed).sum()),
        duplicates=duplicates,
        positives=n_pos,
        parts=n_part,
        negatives=len(neg),
        negatives_kept=min(len(neg), cap),
        dropped=len(boxes) - n_pos - n_part - len(neg),
    )
    return out, counts
