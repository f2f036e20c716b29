"""PyTorch datasets over a shard directory (`facedata.readers` itself never imports torch).

- `ShardIterableDataset` yields whole batches (use `DataLoader(ds, batch_size=None, num_workers=N)`):
  each worker reads its round-robin share of its rank's batches (readers/order.py), so the loader
  returns exactly the rank's batch sequence for any number of workers.
- `ShardMapDataset` is map-style: `ds[i]` is one sample (works with any sampler and the default
  collate); `ds[[i, j, ...]]` is a whole batch, so `DataLoader(ds, batch_size=None,
  sampler=BatchSampler(RandomSampler(ds), 256, False))` fetches each batch with one vectorised read.

Samples and batches are dicts: `image` (uint8 HWC, or float32 CHW normalised (x - 127.5) / 128 with
BGR channel order kept) plus one tensor per record field (`label`, `bbox`, `landmarks`, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from facedata.errors import FacedataError
from facedata.readers.order import num_batches, rank_size
from facedata.storage.reader import ShardedDataset

IMAGE_FORMATS = ("uint8_hwc", "float_chw")


def to_tensors(pixels: np.ndarray, records: np.ndarray, image_format: str) -> dict[str, Any]:
    """A numpy batch as a dict of tensors (shared memory with the arrays where possible)."""
    image = torch.from_numpy(np.ascontiguousarray(pixels))
    if image_format == "float_chw":
        image = image.permute(0, 3, 1, 2).float().sub_(127.5).div_(128.0).contiguous()
    batch = {"image": image}
    for name in records.dtype.names:
        batch[name] = torch.from_numpy(np.ascontiguousarray(records[name]))
    return batch


def _check_format(image_format: str) -> None:
    if image_format not in IMAGE_FORMATS:
        raise FacedataError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def distributed_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed when initialised, else env RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        found = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        found = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return (found[0] if rank is None else rank), (found[1] if world_size is None else world_size)


class ShardIterableDataset(IterableDataset):
    """Shuffled, rank- and worker-split batches of one epoch; call `set_epoch(e)` before each epoch."""

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int, *, seed: int = 0, shuffle: bool = True,
        image_format: str = "uint8_hwc", rank: int | None = None, world_size: int | None = None,
        drop_last: bool = False, epoch: int = 0,
    ) -> None:
        _check_format(image_format)
        self.data = ShardedDataset(path)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.image_format = image_format
        self.rank, self.world_size = distributed_rank(rank, world_size)
        self.drop_last = drop_last
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Takes effect in workers started afterwards (not with persistent_workers=True)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches this rank yields per epoch (over all workers)."""
        per_rank = rank_size(len(self.data), self.world_size, self.drop_last)
        return num_batches(per_rank, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for pixels, records in self.data.iter_batches(
            self.batch_size, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle, rank=self.rank,
            world_size=self.world_size, worker=worker, num_workers=num_workers, drop_last=self.drop_last,
        ):
            yield to_tensors(pixels, records, self.image_format)


class ShardMapDataset(Dataset):
    """Random access: an int gives one sample, a list/array of ints gives a batch (one vectorised read)."""

    def __init__(self, path: str | os.PathLike[str], *, image_format: str = "uint8_hwc") -> None:
        _check_format(image_format)
        self.data = ShardedDataset(path)
        self.image_format = image_format

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        if isinstance(index, int | np.integer):
            if not -len(self.data) <= index < len(self.data):
                raise IndexError(index)
            batch = to_tensors(*self.data.read(np.array([index % len(self.data)])), self.image_format)
            return {name: value[0] for name, value in batch.items()}
        return to_tensors(*self.data.read(np.asarray(index, dtype=np.int64)), self.image_format)
