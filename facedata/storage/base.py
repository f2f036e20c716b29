"""What a storage backend provides: a sink that writes one shard and a source that reads it back.

Shards are cut into fixed-size *units* (an LMDB block value, a Parquet row group); readers fetch and
cache whole units, and the reader order shuffles at unit granularity, so no per-sample lookups happen.
Adding a backend is one module that registers a `Backend` subclass in `BACKENDS`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from facedata.registry import Registry


@dataclass(frozen=True)
class ShardSchema:
    """The fixed layout every shard of a dataset shares."""

    image_shape: tuple[int, int, int]
    record_dtype: np.dtype
    block_samples: int
    unit_samples: int
    samples_per_shard: int
    encoding: str = "raw"  # facedata.storage.codec.ENCODINGS: raw pixels or one PNG/JPEG per sample

    @classmethod
    def from_index(cls, index: dict) -> ShardSchema:
        """The schema an index.json (or a writer's layout) describes; indexes without `image_encoding` are raw."""
        from facedata.storage.codec import check_encoding
        from facedata.storage.index import dtype_from_json

        check_encoding(index.get("image_encoding", "raw"))
        return cls(tuple(int(x) for x in index["image_shape"]), dtype_from_json(index["record_dtype"]),  # type: ignore[arg-type]
                   int(index["block_samples"]), int(index["unit_samples"]), int(index["samples_per_shard"]),
                   index.get("image_encoding", "raw"))

    @property
    def image_bytes(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    @property
    def bytes_per_sample(self) -> int:
        return self.image_bytes + self.record_dtype.itemsize


class ShardSink(Protocol):
    def write(self, pixels: np.ndarray, records: np.ndarray) -> None:
        """Append one unit (exactly `unit_samples` rows, except a shard's last call)."""

    def finish(self) -> None:
        """Write the complete shard file at the sink's target path."""

    def abort(self) -> None:
        """Remove every temporary file; the target is left untouched."""


class ShardSource(Protocol):
    def read_unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (n, H, W, C) uint8 and records (n,) of one unit of this shard."""

    def will_need(self, unit: int) -> Callable[[], None] | None:
        """None when the unit's bytes are in the page cache (or cannot be located), else a call that brings
        them in (run in the reader's read-ahead thread, so it may block on the disk)."""

    def labels(self) -> np.ndarray:
        """Every sample's label, in order (for verification)."""

    def close(self) -> None: ...


class Piece(NamedTuple):
    """Where a run of a shard's samples lies in its file: an LMDB block value, a Parquet row group."""

    name: str  # e.g. "block 3", "row group 0"
    first: int  # first sample, counted from the shard's start
    samples: int
    offset: int  # file bytes [offset, offset + length)
    length: int


def file_digests(path: Path, pieces: list[Piece]) -> tuple[str, list[str]]:
    """The sha256 of the whole file and a short digest of each piece's bytes (the first 16 hex digits of its
    sha256, which CPUs with SHA extensions hash about twice as fast as BLAKE2b), in one read of the file:
    index.json records both, so that verify can name the block or row group whose bytes changed. Pieces do
    not overlap; they may be listed in any order."""
    whole = hashlib.sha256()
    parts = [hashlib.sha256() for _ in pieces]
    by_offset = sorted(range(len(pieces)), key=lambda i: pieces[i].offset)
    first, at = 0, 0  # the first piece (in offset order) not yet wholly read; the file position
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            view, end = memoryview(block), at + len(block)
            whole.update(view)
            while first < len(by_offset) and _end(pieces[by_offset[first]]) <= at:
                first += 1
            for i in by_offset[first:]:
                piece = pieces[i]
                if piece.offset >= end:
                    break
                lo, hi = max(piece.offset, at), min(_end(piece), end)
                if hi > lo:
                    parts[i].update(view[lo - at:hi - at])
            at = end
    return whole.hexdigest(), [part.hexdigest()[:16] for part in parts]


def _end(piece: Piece) -> int:
    return piece.offset + piece.length


class Backend:
    """A storage format. `cache_bytes` bounds how much decoded data a reader keeps per process;
    `prefetch_units`: reading a unit is real work and its source's `read_unit` may run in a helper thread."""

    name: str = ""
    suffix: str = ""
    cache_bytes: int = 96 << 20
    prefetch_units: bool = False

    def unit_samples(self, samples_per_shard: int, block_samples: int, bytes_per_sample: int) -> int:
        return block_samples

    def open_sink(self, target: Path, schema: ShardSchema) -> ShardSink:
        raise NotImplementedError

    def open_source(self, path: Path, schema: ShardSchema, samples: int, fd: int | None = None) -> ShardSource:
        """A reader of the shard at `path`; with `fd`, of the file open there (see `pinned_path`)."""
        raise NotImplementedError

    def pieces(self, path: Path, schema: ShardSchema, samples: int) -> list[Piece]:
        """Where the samples lie in the file, in order, parsed from the file's own metadata without the
        backend's reader: on a damaged file this may raise, never crash (verify locates changed bytes with it)."""
        raise NotImplementedError


def pinned_path(path: Path, fd: int | None) -> str:
    """What to open to read the file a reader holds open as `fd` (/proc/self/fd/N: that very file, even after
    `path` was renamed or deleted), else `path` (no fd, or no /proc). `path` still names it in messages."""
    if fd is not None and os.path.isdir("/proc/self/fd"):
        return f"/proc/self/fd/{fd}"
    return str(path)


BACKENDS: Registry[type[Backend]] = Registry("storage backend")


def drop_cached_pages(files: Iterable[Path]) -> None:
    """Evict the files' pages from the page cache, so the next read is cold (cold-read benchmarks and tests).
    Dirty pages are written first (they would stay); pages a live process maps stay as well."""
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


_dev_null: int | None = None


def read_into_page_cache(fd: int, offset: int, length: int) -> None:
    """Bring file bytes [offset, offset + length) into the page cache, blocking this thread until they are
    there. sendfile() to /dev/null reads them the way a sequential read() does (large readahead, large
    folios) without copying them to user space; where that fails, posix_fadvise(WILLNEED) asks for them."""
    global _dev_null
    try:
        if _dev_null is None:
            _dev_null = os.open(os.devnull, os.O_WRONLY)
        while length > 0:
            sent = os.sendfile(_dev_null, fd, offset, length)
            if sent <= 0:
                return
            offset, length = offset + sent, length - sent
    except OSError:
        if hasattr(os, "posix_fadvise"):  # not on macOS
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def in_page_cache(fd: int, offset: int, length: int, probes: int = 3) -> bool:
    """Whether file bytes [offset, offset + length) look cached: one-byte preadv(RWF_NOWAIT) reads of
    `probes` pages spread from the first to the last (first, middle and last by default), which fail instead
    of waiting for the disk (about 10 microseconds each). False where the flag is unsupported. Read-ahead
    hints skip cached units: on a warm cache, a helper thread asking the kernel for each unit cost up to 2x
    the epoch's gathers (GIL hand-overs). A whole file takes more probes: opening an LMDB shard reads its
    first and last pages, and a first batch's gathers touch a fifth of a small shard: three probes called
    such a file cached in 2 of 5 runs of its test, which then read it cold unit by unit."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None or length <= 0:
        return False
    probe = bytearray(1)
    points = {offset + (length - 1) * i // max(1, probes - 1) for i in range(probes)}
    try:
        return all(os.preadv(fd, [probe], at, flag) == 1 for at in sorted(points))
    except OSError:  # EAGAIN: not in the cache; EOPNOTSUPP: this file system cannot tell
        return False
