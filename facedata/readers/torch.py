"""PyTorch datasets over a shard directory (`facedata.readers` itself never imports torch).

- `ShardIterableDataset` yields whole batches (use `DataLoader(ds, batch_size=None, num_workers=N)`):
  each worker reads its round-robin share of its rank's batches (readers/order.py), so the loader
  returns exactly the rank's batch sequence for any number of workers.
- `ShardMapDataset` is map-style: `ds[i]` is one sample (works with any sampler and the default
  collate); `ds[[i, j, ...]]` is a whole batch, so `DataLoader(ds, batch_size=None,
  sampler=BatchSampler(RandomSampler(ds), 256, False))` fetches each batch with one vectorised read.

Samples and batches are dicts: `image` (uint8 HWC, or float32 CHW normalised (x - 127.5) / 128; BGR as
stored, or RGB with `channels="rgb"`) plus one tensor per record field (`bbox`, `landmarks`, ...), with
`label` as int64, the class-target type of `F.cross_entropy` (the other fields keep their stored types).
`batch_mix="3:1:1:2"` gives every batch exact neg:pos:part:landmark counts (readers/order.py; refused on the
one-class pfld and topdown datasets).

Moving a batch from a worker costs one shared-memory segment per tensor, which dominated loading
(11 tensors per batch). So by default (`packed=True`) a worker yields a `PackedBatch`: the image plus
the raw record bytes in one uint8 tensor (two tensors for float_chw). Its `__reduce__` makes the
DataLoader's own inter-process transfer rebuild it, in the main process, into the same dict of tensors
via `unpack_batch` (record fields are numpy views of the received bytes, made contiguous), so users
still receive dicts. `make_loader` builds such a DataLoader with a deeper prefetch queue.

Even one fresh segment per batch cost more than reading it (page faults, mmap and munmap in both
processes), so on x86-64 a uint8 worker gathers batches into a `_Ring` of reused shared slots instead:
the main process hands out each batch's image as a view of its slot and marks the slot free (a flag in
the ring) once the last tensor viewing it dies; x86's ordered stores (TSO) make every read of the slot
complete before the worker can see the flag. A worker whose next slot is still held falls back to a
fresh segment, so it never waits and never overwrites a batch in use.
"""

from __future__ import annotations

import os
import platform
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from facedata.readers.pixels import check_image_options, to_channels
from facedata.storage.index import dtype_from_json, dtype_to_json
from facedata.storage.reader import ShardedDataset

RING_SLOTS = 8  # per worker: covers make_loader's prefetch (4 per worker) with room to spare
_RING_ORDERED_STORES = platform.machine().lower() in ("x86_64", "amd64")


def to_tensors(pixels: np.ndarray, records: np.ndarray, image_format: str) -> dict[str, Any]:
    """A numpy batch as a dict of tensors (shared memory with the arrays where possible)."""
    return {"image": _image_tensor(pixels, image_format), **_record_tensors(records)}


def target_tensors(columns: dict[str, np.ndarray], image_format: str) -> dict[str, Any]:
    """The read-time targets' columns as tensors (the image converted like the stored one)."""
    return {name: _image_tensor(value, image_format) if name == "image" else torch.from_numpy(value)
            for name, value in columns.items()}


def _record_tensors(records: np.ndarray) -> dict[str, torch.Tensor]:
    """One tensor per record field; `label` widened to int64, what the classification losses take."""
    return {name: torch.from_numpy(np.ascontiguousarray(records[name], np.int64 if name == "label" else None))
            for name in records.dtype.names}


def _image_tensor(pixels: np.ndarray, image_format: str) -> torch.Tensor:
    image = torch.from_numpy(np.ascontiguousarray(pixels))
    if image_format == "float_chw":
        image = image.permute(0, 3, 1, 2).float().sub_(127.5).div_(128.0).contiguous()
    return image


class PackedBatch:
    """A batch as at most two tensors for the worker -> main process transfer; unpickles as a dict.

    `data` holds the uint8 HWC pixels followed by the raw record bytes, allocated in shared memory up
    front so the reader writes each batch exactly once and the transfer copies nothing; for float_chw,
    `data` is the float image and `rows` the record bytes. `unpack()` gives the dict directly.
    """

    def __init__(self, data: torch.Tensor, rows: torch.Tensor | None, n: int,
                 image_shape: tuple[int, ...], record_dtype: np.dtype) -> None:
        self.data, self.rows, self.n, self.image_shape = data, rows, n, image_shape
        self.record_dtype = dtype_to_json(record_dtype)

    @staticmethod
    def allocate(n: int, image_shape: tuple[int, ...], record_dtype: np.dtype
                 ) -> tuple[PackedBatch, np.ndarray, np.ndarray]:
        """An empty shared uint8 batch and the (pixels, records) numpy views to fill it through."""
        pixel_bytes = n * int(np.prod(image_shape))
        data = torch.empty(pixel_bytes + n * record_dtype.itemsize, dtype=torch.uint8).share_memory_()
        buffer = data.numpy()
        batch = PackedBatch(data, None, n, image_shape, record_dtype)
        return batch, buffer[:pixel_bytes].reshape(n, *image_shape), buffer[pixel_bytes:].view(record_dtype)

    def unpack(self) -> dict[str, Any]:
        return unpack_batch(*self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, tuple]:
        return unpack_batch, (self.data, self.rows, self.n, self.image_shape, self.record_dtype)


