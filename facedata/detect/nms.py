"""Greedy non-maximum suppression, vectorised, near-linear in the number of boxes, in bounded memory.

Same decisions as the reference's per-box `py_nms` loop (sort by score, drop every later box whose
overlap with a kept box is > threshold), computed without a Python loop per box and without the
N×N matrix: the PNet stage of one image can give tens of thousands of boxes, where both the reference
loop (O(N·kept)) and a dense matrix are too slow or too big.

1. Candidate pairs: only boxes that intersect can suppress each other. Boxes are hashed on a grid as
   large as their largest side (so intersecting boxes fall in neighbouring cells); for IoU ("union")
   the grid is built per band of box areas, since IoU ≤ smaller area / larger area rules out pairs of
   very different sizes. Pairs are generated in chunks and filtered by overlap > threshold at once.
2. Greedy on the pairs: keep_j = not any(keep_i for suppressor i ranked before j) is iterated to its
   fixed point, which is exactly the greedy answer (box j only depends on earlier boxes).

Boxes are continuous (x1, y1, x2, y2), area = (x2 − x1)(y2 − y1) — the manifest convention — not the
reference's +1 pixel areas. Ties in score keep the lower index first.

`lattice_nms` gives the same answer for PNet's boxes, which lie on one regular lattice per pyramid level:
there the overlapping pairs are a fixed stencil of cell offsets, found by shifting an index grid.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from facedata.samplers.iou import box_areas, iou_pairs, min_overlap_pairs

_CHUNK = 4096  # boxes per pair-generation chunk
_MAX_PAIRS = 1 << 18  # candidate pairs expanded at once (bounds the temporaries to a few MB)
_OFFSETS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]


def overlap_pairs(a: np.ndarray, b: np.ndarray, mode: str = "union") -> np.ndarray:
    """Overlap of a[k] with b[k]: IoU ("union") or intersection / smaller area ("min")."""
    return iou_pairs(a, b) if mode == "union" else min_overlap_pairs(a, b)


def _grid_pairs(
    boxes: np.ndarray, a: np.ndarray, b: np.ndarray, same: bool, threshold: float, mode: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (i, j), i < j, of positions from sets a × b whose overlap > threshold (grid-hashed)."""
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cell = float(max(side[a].max(), side[b].max(), 1e-6))
    ca = np.floor(boxes[a, :2] / cell).astype(np.int64)
    cb = np.floor(boxes[b, :2] / cell).astype(np.int64)
    low = np.minimum(ca.min(axis=0), cb.min(axis=0)) - 1
    span = int(max(ca[:, 1].max(), cb[:, 1].max()) - low[1] + 2)
    kb = (cb[:, 0] - low[0]) * span + (cb[:, 1] - low[1])
    order = np.argsort(kb, kind="stable")
    kb_sorted = kb[order]
    out = []
    for start in range(0, len(a), _CHUNK):
        ia = a[start : start + _CHUNK]
        cell_a = ca[start : start + _CHUNK]
        for dx, dy in _OFFSETS:
            key = (cell_a[:, 0] + dx - low[0]) * span + (cell_a[:, 1] + dy - low[1])
            lo_all = np.searchsorted(kb_sorted, key, "left")
            count_all = np.searchsorted(kb_sorted, key, "right") - lo_all
            cum = np.cumsum(count_all)
            if cum[-1] == 0:
                continue
            # split the rows so that no piece expands to more than _MAX_PAIRS candidates
            cuts = np.searchsorted(cum, np.arange(_MAX_PAIRS, cum[-1], _MAX_PAIRS), "left")
            bounds = [0, *np.unique(np.maximum(cuts, 1)).tolist(), len(ia)]
            for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
                lo, count = lo_all[r0:r1], count_all[r0:r1]
                total = int(count.sum())
                if total == 0:
                    continue
                first = np.repeat(lo - (np.cumsum(count) - count), count)
                i = np.repeat(ia[r0:r1], count)
                j = b[order[first + np.arange(total)]]
                sel = (i < j) if same else (i != j)
                i, j = i[sel], j[sel]
                hit = overlap_pairs(boxes[i], boxes[j], mode) > threshold
                i, j = i[hit], j[hit]
                out.append((np.minimum(i, j), np.maximum(i, j)))
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices (into `boxes`, best score first) of the boxes greedy NMS keeps."""
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', not {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(boxes)
    order = np.argsort(-scores, kind="stable")
    if n < 2 or threshold >= 1:
        return order.astype(np.int64)
    if threshold < 0:  # everything "overlaps" everything: only the best survives
        return order[:1].astype(np.int64)
    ordered = boxes[order]  # position p = rank in score order
    area = box_areas(ordered)
    live = np.flatnonzero((area > 0) & np.isfinite(ordered).all(axis=1))
    if len(live) < 2:
        return order.astype(np.int64)
    if mode == "union" and threshold > 0:
        # IoU > t needs area ratio > t: bands of ×2 in area, pairs only across `reach` bands.
        band = np.floor(np.log2(area[live])).astype(np.int64)
        reach = math.ceil(math.log2(1.0 / threshold)) + 1
    else:
        band, reach = np.zeros(len(live), np.int64), 1
    members = {int(k): live[band == k] for k in np.unique(band)}
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for k, a in members.items():
        for k2 in range(k, k + reach):
            if k2 in members:
                pairs += _grid_pairs(ordered, a, members[k2], k2 == k, threshold, mode)
    return order[_greedy(n, pairs)].astype(np.int64)


def _greedy(n: int, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Keep mask over score ranks 0..n-1 from (better rank, worse rank) overlap pairs.

    keep_j = not any(keep_i for suppressor i of j) iterated to its fixed point: exactly greedy NMS, since
    box j only depends on boxes ranked before it.
    """
    keep = np.ones(n, dtype=bool)
    if not pairs:
        return keep
    sup = np.concatenate([p[0] for p in pairs])
    vic = np.concatenate([p[1] for p in pairs])
    while True:
        suppressed = np.zeros(n, dtype=bool)
        suppressed[vic[keep[sup]]] = True
        new = ~suppressed
        if np.array_equal(new, keep):
            return keep
        keep = new


