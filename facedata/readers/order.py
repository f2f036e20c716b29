"""The reading order: a pure function of (dataset size, unit size, seed, epoch, rank, worker, ...).

Every reader (numpy, PyTorch, MindSpore) calls these functions, so for the same arguments they see
the same samples in the same order. Shuffling permutes whole units (LMDB blocks / Parquet row groups)
with `default_rng([seed, epoch])` and then shuffles samples inside windows of consecutive permuted
units, so reads stay unit-local yet batches mix many units. The global order is cut into contiguous
equal slices per rank (padded by wrapping around, or truncated with drop_last); a rank's batches are
then dealt round-robin to its loader workers, so a DataLoader that collects worker batches in order
reproduces the rank's batch sequence exactly, whatever the number of workers.
"""

from __future__ import annotations

import numpy as np

WINDOW_SAMPLES = 16384  # shuffle window: at least this many samples (whole units)


def epoch_order(
    n_samples: int, unit_samples: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
    window_samples: int = WINDOW_SAMPLES,
) -> np.ndarray:
    """The global order of one epoch: a permutation of range(n_samples) (int64)."""
    if n_samples < 0 or unit_samples <= 0:
        raise ValueError("n_samples must be >= 0 and unit_samples > 0")
    if not shuffle:
        return np.arange(n_samples, dtype=np.int64)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF])
    n_units = -(-n_samples // unit_samples)
    units = rng.permutation(n_units)
    starts = units * unit_samples
    lengths = np.minimum(starts + unit_samples, n_samples) - starts
    ends = np.cumsum(lengths)
    # order[ends[i-1]:ends[i]] = starts[i] + arange(lengths[i]), built without a Python loop.
    order = np.arange(n_samples, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)
    per_window = max(1, -(-window_samples // unit_samples))
    bounds = np.concatenate([[0], ends[per_window - 1 :: per_window], [n_samples]])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if hi > lo:
            order[lo:hi] = order[lo:hi][rng.permutation(hi - lo)]
    return order


def rank_order(
    n_samples: int, unit_samples: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True,
    rank: int = 0, world_size: int = 1, drop_last: bool = False,
) -> np.ndarray:
    """This rank's contiguous slice of the epoch order; all ranks get the same length."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    order = epoch_order(n_samples, unit_samples, seed=seed, epoch=epoch, shuffle=shuffle)
    per_rank = rank_size(n_samples, world_size, drop_last)
    pad = per_rank * world_size - n_samples
    if pad > 0 and n_samples:
        order = np.concatenate([order, np.resize(order, pad)])
    return order[rank * per_rank : (rank + 1) * per_rank]


def rank_size(n_samples: int, world_size: int, drop_last: bool) -> int:
    """Samples per rank: n / world_size rounded down (drop_last) or up (padded by wrapping around)."""
    return n_samples // world_size if drop_last else -(-n_samples // world_size)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    return n // batch_size if drop_last else -(-n // batch_size)


def worker_order(
    n_samples: int, unit_samples: int, *, batch_size: int, seed: int = 0, epoch: int = 0,
    shuffle: bool = True, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1,
    drop_last: bool = False,
) -> np.ndarray:
    """The samples one loader worker reads, in order; consecutive `batch_size` slices are its batches.

    The worker gets batches worker, worker + num_workers, ... of its rank's batch sequence (only the
    rank's last batch can be short, and it is then this worker's last batch).
    """
    if not 0 <= worker < num_workers:
        raise ValueError(f"worker {worker} not in [0, {num_workers})")
    order = rank_order(n_samples, unit_samples, seed=seed, epoch=epoch, shuffle=shuffle, rank=rank,
                       world_size=world_size, drop_last=drop_last)
    n_batches = num_batches(len(order), batch_size, drop_last)
    full = min(n_batches, len(order) // batch_size)
    parts = [order[: full * batch_size].reshape(full, batch_size)[worker::num_workers].reshape(-1)]
    if n_batches > full and (n_batches - 1) % num_workers == worker:
        parts.append(order[full * batch_size :])
    return np.concatenate(parts)
