"""The one rule for which annotated faces may be sampled and which stay ignore regions, and what "face size" means.

Face size is the **shorter side** of the box (continuous convention: min(x2 - x1, y2 - y1)) everywhere a size
threshold applies: `filter --min-size`, the stats/report survival table (`--survival-px`) and the builds'
`--ignore-under` / `--landmark-ignore-under`. A face "under 10 px" is one whose width or height is under
10 px, as the field uses the phrase: the Ultra-Light-Fast detector's WIDER filter keeps a face only when
width >= 10 and height >= 10, and a detector cannot find a face narrower than its smallest anchor whatever
its height. So a 12 x 8 px face is under 10 px for every command. The one exception is recorded, not implied:
`build pnet --recipe reference` reproduces the MTCNN reference script, which skips a face when max(w, h)
< 20, so its recipes say `face_side: larger` (index.json records the side with the threshold).

A face is *flagged* when it is marked invalid (WIDER `invalid` = 1), kept as an ignore region by a filter
(the optional boolean face column `ignore`), or degenerate (width or height <= 0). A face is *usable* (the
samplers may cut positives, parts and landmark samples from it) when it is not flagged and its size is at
least the build's `ignore_under`. Every other face is an ignore region: it still counts in the negative
test and no negative may overlap it.

The manifest (its `degenerate` column), filter, stats, samplers and build all call these functions; none
re-derives the rule. numpy only (pandas for the table helpers), so every layer may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

IGNORE_COLUMN = "ignore"  # optional face column: True = keep as an ignore region, never sample
SIDES = ("shorter", "larger")  # "shorter": facedata's face size; "larger": the MTCNN reference's rule only


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def degenerate(boxes: np.ndarray) -> np.ndarray:
    """True where a box has zero or negative width or height."""
    b = _as_boxes(boxes)
    return (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])


def face_size(widths: np.ndarray, heights: np.ndarray, side: str = "shorter") -> np.ndarray:
    """The size of faces of these widths and heights (px): their shorter side, or for side="larger" their
    larger one."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, not {side!r}")
    pick = np.minimum if side == "shorter" else np.maximum
    return pick(np.asarray(widths, np.float64), np.asarray(heights, np.float64))


def large_enough(boxes: np.ndarray, min_px: float, side: str = "shorter") -> np.ndarray:
    """True where a box's size (its shorter side, or its larger for side="larger") is at least min_px."""
    b = _as_boxes(boxes)
    return face_size(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], side) >= min_px


def flagged(boxes: np.ndarray, invalid: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """True where a face is never usable whatever its size: invalid, ignored or degenerate."""
    out = np.asarray(invalid, bool) | degenerate(boxes)
    return out if ignore is None else out | np.asarray(ignore, bool)


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


def usable_rows(faces: pd.DataFrame, ignore_under: float, side: str = "shorter") -> np.ndarray:
    """True where a face of a manifest faces table may be sampled: not flagged and large enough."""
    return ~flagged_rows(faces) & large_enough(face_boxes(faces), ignore_under, side)
