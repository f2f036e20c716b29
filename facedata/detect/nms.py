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
"""

from __future__ import annotations

import math

import numpy as np

_CHUNK = 4096  # boxes per pair-generation chunk
_MAX_PAIRS = 1 << 18  # candidate pairs expanded at once (bounds the temporaries to a few MB)
_OFFSETS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]


def _areas(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def overlap_pairs(a: np.ndarray, b: np.ndarray, mode: str = "union") -> np.ndarray:
    """Overlap of a[k] with b[k]: IoU ("union") or intersection / smaller area ("min")."""
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a, area_b = _areas(a), _areas(b)
    denom = area_a + area_b - inter if mode == "union" else np.minimum(area_a, area_b)
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


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
    area = _areas(ordered)
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
    keep = np.ones(n, dtype=bool)
    if pairs:
        sup = np.concatenate([p[0] for p in pairs])  # the earlier (better) box of each pair
        vic = np.concatenate([p[1] for p in pairs])
        while True:
            suppressed = np.zeros(n, dtype=bool)
            suppressed[vic[keep[sup]]] = True
            new = ~suppressed
            if np.array_equal(new, keep):
                break
            keep = new
    return order[keep].astype(np.int64)