def unpack_batch(
    data: torch.Tensor, rows: torch.Tensor | None, n: int, image_shape: tuple[int, ...] | None,
    record_dtype: list,
) -> dict[str, Any]:
    """The dict of tensors of a `PackedBatch` (the image shares memory with the received tensor)."""
    dtype = dtype_from_json(record_dtype)
    if rows is None:
        pixel_bytes = len(data) - n * dtype.itemsize
        image = data[:pixel_bytes].view(n, *image_shape)
        raw = data[pixel_bytes:].numpy()
    else:
        image, raw = data, rows.numpy()
    return {"image": image, **_record_tensors(raw.view(dtype))}


class _Ring:
    """A worker's shared slots, each holding one packed batch; an int64 flag per slot says who holds it."""

    def __init__(self, batch_size: int, image_shape: tuple[int, ...], record_dtype: np.dtype) -> None:
        self.image_shape, self.record_dtype = image_shape, record_dtype
        self.slot_bytes = batch_size * (int(np.prod(image_shape)) + record_dtype.itemsize)
        self.header = 8 * RING_SLOTS
        self.tensor = torch.empty(self.header + RING_SLOTS * self.slot_bytes, dtype=torch.uint8).share_memory_()
        self.flags = self.tensor[: self.header].numpy().view(np.int64)
        self.flags[:] = 0
        self.next = 0

    def claim(self, n: int) -> tuple[RingBatch, np.ndarray, np.ndarray] | None:
        """The next slot as (batch, pixels, records) to fill, or None while the main process still holds it."""
        slot = self.next
        if self.flags[slot]:
            return None
        self.flags[slot] = 1
        self.next = (slot + 1) % RING_SLOTS
        offset = self.header + slot * self.slot_bytes
        pixel_bytes = n * int(np.prod(self.image_shape))
        buffer = self.tensor.numpy()[offset : offset + pixel_bytes + n * self.record_dtype.itemsize]
        batch = RingBatch(self, slot, offset, n)
        return batch, buffer[:pixel_bytes].reshape(n, *self.image_shape), buffer[pixel_bytes:].view(self.record_dtype)


class RingBatch:
    """A batch in a `_Ring` slot; unpickles (in the main process) as a dict whose image views the slot."""

    def __init__(self, ring: _Ring, slot: int, offset: int, n: int) -> None:
        self.ring, self.slot, self.offset, self.n = ring, slot, offset, n

    def unpack(self) -> dict[str, Any]:
        return unpack_slot(*self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, tuple]:
        ring = self.ring
        return unpack_slot, (ring.tensor, self.slot, self.offset, self.n, ring.image_shape,
                             dtype_to_json(ring.record_dtype))


def unpack_slot(
    ring: torch.Tensor, slot: int, offset: int, n: int, image_shape: tuple[int, ...], record_dtype: list
) -> dict[str, Any]:
    """The batch in ring slot `slot`: the image is the slot itself, which is freed for the worker when the
    last tensor viewing it dies (the record fields are copies)."""
    pixels_end = offset + n * int(np.prod(image_shape))
    pixels = ring.numpy()[offset:pixels_end].reshape(n, *image_shape)  # its own object: the lease's anchor
    weakref.finalize(pixels, _free_slot, ring[: 8 * RING_SLOTS].numpy().view(np.int64), slot)
    rows = ring[pixels_end : pixels_end + n * dtype_from_json(record_dtype).itemsize]
    return unpack_batch(torch.from_numpy(pixels), rows, n, None, record_dtype)


