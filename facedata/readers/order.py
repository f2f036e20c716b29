"""The reading order: a pure function of (dataset, unit size, batch size, seed, epoch, rank, worker, mix).

Every reader (numpy, PyTorch, MindSpore) builds a `ReadOrder`, so for the same arguments they see the
same samples in the same batches. Reads stay unit-local (LMDB blocks / Parquet row groups):

- Shuffle: samples are shuffled inside *windows* of whole units. The builds write detection samples in
  image order and all landmark samples last, so consecutive units hold similar classes; each window
  therefore takes one unit from every *stratum* of consecutive stored units (a stratified deal), and
  every window spans the whole file: its class shares are those of the dataset, up to one unit.
- `batch_mix` ("3:1:1:2" = neg:pos:part:landmark): every batch holds exact class counts (largest-
  remainder rounding of the batch size by the ratio), laid out class after class in that order. Each
  class is read from its own stream of shuffled *passes* over its samples (unit-local windows, as
  above); the streams cycle, and a pass continues into the next epoch, so within a class every sample
  is used once before any is used twice. An epoch has as many batches as without a mix (about
  n_samples / batch_size, all full), so scarce classes repeat and abundant ones are spread over
  epochs; `ReadOrder.class_usage()` says how many samples of each class an epoch uses. A dataset of one
  class (pfld, topdown: every record is a landmark sample) refuses a mix: there is nothing to mix.

The global order is cut into contiguous equal slices per rank (padded by wrapping around, or truncated
with drop_last); a rank's batches are dealt round-robin to its loader workers, so a DataLoader that
collects worker batches in order reproduces the rank's batch sequence exactly, whatever the number of
workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from facedata.errors import FacedataError
from facedata.samples import LABEL_LANDMARK, LABEL_NAMES, LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE

WINDOW_SAMPLES = 16384  # shuffle window: at least this many samples (whole units)
MIX_LABELS = (LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_PART, LABEL_LANDMARK)  # the order of batch_mix values
_MIX_STREAM = 1  # rng key of the class streams, apart from the plain epoch order's


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, *(k & 0xFFFFFFFF for k in key)])


def unit_local_shuffle(members: np.ndarray, unit_samples: int, rng: np.random.Generator, window_units: int
                       ) -> np.ndarray:
    """`members` (sorted sample indices) shuffled in stratified windows of `window_units` units.

    The members of one unit form a run. With K = ceil(runs / window_units) windows (one window when there
    are at most twice `window_units` runs: two windows' worth fit the reader's stage), the runs are cut
    into strata of K consecutive runs and each stratum's runs are dealt at random, one to each window; the
    samples of each window are then shuffled. Every window then holds the same share of any contiguous
    part of the file, to within the two units of that part's edge strata.
    """
    n = len(members)
    if n == 0:
        return members.astype(np.int64, copy=False)
    units = members // unit_samples
    cuts = np.flatnonzero(units[1:] != units[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    lengths = np.diff(np.concatenate([starts, [n]]))
    n_windows = 1 if len(starts) <= 2 * window_units else -(-len(starts) // window_units)
    strata = -(-len(starts) // n_windows)
    # The first stratum is the short one: the builds write the landmark samples last, so a short last
    # stratum would leave some windows one landmark unit short.
    first = len(starts) - strata * n_windows
    grid = rng.permuted(np.arange(first, len(starts)).reshape(strata, n_windows), axis=1)
    runs = grid.T.reshape(-1)  # window 0's runs, then window 1's, ...
    window = np.repeat(np.arange(n_windows), strata)[runs >= 0]
    runs = runs[runs >= 0]
    run_lengths = lengths[runs]
    ends = np.cumsum(run_lengths)
    # positions[ends[i-1]:ends[i]] = starts[runs[i]] + arange(run_lengths[i]), without a Python loop.
    positions = np.arange(n, dtype=np.int64) + np.repeat(starts[runs] - (ends - run_lengths), run_lengths)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(window, weights=run_lengths, minlength=n_windows))])
    for lo, hi in zip(bounds[:-1].astype(np.int64).tolist(), bounds[1:].astype(np.int64).tolist(), strict=True):
        positions[lo:hi] = positions[lo:hi][rng.permutation(hi - lo)]
    return members[positions].astype(np.int64, copy=False)


def window_units(unit_samples: int, window_samples: int = WINDOW_SAMPLES) -> int:
    return max(1, -(-window_samples // unit_samples))


def epoch_order(
    n_samples: int, unit_samples: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
    window_samples: int = WINDOW_SAMPLES,
) -> np.ndarray:
    """The global order of one epoch without a mix: a permutation of range(n_samples) (int64)."""
    if n_samples < 0 or unit_samples <= 0:
        raise ValueError("n_samples must be >= 0 and unit_samples > 0")
    every = np.arange(n_samples, dtype=np.int64)
    if not shuffle:
        return every
    return unit_local_shuffle(every, unit_samples, _rng(seed, epoch), window_units(unit_samples, window_samples))


def rank_size(n_samples: int, world_size: int, drop_last: bool) -> int:
    """Samples per rank: n / world_size rounded down (drop_last) or up (padded by wrapping around)."""
    return n_samples // world_size if drop_last else -(-n_samples // world_size)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    return n // batch_size if drop_last else -(-n // batch_size)


def parse_batch_mix(value: str | Sequence[float]) -> tuple[float, ...]:
    """'neg:pos:part:landmark' (e.g. '3:1:1:2') or four numbers -> the four ratio values."""
    parts = value.split(":") if isinstance(value, str) else list(value)
    try:
        ratio = tuple(float(part) for part in parts)
    except (TypeError, ValueError):
        ratio = ()
    if len(ratio) != 4 or not all(math.isfinite(r) and r >= 0 for r in ratio) or sum(ratio) <= 0:
        raise FacedataError(f"batch_mix {value!r}: expected neg:pos:part:landmark, four non-negative numbers "
                            "with a positive sum, e.g. '3:1:1:2'")
    return ratio


def mix_counts(batch_size: int, ratio: Sequence[float]) -> np.ndarray:
    """Samples of each class per batch: the batch size split by the ratio with largest-remainder rounding
    (ties go to the class listed first), so the counts always sum to the batch size."""
    exact = batch_size * np.asarray(ratio, np.float64) / float(sum(ratio))
    counts = np.floor(exact).astype(np.int64)
    short = batch_size - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


class ReadOrder:
    """Which samples every (epoch, rank, worker) reads, batch by batch; see the module doc.

    `labels` (one int8 per sample, from the shards) is needed only with a `batch_mix`.
    """

    def __init__(
        self, n_samples: int, unit_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
        world_size: int = 1, drop_last: bool = False, batch_mix: str | Sequence[float] | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        if n_samples < 0 or unit_samples <= 0 or world_size <= 0:
            raise ValueError("n_samples must be >= 0, unit_samples and world_size > 0")
        self.n_samples, self.unit_samples, self.batch_size = n_samples, unit_samples, batch_size
        self.seed, self.shuffle, self.world_size, self.drop_last = seed, shuffle, world_size, drop_last
        self.batches = num_batches(rank_size(n_samples, world_size, drop_last), batch_size, drop_last)
        self.counts: np.ndarray | None = None
        self._members: list[np.ndarray] = []
        if batch_mix is not None:
            self._init_mix(batch_mix, labels)

    def _init_mix(self, batch_mix: str | Sequence[float], labels: np.ndarray | None) -> None:
        if labels is None or len(labels) != self.n_samples:
            raise ValueError("a batch_mix needs one label per sample")
        self.counts = mix_counts(self.batch_size, parse_batch_mix(batch_mix))
        self._members = [np.flatnonzero(labels == label) for label in MIX_LABELS]
        present = [label for label, members in zip(MIX_LABELS, self._members, strict=True) if len(members)]
        if len(present) == 1:  # pfld and topdown datasets: one label, nothing to mix
            raise FacedataError(f"batch_mix {batch_mix!r} does not apply: every sample of the dataset is "
                                f"{LABEL_NAMES[present[0]]} (label {present[0]}); read it without batch_mix")
        for label, count, members in zip(MIX_LABELS, self.counts.tolist(), self._members, strict=True):
            if count and not len(members):
                raise FacedataError(f"batch_mix {batch_mix!r}: the dataset has no {LABEL_NAMES[label]} samples "
                                    f"(label {label}); give that class ratio 0")

    def epoch(self, epoch: int) -> np.ndarray:
        """All ranks' samples of one epoch, rank after rank (rank r's slice is `rank(epoch, r)`)."""
        if self.counts is not None:
            return self._mixed(epoch)
        order = epoch_order(self.n_samples, self.unit_samples, seed=self.seed, epoch=epoch, shuffle=self.shuffle)
        total = rank_size(self.n_samples, self.world_size, self.drop_last) * self.world_size
        return np.resize(order, total) if self.n_samples else order

    def rank(self, epoch: int, rank: int = 0) -> np.ndarray:
        """This rank's contiguous slice of the epoch; all ranks get the same length."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} not in [0, {self.world_size})")
        order = self.epoch(epoch)
        per_rank = len(order) // self.world_size
        return order[rank * per_rank : (rank + 1) * per_rank]

    def worker(self, epoch: int, rank: int = 0, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """The samples one loader worker reads, in order; consecutive `batch_size` slices are its batches.

        The worker gets batches worker, worker + num_workers, ... of its rank's batch sequence (only the
        rank's last batch can be short, and it is then this worker's last batch).
        """
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} not in [0, {num_workers})")
        order = self.rank(epoch, rank)
        size = self.batch_size
        full = min(self.batches, len(order) // size)
        parts = [order[: full * size].reshape(full, size)[worker::num_workers].reshape(-1)]
        if self.batches > full and (self.batches - 1) % num_workers == worker:
            parts.append(order[full * size :])
        return np.concatenate(parts)

    def class_usage(self) -> dict[str, tuple[int, int]]:
        """With a mix: class name -> (samples in the dataset, samples one epoch reads over all ranks)."""
        if self.counts is None:
            return {}
        total = self.batches * self.world_size
        return {LABEL_NAMES[label]: (len(members), int(count) * total)
                for label, count, members in zip(MIX_LABELS, self.counts, self._members, strict=True)}

    def _mixed(self, epoch: int) -> np.ndarray:
        """Batch b of the epoch (over all ranks) is counts[0] negatives, then positives, parts, landmarks."""
        assert self.counts is not None
        total = self.batches * self.world_size
        columns = [self._stream(k, epoch * int(count) * total, int(count) * total).reshape(total, int(count))
                   for k, count in enumerate(self.counts) if count]
        return np.concatenate(columns, axis=1).reshape(-1) if columns else np.zeros(0, np.int64)

    def _stream(self, k: int, start: int, length: int) -> np.ndarray:
        """Positions [start, start + length) of class k's endless stream of shuffled passes."""
        n = len(self._members[k])
        if length == 0:
            return np.zeros(0, np.int64)
        first, last = start // n, (start + length - 1) // n
        passes = np.concatenate([self._pass(k, p) for p in range(first, last + 1)])
        return passes[start - first * n : start - first * n + length]

    def _pass(self, k: int, index: int) -> np.ndarray:
        members = self._members[k]
        if not self.shuffle:
            return members.astype(np.int64, copy=False)
        # A class's windows hold fewer units, so the four streams together stay within one shuffle window.
        units = max(1, window_units(self.unit_samples) // len(MIX_LABELS))
        return unit_local_shuffle(members, self.unit_samples, _rng(self.seed, index, _MIX_STREAM, k), units)
