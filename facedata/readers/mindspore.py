"""MindSpore source: a random-access object whose item i is the i-th batch of this shard's epoch order.

Use it with `mindspore.dataset.GeneratorDataset(source, column_names=source.column_names,
shuffle=False)`: the order (shuffle, num_shards/shard_id split) comes from readers/order.py, so the
batches equal the PyTorch reader's for the same seed, epoch and rank. Call `set_epoch(e)` between
epochs. Columns are `image` (uint8 HWC, or float32 CHW normalised (x - 127.5) / 128, BGR kept) and one
column per record field. MindSpore itself is never imported here: the source is plain numpy.
"""

from __future__ import annotations

import os

import numpy as np

from facedata.errors import FacedataError
from facedata.readers.order import num_batches, rank_order
from facedata.storage.reader import ShardedDataset

IMAGE_FORMATS = ("uint8_hwc", "float_chw")


class MindSporeBatchSource:
    """`len()` = batches of this shard per epoch; `source[i]` = tuple of column arrays of batch i."""

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int, *, seed: int = 0, shuffle: bool = True,
        num_shards: int = 1, shard_id: int = 0, drop_last: bool = False, epoch: int = 0,
        image_format: str = "uint8_hwc",
    ) -> None:
        if image_format not in IMAGE_FORMATS:
            raise FacedataError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
        self.data = ShardedDataset(path)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.drop_last = drop_last
        self.image_format = image_format
        self.column_names = ["image", *self.data.record_dtype.names]
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = rank_order(
            len(self.data), self.data.unit_samples, seed=self.seed, epoch=epoch, shuffle=self.shuffle,
            rank=self.shard_id, world_size=self.num_shards, drop_last=self.drop_last,
        )

    def __len__(self) -> int:
        return num_batches(len(self._order), self.batch_size, self.drop_last)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        pixels, records = self.data.read(self._order[i * self.batch_size : (i + 1) * self.batch_size])
        if self.image_format == "float_chw":
            image = (pixels.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0
        else:
            image = pixels
        return (image, *(np.ascontiguousarray(records[name]) for name in records.dtype.names))
