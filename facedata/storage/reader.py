"""ShardedDataset: vectorised random access to a shard directory, safe across fork().

Shard handles are opened lazily and re-opened whenever the process id changes, so an instance created
before DataLoader/MindSpore workers fork never shares an LMDB env with them. Reads are grouped by unit
(block / row group): each unit is fetched once, then numpy fancy indexing gathers the rows.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from facedata.errors import FacedataError
from facedata.readers.order import WINDOW_SAMPLES, worker_order
from facedata.storage.base import BACKENDS, Backend, ShardSchema, ShardSource
from facedata.storage.index import dtype_from_json, load_index

Allocator = Callable[[int], tuple[np.ndarray, np.ndarray]]


class ShardedDataset:
    """A shard directory as (pixels (N,H,W,C) uint8, records (N,) structured) arrays."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.index = load_index(self.path)
        self.backend: Backend = BACKENDS.get(self.index["backend"])()
        self.image_shape: tuple[int, int, int] = tuple(int(x) for x in self.index["image_shape"])  # type: ignore[assignment]
        self.record_dtype = dtype_from_json(self.index["record_dtype"])
        self.schema = ShardSchema(self.image_shape, self.record_dtype, int(self.index["block_samples"]),
                                  int(self.index["unit_samples"]), int(self.index["samples_per_shard"]))
        self.unit_samples = self.schema.unit_samples
        self._units_per_shard = self.schema.samples_per_shard // self.unit_samples
        self._n = int(self.index["samples"])
        unit_bytes = self.unit_samples * self.schema.bytes_per_sample
        self._cache_units = max(4, min(4096, self.backend.cache_bytes // unit_bytes))
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._sources: dict[int, ShardSource] = {}
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._scratch_pixels: np.ndarray | None = None
        self._scratch_rows: np.ndarray | None = None

    def __getstate__(self) -> dict:
        """Only the path travels to spawned workers; handles are reopened there."""
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __len__(self) -> int:
        return self._n

    def close(self) -> None:
        if self._pid == os.getpid():
            for source in self._sources.values():
                source.close()
        self._reset()

    def _unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pid != os.getpid():  # forked: never touch the parent's handles
            self._reset()
        cached = self._cache.get(unit)
        if cached is not None:
            self._cache.move_to_end(unit)
            return cached
        shard, local = divmod(unit, self._units_per_shard)
        source = self._sources.get(shard)
        if source is None:
            if shard >= len(self.index["shards"]):
                raise FacedataError(f"{self.path}: unit {unit} is past the last shard")
            entry = self.index["shards"][shard]
            source = self.backend.open_source(self.path / entry["file"], self.schema, int(entry["samples"]))
            self._sources[shard] = source
        data = source.read_unit(local)
        self._cache[unit] = data
        if len(self._cache) > self._cache_units:
            self._cache.popitem(last=False)
        return data

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples at `indices` (any order, repeats allowed) as contiguous arrays."""
        indices = self._check(indices)
        n = len(indices)
        pixels = np.empty((n, *self.image_shape), np.uint8)
        records = np.empty(n, self.record_dtype)
        if n == 0:
            return pixels, records
        window = self._window(indices, self._scratch)
        if window is not None:
            source_pixels, source_rows, where = window
            np.take(source_pixels, where, axis=0, out=pixels, mode="clip")
            np.take(source_rows, where, out=_rows(records), mode="clip")
            return pixels, records
        # Sparse request: gather unit by unit in unit-sorted order, then one take restores request order
        # (np.take is several times faster than fancy-index scatter for these row sizes).
        units = indices // self.unit_samples
        order = np.argsort(units, kind="stable")
        sorted_units = units[order]
        local = indices[order] - sorted_units * self.unit_samples
        cuts = np.flatnonzero(sorted_units[1:] != sorted_units[:-1]) + 1
        grouped_pixels = np.empty_like(pixels)
        grouped_records = np.empty_like(records)
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, n].tolist(), strict=True):
            self._gather(int(sorted_units[lo]), local[lo:hi], grouped_pixels[lo:hi], grouped_records[lo:hi])
        back = np.empty(n, np.int64)
        back[order] = np.arange(n, dtype=np.int64)
        np.take(grouped_pixels, back, axis=0, out=pixels, mode="clip")
        np.take(_rows(grouped_records), back, out=_rows(records), mode="clip")
        return pixels, records

    def _check(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self._n):
            raise IndexError(f"sample index out of range [0, {self._n})")
        return indices

    def _window(
        self, indices: np.ndarray, scratch: Callable[[int], tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(pixels, rows, where): arrays holding every requested sample at rows `where`, or None if sparse.

        One unit is used in place; a dense request (a shuffle window) has its units copied end to end
        into `scratch` buffers, one sequential pass that leaves the shuffled gather cache-resident.
        """
        units = indices // self.unit_samples
        first, last = int(units.min()), int(units.max())
        if first == last:
            unit_pixels, unit_records = self._unit(first)
            return unit_pixels, _rows(unit_records), indices - first * self.unit_samples
        present = np.zeros(last - first + 1, bool)
        present[units - first] = True
        touched = np.flatnonzero(present) + first
        if len(indices) * 2 < len(touched) * self.unit_samples:
            return None
        parts = [self._unit(int(u)) for u in touched.tolist()]
        slot = np.cumsum(present) - 1
        where = indices + (slot[units - first] * self.unit_samples - units * self.unit_samples)
        joined_pixels, joined_rows = scratch(sum(len(part[1]) for part in parts))
        np.concatenate([part[0] for part in parts], out=joined_pixels)
        np.concatenate([_rows(part[1]) for part in parts], out=joined_rows)
        return joined_pixels, joined_rows, where

    def _scratch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Reused join buffers: fresh multi-MB arrays per window would page-fault on every call."""
        if self._scratch_pixels is None or len(self._scratch_pixels) < size:
            self._scratch_pixels, self._scratch_rows = self._new_scratch(size)
        return self._scratch_pixels[:size], self._scratch_rows[:size]

    def _new_scratch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        return np.empty((size, *self.image_shape), np.uint8), _rows(np.empty(size, self.record_dtype))

    def _gather(self, unit: int, local: np.ndarray, pixels: np.ndarray, records: np.ndarray) -> None:
        unit_pixels, unit_records = self._unit(unit)
        np.take(unit_pixels, local, axis=0, out=pixels, mode="clip")
        np.take(_rows(unit_records), local, out=_rows(records), mode="clip")

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples [start, stop) in stored order."""
        start, stop, _ = slice(start, stop).indices(self._n)
        return self.read(np.arange(start, max(start, stop), dtype=np.int64))

    def iter_order(
        self, order: np.ndarray, batch_size: int, out: Allocator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of consecutive `batch_size` slices of `order`, each a pair of fresh contiguous arrays.

        A window of batches is staged once (its units joined into buffers private to this generator,
        so other reads cannot clobber them); each batch is then one np.take per array from the stage,
        into `out(n)` (pixels (n,H,W,C) uint8, records (n,) contiguous) when given, else new arrays.
        """
        order = self._check(order)
        per_chunk = batch_size * max(1, WINDOW_SAMPLES // batch_size)
        buffers: list[np.ndarray] = []

        def scratch(size: int) -> tuple[np.ndarray, np.ndarray]:
            if not buffers or len(buffers[0]) < size:
                buffers[:] = self._new_scratch(size)
            return buffers[0][:size], buffers[1][:size]

        for lo in range(0, len(order), per_chunk):
            chunk = order[lo : lo + per_chunk]
            window = self._window(chunk, scratch)
            if window is None:
                pixels, records = self.read(chunk)
                for b in range(0, len(records), batch_size):
                    if out is None:
                        yield pixels[b : b + batch_size], records[b : b + batch_size]
                    else:
                        batch_pixels, batch_records = out(len(records[b : b + batch_size]))
                        batch_pixels[...] = pixels[b : b + batch_size]
                        batch_records[...] = records[b : b + batch_size]
                        yield batch_pixels, batch_records
                continue
            source_pixels, source_rows, where = window
            for b in range(0, len(chunk), batch_size):
                rows = where[b : b + batch_size]
                if out is None:
                    pixels = np.empty((len(rows), *self.image_shape), np.uint8)
                    records = np.empty(len(rows), self.record_dtype)
                else:
                    pixels, records = out(len(rows))
                np.take(source_rows, rows, out=_rows(records), mode="clip")
                np.take(source_pixels, rows, axis=0, out=pixels, mode="clip")
                yield pixels, records

    def iter_batches(
        self, batch_size: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, rank: int = 0,
        world_size: int = 1, worker: int = 0, num_workers: int = 1, drop_last: bool = False,
        out: Allocator | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This (rank, worker)'s batches of one epoch, in the shared reader order (readers/order.py).

        `out(n)` may supply each batch's (pixels, records) arrays (e.g. views of one shared buffer).
        """
        order = worker_order(
            self._n, self.unit_samples, batch_size=batch_size, seed=seed, epoch=epoch, shuffle=shuffle,
            rank=rank, world_size=world_size, worker=worker, num_workers=num_workers, drop_last=drop_last,
        )
        return self.iter_order(order, batch_size, out)


def _rows(records: np.ndarray) -> np.ndarray:
    """Structured records as opaque fixed-size rows: gathers become plain memcpy (about 20x faster)."""
    return records.view(np.dtype((np.void, records.dtype.itemsize)))