@dataclass(frozen=True)
class Lattice:
    """Boxes of one PNet pyramid level: cell (col, row) covers [stride·col, stride·col + cell) in level
    pixels, mapped to image pixels by the level's per-axis ratios; every box of a level has one size."""

    cols: np.ndarray  # (N,) int
    rows: np.ndarray  # (N,) int
    boxes: np.ndarray  # (N, 4) float64 image pixels
    scores: np.ndarray  # (N,)
    cell: int
    stride: int

    def subset(self, idx: np.ndarray) -> Lattice:
        return Lattice(self.cols[idx], self.rows[idx], self.boxes[idx], self.scores[idx], self.cell, self.stride)


@functools.lru_cache(maxsize=64)
def _stencil(cell: int, stride: int, threshold: float) -> tuple[tuple[int, int], ...]:
    """Cell offsets (dc, dr), half plane, at which two boxes of a lattice can overlap by > threshold.

    IoU is invariant under per-axis scaling, so it is computed in level cells; a small slack keeps the
    offsets whose exact IoU equals the threshold, which the float check on real coordinates then decides.
    """
    out, reach = [], -(-cell // stride)
    for dr in range(0, reach):
        for dc in range(-reach + 1, reach):
            if (dr, dc) <= (0, 0):
                continue
            inter = max(0, cell - stride * abs(dc)) * max(0, cell - stride * abs(dr))
            if inter / (2 * cell * cell - inter) > threshold - 1e-6:
                out.append((dc, dr))
    return tuple(out)


def _lattice_pairs(level: Lattice, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) within one lattice whose boxes overlap by IoU > threshold."""
    stencil = _stencil(level.cell, level.stride, threshold)
    if len(level.cols) < 2 or not stencil:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    offsets = np.array(stencil, np.int64)  # (k, 2) as (dc, dr)
    pad = int(np.abs(offsets).max())  # a margin so that every shifted cell indexes the grid
    cols, rows = level.cols - int(level.cols.min()) + pad, level.rows - int(level.rows.min()) + pad
    grid = np.full((int(rows.max()) + pad + 1, int(cols.max()) + pad + 1), -1, np.int64)
    grid[rows, cols] = np.arange(len(cols))
    j = grid[rows[:, None] + offsets[None, :, 1], cols[:, None] + offsets[None, :, 0]]  # (n, k) neighbours
    i, k = np.nonzero(j >= 0)
    j = j[i, k]
    hit = overlap_pairs(level.boxes[i], level.boxes[j]) > threshold
    return i[hit], j[hit]


def lattice_nms(levels: list[Lattice], threshold: float, levels_nms: float | None = None) -> np.ndarray:
    """`nms(all boxes, all scores, threshold)` ("union") for boxes given as pyramid lattices, concatenated
    in level order; the same indices, found without hashing every box.

    Within a level the overlapping pairs are a fixed stencil of cell offsets; when each level is already
    the result of an NMS at `levels_nms` ≤ threshold, no two of its boxes overlap by more, so there is
    nothing to search. Across levels two boxes can only overlap by more than the threshold if their area
    ratio exceeds it (IoU ≤ smaller / larger area), so only such level pairs are searched (with the
    generic grid). At the defaults (factor 0.79, per-scale 0.5, merged 0.7) the merged NMS finds no pair.
    """
    sizes = [len(level.cols) for level in levels]
    n = sum(sizes)
    if n == 0:
        return np.zeros(0, np.int64)
    scores = np.concatenate([level.scores for level in levels]).astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    if n < 2 or threshold >= 1:
        return order.astype(np.int64)
    if threshold < 0:
        return order[:1].astype(np.int64)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    starts = np.cumsum([0, *sizes])
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    if levels_nms is None or levels_nms > threshold:
        for k, level in enumerate(levels):
            i, j = _lattice_pairs(level, threshold)
            ri, rj = rank[i + starts[k]], rank[j + starts[k]]
            pairs.append((np.minimum(ri, rj), np.maximum(ri, rj)))
    area = [float(box_areas(level.boxes[:1])[0]) if len(level.cols) else 0.0 for level in levels]
    close = [(a, b) for a in range(len(levels)) for b in range(a + 1, len(levels))
             if min(area[a], area[b]) > 0 and min(area[a], area[b]) / max(area[a], area[b]) > threshold - 1e-6]
    if close:
        ordered = np.concatenate([level.boxes for level in levels]).astype(np.float64)[order]
        for a, b in close:
            pa, pb = rank[starts[a] : starts[a + 1]], rank[starts[b] : starts[b + 1]]
            pairs += _grid_pairs(ordered, pa, pb, False, threshold, "union")
    return order[_greedy(n, pairs)].astype(np.int64)
