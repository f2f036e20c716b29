"""The one rule for which annotated faces may be sampled and which stay ignore regions.

A face is *flagged* when it is marked invalid (WIDER `invalid` = 1), kept as an ignore region by a filter
(the optional boolean face column `ignore`), or degenerate (width or height <= 0, continuous convention
x2 - x1). A face is *usable* (the samplers may cut positives, parts and landmark samples from it) when it
is not flagged and its larger side is at least `min_face`. Every other face is an ignore region: it still
counts in the negative test and no negative may overlap it.

The manifest (its `degenerate` column), filter, stats, samplers and build all call these functions; none
re-derives the rule. numpy only (pandas for the table helpers), so every layer may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

IGNORE_COLUMN = "ignore"  # optional face column: True = keep as an ignore region, never sample


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def degenerate(boxes: np.ndarray) -> np.ndarray:
    """True where a box has zero or negative width or height."""
    b = _as_boxes(boxes)
    return (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])


def large_enough(boxes: np.ndarray, min_face: float) -> np.ndarray:
    """True where the larger side (x2 - x1 or y2 - y1) is at least min_face px."""
    b = _as_boxes(boxes)
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= min_face


def flagged(boxes: np.ndarray, invalid: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """True where a face is never usable whatever its size: invalid, ignored or degenerate."""
    out = np.asarray(invalid, bool) | degenerate(boxes)
    return out if ignore is None else out | np.asarray(ignore, bool)


def usable_faces(
    boxes: np.ndarray, invalid: np.ndarray, min_face: float, ignore: np.ndarray | None = None
) -> np.ndarray:
    """True where a face may be sampled: not flagged and large enough."""
    return ~flagged(boxes, invalid, ignore) & large_enough(boxes, min_face)


def ignore_flags(faces: pd.DataFrame) -> np.ndarray | None:
    """The `ignore` column as bools (missing values False), or None for manifests without it."""
    if IGNORE_COLUMN not in faces:
        return None
    return faces[IGNORE_COLUMN].astype("boolean").fillna(False).to_numpy(bool)


def face_boxes(faces: pd.DataFrame) -> np.ndarray:
    """(F, 4) float32 x1 y1 x2 y2 of a faces table."""
    return faces[["x1", "y1", "x2", "y2"]].to_numpy(np.float32).reshape(-1, 4)


def flagged_rows(faces: pd.DataFrame) -> np.ndarray:
    """flagged() of every row of a manifest faces table."""
    return flagged(face_boxes(faces), faces["invalid"].to_numpy(bool), ignore_flags(faces))


def usable_rows(faces: pd.DataFrame, min_face: float) -> np.ndarray:
    """usable_faces() of every row of a manifest faces table."""
    return ~flagged_rows(faces) & large_enough(face_boxes(faces), min_face)