def _free_slot(flags: np.ndarray, slot: int) -> None:
    flags[slot] = 0


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
    """Shuffled, rank- and worker-split batches of one epoch; call `set_epoch(e)` before each epoch.

    `batch_mix` ("3:1:1:2"): exact class counts per batch; `channels="rgb"`: RGB instead of the stored BGR.

    `targets` (facedata.readers.heatmaps.TopDownTargets, top-down datasets): each batch is the targets' columns
    (input image, heatmaps, weights, ...) made from the stored crops with the epoch's draws; not packed.

    `packed=True`: inside DataLoader workers, yield `PackedBatch`es or `RingBatch`es (received as dicts,
    see the module doc); a custom `collate_fn` then sees those objects (call `.unpack()`), or pass
    packed=False.
    """

    def __init__(
        self, path: str | os.PathLike[str], batch_size: int, *, seed: int = 0, shuffle: bool = True,
        image_format: str = "uint8_hwc", rank: int | None = None, world_size: int | None = None,
        drop_last: bool = False, epoch: int = 0, packed: bool = True, batch_mix: str | Sequence[float] | None = None,
        channels: str = "bgr", targets: Callable[..., dict[str, np.ndarray]] | None = None,
    ) -> None:
        check_image_options(image_format, channels)
        self.data = ShardedDataset(path)
        self.targets = targets
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.image_format = image_format
        self.rank, self.world_size = distributed_rank(rank, world_size)
        self.drop_last = drop_last
        self.epoch = epoch
        self.packed = packed
        self.batch_mix = batch_mix
        self.channels = channels
        # Built here so that a bad batch_mix fails now, not in a worker; it also reads the labels once
        # before the workers fork.
        self.order = self.data.read_order(batch_size, seed=seed, shuffle=shuffle, world_size=self.world_size,
                                          drop_last=drop_last, batch_mix=batch_mix)

    def set_epoch(self, epoch: int) -> None:
        """Takes effect in workers started afterwards (not with persistent_workers=True)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches this rank yields per epoch (over all workers)."""
        return self.order.batches

    def __iter__(self) -> Iterator[dict[str, Any] | PackedBatch | RingBatch]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        pack = self.packed and info is not None and self.targets is None
        packed: list[PackedBatch | RingBatch] = []
        shape, dtype = self.data.image_shape, self.data.record_dtype
        into_shared = pack and self.image_format == "uint8_hwc"
        ring = _Ring(self.batch_size, shape, dtype) if into_shared and _RING_ORDERED_STORES else None

        def allocate(n: int) -> tuple[np.ndarray, np.ndarray]:
            batch, pixels, records = (ring and ring.claim(n)) or PackedBatch.allocate(n, shape, dtype)
            packed.append(batch)
            return pixels, records

        for pixels, records in self.data.iter_batches(
            self.batch_size, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle, rank=self.rank,
            world_size=self.world_size, worker=worker, num_workers=num_workers, drop_last=self.drop_last,
            batch_mix=self.batch_mix, channels=self.channels, out=allocate if into_shared else None,
        ):
            if self.targets is not None:
                yield target_tensors(self.targets(pixels, records, self.epoch), self.image_format)
            elif packed:
                yield packed.pop()
            elif pack:  # float_chw: the float image and the record bytes travel as two tensors
                rows = torch.from_numpy(np.ascontiguousarray(records).view(np.uint8))
                yield PackedBatch(_image_tensor(pixels, self.image_format), rows, len(records), shape, dtype)
            else:
                yield to_tensors(pixels, records, self.image_format)


def make_loader(
    path: str | os.PathLike[str], batch_size: int, *, num_workers: int = 2, prefetch_factor: int = 4,
    **dataset_options: Any,
) -> DataLoader:
    """A DataLoader of dict batches over `ShardIterableDataset(path, batch_size, **dataset_options)`.

    Call `loader.dataset.set_epoch(e)` before each epoch. No pinning: the batches are already one
    shared-memory tensor each, and pinning would add a copy on CPU-only training.
    """
    dataset = ShardIterableDataset(path, batch_size, **dataset_options)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None)


class ShardMapDataset(Dataset):
    """Random access: an int gives one sample, a list/array of ints gives a batch (one vectorised read)."""

    def __init__(self, path: str | os.PathLike[str], *, image_format: str = "uint8_hwc", channels: str = "bgr"
                 ) -> None:
        check_image_options(image_format, channels)
        self.data = ShardedDataset(path)
        self.image_format = image_format
        self.channels = channels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        if isinstance(index, int | np.integer):
            if not -len(self.data) <= index < len(self.data):
                raise IndexError(index)
            batch = self._read(np.array([index % len(self.data)]))
            return {name: value[0] for name, value in batch.items()}
        return self._read(np.asarray(index, dtype=np.int64))

    def _read(self, indices: np.ndarray) -> dict[str, Any]:
        pixels, records = self.data.read(indices)
        return to_tensors(to_channels(pixels, self.channels), records, self.image_format)
