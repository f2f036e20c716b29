"""Class mixing (neg:pos:part:landmark, 3:1:1:2 by default) decided per sample from a hash, never a
global RNG, so a streaming, any-worker-count build keeps or repeats exactly the same samples.

The anchor class (positives by default, as the reference's `base = #pos`) fixes the scale: each other
class is wanted at ratio[l] / ratio[anchor] * count[anchor]. A class with more samples keeps each with
probability wanted / available; a short class is reported and written in full, or, only with
`allow_repeat`, each of its samples is written floor(r) or ceil(r) times (r = wanted / available).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.samples import LABEL_NAMES, LABEL_POSITIVE, stable_hash

DEFAULT_RATIO: dict[int, float] = {0: 3, 1: 1, -1: 1, -2: 2}


@dataclass(frozen=True)
class MixPlan:
    counts: dict[int, int]  # available per label
    ratio: dict[int, float]
    wanted: dict[int, float]
    keep: dict[int, float]  # per-sample keep probability (<= 1); 0 for labels not in the ratio
    repeat: dict[int, float]  # expected copies per sample (>= 1 only with allow_repeat)
    allow_repeat: bool
    anchor: int
    shortages: list[str] = field(default_factory=list)

    def expected(self) -> dict[int, float]:
        """Expected number of written samples per label."""
        return {lab: self.counts.get(lab, 0) * self.keep[lab] * self.repeat[lab] for lab in self.keep}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (label keys as strings) for the dataset index's provenance."""
        return {
            "ratio": {str(k): v for k, v in self.ratio.items()},
            "counts": {str(k): v for k, v in self.counts.items()},
            "wanted": {str(k): v for k, v in self.wanted.items()},
            "keep": {str(k): v for k, v in self.keep.items()},
            "repeat": {str(k): v for k, v in self.repeat.items()},
            "allow_repeat": self.allow_repeat,
            "anchor": self.anchor,
            "shortages": list(self.shortages),
        }


def mixing_plan(
    counts: dict[int, int],
    ratio: dict[int, float] | None = None,
    allow_repeat: bool = False,
    *,
    anchor: int = LABEL_POSITIVE,
) -> MixPlan:
    ratio = dict(DEFAULT_RATIO if ratio is None else ratio)
    if any(v < 0 for v in ratio.values()):
        raise FacedataError("mixing ratios must be >= 0")
    if ratio.get(anchor, 0) <= 0:
        raise FacedataError(f"the anchor class {LABEL_NAMES.get(anchor, anchor)} needs a ratio > 0")
    base = counts.get(anchor, 0)
    if base == 0:
        name = LABEL_NAMES.get(anchor, anchor)
        raise FacedataError(f"no {name} samples: nothing to anchor the mix ratio on")
    labels = sorted(set(counts) | set(ratio))
    wanted: dict[int, float] = {}
    keep: dict[int, float] = {}
    repeat: dict[int, float] = {}
    shortages: list[str] = []
    for label in labels:
        have = counts.get(label, 0)
        want = ratio.get(label, 0) / ratio[anchor] * base
        wanted[label] = want
        repeat[label] = 1.0
        if have == 0:
            keep[label] = 0.0
        elif want <= have:
            keep[label] = want / have
        else:
            keep[label] = 1.0
            if allow_repeat:
                repeat[label] = want / have
        if want > have:
            name = LABEL_NAMES.get(label, str(label))
            action = "repeated" if allow_repeat and have else "writing all available"
            shortages.append(f"{name}: {have:,} available, {round(want):,} wanted ({action})")
    return MixPlan(dict(counts), ratio, wanted, keep, repeat, allow_repeat, anchor, shortages)


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser: well-mixed 64-bit values from consecutive keys."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def sample_uniforms(seed: int, image_id: str, origin: int, n: int) -> np.ndarray:
    """n uniforms in [0, 1), a function of (seed, origin, image id, sample ordinal) only."""
    base = np.uint64(stable_hash(f"mix\x00{seed}\x00{origin}\x00{image_id}"))
    with np.errstate(over="ignore"):
        keys = base + np.arange(n, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    return (_splitmix64(keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def select(records: np.ndarray, image_id: str, seed: int, plan: MixPlan) -> np.ndarray:
    """The mixed subset of one image's records, in order; repeated records are adjacent copies.

    `records` must be the full planned list of the image (ordinals are positions in it).
    """
    if len(records) == 0:
        return records
    origin = int(records["origin"][0])
    u = sample_uniforms(seed, image_id, origin, len(records))
    labels = records["label"].astype(np.int64)
    keep = np.zeros(len(records))
    rep = np.ones(len(records))
    for label in np.unique(labels).tolist():
        mask = labels == label
        keep[mask] = plan.keep.get(label, 0.0)
        rep[mask] = plan.repeat.get(label, 1.0)
    copies = np.where(u < keep, 1, 0)
    if plan.allow_repeat:
        # u is uniform on [0, 1) for kept samples (keep == 1 when repeating), reuse it for the fraction.
        whole = np.floor(rep)
        copies = copies * (whole + (u < rep - whole)).astype(np.int64)
    return np.repeat(records, copies.astype(np.int64))
