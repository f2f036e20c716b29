"""ShardedDataset: vectorised random access to a shard directory, safe across fork().

Creating one pins the dataset: index.json and a descriptor of every shard file it lists, from one
directory, so a build that swaps another dataset in at the same path (`--overwrite`) never mixes the two
and the old files stay readable while pinned (one descriptor per shard, for the object's life). Shard
handles are opened lazily from the pinned files and re-opened whenever the process id changes, so an
instance created before DataLoader/MindSpore workers fork never shares an LMDB env with them. Reads are
grouped by unit (block / row group): each batch is one np.take per array, from its unit when it has only
one, else from a stage that holds the small units of the current shuffle windows, else unit by unit.

The index is trusted only as far as it is checked: every shard's size is compared with index.json on
open (a truncated memory-mapped shard would kill the process with SIGBUS on first touch), every unit's
row count with what the index implies, and every gather is bounds-checked (a clipped gather would
silently return a neighbouring sample).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np

from facedata.errors import FacedataError
from facedata.readers.order import WINDOW_SAMPLES, ReadOrder
from facedata.readers.pixels import check_channels, to_channels
from facedata.storage.base import BACKENDS, Backend, ShardSchema, ShardSource, in_page_cache, read_into_page_cache
from facedata.storage.index import dtype_from_json, load_index

Allocator = Callable[[int], tuple[np.ndarray, np.ndarray]]
PREFETCH_SAMPLES = 2 * WINDOW_SAMPLES  # how far ahead in the order the helper thread decodes
DECODED_CACHE_BYTES = 96 << 20  # units cached per process when shards hold encoded images (decoded copies)
READAHEAD_BYTES = 64 << 20  # how far ahead in the order (at least 2 units) the shards are asked to start reading
_PIN_TRIES = 5  # a directory replaced this many times while a reader opens it is an error
WHOLE_READ_RAM_SHARE = 0.25  # an epoch over most units of a set this small (share of RAM) reads the files whole


class ShardedDataset:
    """A shard directory as (pixels (N,H,W,C) uint8, records (N,) structured) arrays."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.index, self._files = _pin(self.path)
        self.backend: Backend = BACKENDS.get(self.index["backend"])()
        self.image_shape: tuple[int, int, int] = tuple(int(x) for x in self.index["image_shape"])  # type: ignore[assignment]
        self.record_dtype = dtype_from_json(self.index["record_dtype"])
        self.schema = ShardSchema.from_index(self.index)
        self.unit_samples = self.schema.unit_samples
        self._units_per_shard = self.schema.samples_per_shard // self.unit_samples
        self._n = int(self.index["samples"])
        self._check_shard_counts()
        for shard in range(len(self.index["shards"])):
            self._check_shard_file(shard)
        unit_bytes = self.unit_samples * self.schema.bytes_per_sample
        cache_bytes = self.backend.cache_bytes if self.schema.encoding == "raw" else DECODED_CACHE_BYTES
        self._cache_units = max(4, min(4096, cache_bytes // unit_bytes))  # decoded units are process memory
        # Stage slots for two shuffle windows plus stragglers, when units are small enough to share one.
        small = self.unit_samples < WINDOW_SAMPLES
        self._stage_slots = 2 * (WINDOW_SAMPLES // self.unit_samples) + 2 if small else 0
        self._labels: np.ndarray | None = None
        self._reset()

    def _check_shard_counts(self) -> None:
        """Shard k must hold samples [kM, (k+1)M): all shards full but the last, summing to `samples`."""
        shards = self.index["shards"]
        for k, entry in enumerate(shards):
            samples = int(entry["samples"])
            full = k < len(shards) - 1
            if samples > self.schema.samples_per_shard or (full and samples != self.schema.samples_per_shard):
                raise FacedataError(f"{self.path / entry['file']}: index.json lists {samples} samples, expected "
                                    f"{'' if full else 'at most '}{self.schema.samples_per_shard} per shard")
        listed = sum(int(entry["samples"]) for entry in shards)
        if listed != self._n:
            raise FacedataError(f"{self.path / 'index.json'}: its shards hold {listed} samples but it says {self._n}")

    def _check_shard_file(self, shard: int) -> None:
        """The shard has the size index.json records (checked before anything maps it)."""
        entry = self.index["shards"][shard]
        file = self.path / entry["file"]
        size = os.fstat(self._files[shard]).st_size
        if size != entry["bytes"]:
            state = "truncated" if size < entry["bytes"] else "longer than recorded"
            raise FacedataError(f"{file}: {state}: {size:,} bytes on disk, index.json says {entry['bytes']:,} "
                                f"(run `facedata verify {self.path}`)")

    def _open_source(self, shard: int) -> ShardSource:
        """A source reading the pinned file of `shard` (the one index.json was read with)."""
        entry = self.index["shards"][shard]
        return self.backend.open_source(self.path / entry["file"], self.schema, int(entry["samples"]),
                                        self._files[shard])

    def __del__(self) -> None:
        _close_all(getattr(self, "_files", []))

    def _own_handles(self) -> None:
        """After a fork, start afresh: never touch the parent's handles."""
        if self._pid != os.getpid():
            self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._sources: dict[int, ShardSource] = {}
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._stage: _Stage | None = None
        self._pending: dict[int, Future[tuple[np.ndarray, np.ndarray]]] = {}  # units decoding in a helper

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
        cached = self._cache.get(unit)
        if cached is not None:
            self._cache.move_to_end(unit)
            return cached
        pending = self._pending.pop(unit, None)
        data = pending.result() if pending is not None else self._read_unit(unit)()
        self._check_unit(unit, data[1])
        self._cache[unit] = data
        if len(self._cache) > self._cache_units:
            self._cache.popitem(last=False)
        return data

    def _check_unit(self, unit: int, records: np.ndarray) -> None:
        """A unit must hold exactly the rows the index implies, or gathers would index the wrong samples."""
        expected = min(self.unit_samples, self._n - unit * self.unit_samples)
        if len(records) != expected:
            shard, local = divmod(unit, self._units_per_shard)
            raise FacedataError(f"{self.path / self.index['shards'][shard]['file']}: unit {local} holds "
                                f"{len(records)} samples, index.json implies {expected}")

    def _read_unit(self, unit: int) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """A call that reads `unit` from its shard (opened here, in the calling thread)."""
        source, local = self._source(unit)
        return partial(source.read_unit, local)

    def _source(self, unit: int) -> tuple[ShardSource, int]:
        """The open source of `unit`'s shard and the unit's number inside it."""
        shard, local = divmod(unit, self._units_per_shard)
        source = self._sources.get(shard)
        if source is None:
            if shard >= len(self.index["shards"]):
                raise FacedataError(f"{self.path}: unit {unit} is past the last shard")
            self._check_shard_file(shard)  # again: the file may have changed since __init__
            source = self._open_source(shard)
            self._sources[shard] = source
        return source, local

    def _will_need(self, advisor: ThreadPoolExecutor, order: np.ndarray, start: int, stop: int, asked: np.ndarray
                   ) -> int:
        """Have `advisor` read ahead the units of order[start:stop] not asked for yet (`asked`, one flag per
        unit) and not in the page cache; returns where the next call starts. A cold shuffled read then
        finds its pages in the page cache instead of faulting them in one by one. Slices of 4096 samples
        keep the reading order (roughly) without sorting the whole look-ahead (a warm epoch pays ~2 ms)."""
        reads = []
        for lo in range(start, stop, 4096):
            units = order[lo : min(lo + 4096, stop)] // self.unit_samples
            new = np.unique(units[~asked[units]])
            asked[new] = True
            for unit in new.tolist():
                source, local = self._source(unit)  # opened here, in the reading thread
                read = source.will_need(local)
                if read is not None:  # None: in the page cache already
                    reads.append(read)
        if reads:
            advisor.submit(_run_all, reads)  # one task: every hand-over of the GIL to that thread costs
        return max(start, stop)

    def _read_files_whole(self, advisor: ThreadPoolExecutor, order: np.ndarray) -> bool:
        """For an epoch touching most units of a set that fits WHOLE_READ_RAM_SHARE of RAM, have `advisor`
        read each shard file into the page cache whole, sequentially, in the order the epoch first needs
        them. Scattered unit hints fill a cold cache at about half the disk's sequential speed (small LMDB
        blocks in shuffle order); one sequential read per file runs at full speed while the gathers start.
        Cached files cost three one-byte probes each. Returns whether it did so."""
        n_units = -(-self._n // self.unit_samples)
        touched = np.zeros(n_units, bool)
        touched[order // self.unit_samples] = True
        shards = self.index["shards"]
        total = sum(int(entry["bytes"]) for entry in shards)
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if 2 * int(touched.sum()) < n_units or total > WHOLE_READ_RAM_SHARE * ram:
            return False
        first_use = np.full(len(shards), len(order), np.int64)
        first_use[(order // self.schema.samples_per_shard)[::-1]] = np.arange(len(order) - 1, -1, -1)  # last wins
        for shard in np.argsort(first_use, kind="stable")[: int((first_use < len(order)).sum())].tolist():
            entry = shards[shard]
            advisor.submit(_read_file_into_cache, self._files[shard], int(entry["bytes"]))
        return True

    def _prefetch(self, pool: ThreadPoolExecutor, unit: int) -> None:
        """Start decoding `unit` in the helper thread unless it is cached or already on its way."""
        if unit not in self._cache and unit not in self._pending:
            self._pending[unit] = pool.submit(self._read_unit(unit))

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples at `indices` (any order, repeats allowed) as contiguous arrays."""
        indices = self._check(indices)
        pixels, records = self._empty(len(indices))
        if len(indices):
            self._fill(indices, pixels, records)
        return pixels, records

    def _empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.empty((n, *self.image_shape), np.uint8), np.empty(n, self.record_dtype)

    def _check(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self._n):
            raise IndexError(f"sample index out of range [0, {self._n})")
        return indices

    def _fill(self, indices: np.ndarray, pixels: np.ndarray, records: np.ndarray) -> None:
        """Gather the samples at `indices` into `pixels` and `records` with one np.take per array.

        The source is the unit itself when all samples share one (nearly every batch of Parquet's large
        row groups, mapped zero-copy), else the stage when the units fit (the small LMDB blocks of a
        shuffle window, copied in once for all its batches), else each unit in turn (sparse requests).
        """
        self._own_handles()
        units = indices // self.unit_samples
        first, last = int(units.min()), int(units.max())
        if first == last:
            unit_pixels, unit_records = self._unit(first)
            _take(unit_pixels, _rows(unit_records), indices - first * self.unit_samples, pixels, records)
            return
        present = np.zeros(last - first + 1, bool)
        present[units - first] = True
        needed = np.flatnonzero(present) + first
        if len(needed) > self._stage_slots:
            self._fill_by_unit(indices, units, pixels, records)
            return
        if self._stage is None:
            self._stage = _Stage(self._stage_slots, self.unit_samples, self.image_shape, self.record_dtype)
        slot = np.zeros(last - first + 1, np.int64)
        slot[needed - first] = self._stage.place(needed.tolist(), self._unit)
        where = (slot[units - first] - units) * self.unit_samples + indices
        _take(self._stage.pixels, self._stage.rows, where, pixels, records)

    def _fill_by_unit(self, indices: np.ndarray, units: np.ndarray, pixels: np.ndarray, records: np.ndarray
                      ) -> None:
        """Sparse requests: gather unit by unit in unit-sorted order, then one take restores request order
        (np.take is several times faster than fancy-index scatter for these row sizes)."""
        n = len(indices)
        order = np.argsort(units, kind="stable")
        sorted_units = units[order]
        local = indices[order] - sorted_units * self.unit_samples
        cuts = np.flatnonzero(sorted_units[1:] != sorted_units[:-1]) + 1
        grouped_pixels, grouped_records = self._empty(n)
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, n].tolist(), strict=True):
            unit_pixels, unit_records = self._unit(int(sorted_units[lo]))
            _take(unit_pixels, _rows(unit_records), local[lo:hi], grouped_pixels[lo:hi], grouped_records[lo:hi])
        back = np.empty(n, np.int64)
        back[order] = np.arange(n, dtype=np.int64)
        _take(grouped_pixels, _rows(grouped_records), back, pixels, records)

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples [start, stop) in stored order."""
        start, stop, _ = slice(start, stop).indices(self._n)
        return self.read(np.arange(start, max(start, stop), dtype=np.int64))

    def iter_order(
        self, order: np.ndarray, batch_size: int, out: Allocator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of consecutive `batch_size` slices of `order`, each gathered into `out(n)` (pixels
        (n,H,W,C) uint8, records (n,) contiguous) when given, else into new arrays.

        The shards are asked to start reading the units found up to READAHEAD_BYTES ahead in the order, in
        that order (a cold page cache then fills in bulk reads, not page fault by page fault). For backends
        whose units take real decoding (Parquet row groups), a helper thread decodes the unit found
        PREFETCH_SAMPLES ahead in the order while this thread gathers the current batches.
        """
        order = self._check(order)
        self._own_handles()
        ahead = max(batch_size, 2 * self.unit_samples, READAHEAD_BYTES // self.schema.bytes_per_sample)
        asked, asked_until = np.zeros(-(-self._n // self.unit_samples), bool), 0
        # The hints go through their own thread: posix_fadvise(WILLNEED) blocks while the kernel queues the reads.
        advisor = ThreadPoolExecutor(1, thread_name_prefix="facedata-readahead")
        if self._read_files_whole(advisor, order):
            asked[:] = True  # no unit hints: the files are on their way in one sequential read each
        with ThreadPoolExecutor(1) if self.backend.prefetch_units else nullcontext() as pool:
            try:
                for lo in range(0, len(order), batch_size):
                    asked_until = self._will_need(advisor, order, asked_until, lo + ahead, asked)
                    if pool is not None and lo + PREFETCH_SAMPLES < len(order):
                        self._prefetch(pool, int(order[lo + PREFETCH_SAMPLES]) // self.unit_samples)
                    rows = order[lo : lo + batch_size]
                    pixels, records = self._empty(len(rows)) if out is None else out(len(rows))
                    self._fill(rows, pixels, records)
                    yield pixels, records
            finally:
                advisor.shutdown(wait=True, cancel_futures=True)  # no hint may outlive the sources' files
                self._pending.clear()

    def labels(self) -> np.ndarray:
        """Every sample's label (int8), read from the label bytes of the shards only (never the pixels);
        kept for the life of this object (its process), never written anywhere."""
        if self._labels is None:
            parts = []
            for shard in range(len(self.index["shards"])):
                source = self._open_source(shard)
                try:
                    parts.append(np.asarray(source.labels(), np.int8))
                finally:
                    source.close()
            labels = np.concatenate(parts) if parts else np.zeros(0, np.int8)
            if len(labels) != self._n:
                raise FacedataError(f"{self.path}: the shards hold {len(labels)} labels, index.json says {self._n}")
            self._labels = labels
        return self._labels

    def read_order(
        self, batch_size: int, *, seed: int = 0, shuffle: bool = True, world_size: int = 1, drop_last: bool = False,
        batch_mix: str | Sequence[float] | None = None,
    ) -> ReadOrder:
        """The shared reader order over this dataset (readers/order.py); a `batch_mix` reads the labels."""
        return ReadOrder(self._n, self.unit_samples, batch_size, seed=seed, shuffle=shuffle, world_size=world_size,
                         drop_last=drop_last, batch_mix=batch_mix,
                         labels=None if batch_mix is None else self.labels())

    def iter_batches(
        self, batch_size: int, *, seed: int = 0, epoch: int = 0, shuffle: bool = True, rank: int = 0,
        world_size: int = 1, worker: int = 0, num_workers: int = 1, drop_last: bool = False,
        batch_mix: str | Sequence[float] | None = None, channels: str = "bgr", out: Allocator | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This (rank, worker)'s batches of one epoch, in the shared reader order (readers/order.py).

        `batch_mix="3:1:1:2"` (neg:pos:part:landmark) gives every batch exact class counts, classes in
        that order; `channels="rgb"` reverses the stored BGR channels. `out(n)` may supply each batch's
        (pixels, records) arrays (e.g. views of one shared buffer).
        """
        check_channels(channels)
        order = self.read_order(batch_size, seed=seed, shuffle=shuffle, world_size=world_size, drop_last=drop_last,
                                batch_mix=batch_mix).worker(epoch, rank, worker, num_workers)
        batches = self.iter_order(order, batch_size, out)
        return batches if channels == "bgr" else ((to_channels(p, channels), r) for p, r in batches)


def _pin(path: Path) -> tuple[dict, list[int]]:
    """index.json and an open descriptor of every shard it lists, all from one directory.

    A build with --overwrite swaps a new dataset in at `path` and deletes the old one (facedata.buildoutput):
    a dataset pinned before the swap keeps reading the old files, which live on while open, and one pinned
    during it retries until index and shards come from the same directory, never a mix of two datasets."""
    for _ in range(_PIN_TRIES):
        try:
            directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            load_index(path)  # the clear error: no directory, no index.json
            raise
        files: list[int] = []
        try:
            index = load_index(path)
            missing = None
            for entry in index["shards"]:
                try:
                    files.append(os.open(entry["file"], os.O_RDONLY, dir_fd=directory))
                except FileNotFoundError:
                    missing = entry["file"]
                    break
            if _same_file(path, directory):
                if missing is not None:
                    raise FacedataError(f"{path / missing}: shard listed in index.json is missing")
                return index, files
        except BaseException:
            _close_all(files)
            raise
        finally:
            os.close(directory)
        _close_all(files)  # replaced meanwhile: pin again
    raise FacedataError(f"{path}: replaced {_PIN_TRIES} times while being opened; try again")


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _Stage:
    """Reusable slots of whole units: the small units of a shuffle window are copied in once, then
    every batch of the window is one gather from this cache-friendly buffer (the blocks themselves
    are scattered over the memory map). Least recently used slots are refilled first."""

    def __init__(self, slots: int, unit_samples: int, image_shape: tuple[int, int, int], record_dtype: np.dtype
                 ) -> None:
        self.unit_samples = unit_samples
        self.pixels = np.empty((slots * unit_samples, *image_shape), np.uint8)
        self.rows = _rows(np.empty(slots * unit_samples, record_dtype))
        self.held = [-1] * slots  # the unit in each slot
        self.used = [0] * slots  # when each slot was last wanted
        self.slot_of: dict[int, int] = {}
        self.clock = 0

    def place(self, units: list[int], load: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> list[int]:
        """The slot of each of `units` (at most as many as there are slots), loading the missing ones."""
        self.clock += 1
        wanted = set(units)
        for unit in units:
            if unit not in self.slot_of:
                self._load(unit, wanted, load)
            self.used[self.slot_of[unit]] = self.clock
        return [self.slot_of[unit] for unit in units]

    def _load(self, unit: int, wanted: set[int], load: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> None:
        free = [slot for slot, held in enumerate(self.held) if held not in wanted]
        slot = min(free, key=self.used.__getitem__)
        self.slot_of.pop(self.held[slot], None)
        pixels, records = load(unit)
        lo = slot * self.unit_samples
        self.pixels[lo : lo + len(records)] = pixels
        self.rows[lo : lo + len(records)] = _rows(records)
        self.held[slot] = unit
        self.slot_of[unit] = slot


def _read_file_into_cache(fd: int, size: int) -> None:
    if not in_page_cache(fd, 0, size, probes=17):
        read_into_page_cache(fd, 0, size)


def _run_all(calls: list[Callable[[], None]]) -> None:
    for call in calls:
        call()


def _take(source_pixels: np.ndarray, source_rows: np.ndarray, where: np.ndarray, pixels: np.ndarray,
          records: np.ndarray) -> None:
    """Gather rows `where`; out of range is an error, checked here because np.take with `out` and
    mode="raise" would buffer the whole output (the unchecked gather is "clip", never reached out of range)."""
    if len(where) and (int(where.min()) < 0 or int(where.max()) >= min(len(source_rows), len(source_pixels))):
        raise FacedataError(f"gather index out of range [0, {len(source_rows)}): the index and a shard disagree")
    np.take(source_rows, where, out=_rows(records), mode="clip")
    np.take(source_pixels, where, axis=0, out=pixels, mode="clip")


_ROW_DTYPES: dict[int, np.dtype] = {}


def _rows(records: np.ndarray) -> np.ndarray:
    """Structured records as opaque fixed-size rows: gathers become plain memcpy (about 20x faster)."""
    size = records.dtype.itemsize
    row = _ROW_DTYPES.get(size)
    if row is None:
        row = _ROW_DTYPES[size] = np.dtype((np.void, size))
    return records.view(row)
