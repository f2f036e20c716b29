"""LMDB backend: one single-file env per shard, one value per block of samples.

Key = big-endian uint64 block number inside the shard (sorted, so writes use `append=True`); value =
the block's pixels (n*H*W*C bytes) followed by its records (n * itemsize bytes). With encoded images
(`image_encoding` png/jpeg) the value is n (uint32 LE), the end offsets of the n images (uint32 LE each,
counted from the first image byte), the images end to end, then the records. The schema lives in a
named DB `__meta__`, the blocks in a named DB `blocks` (a named DB's entry in the main DB would
break `append` order if both shared it). The shard is written into a work env with a fixed commit
pattern, then `copyfd(compact=True)` produces the final file: two identical writes give identical
bytes (tested). Readers open lazily per process (never across fork) with readonly, lock=False,
readahead=False and keep one read txn, so blocks are zero-copy numpy views of the memory map.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import lmdb
import numpy as np

from facedata.errors import FacedataError
from facedata.storage.base import BACKENDS, Backend, Piece, ShardSchema, in_page_cache, pinned_path
from facedata.storage.codec import RAW, decode_images, encode_images
from facedata.storage.index import FORMAT_NAME, FORMAT_VERSION, canonical_json, dtype_to_json

_META_KEY = b"schema"
_COMMIT_BYTES = 16 << 20  # bounds the write txn's dirty pages (RAM) independently of shard size


def block_key(block: int) -> bytes:
    return int(block).to_bytes(8, "big")


@contextmanager
def _as_os_error(path: Path) -> Iterator[None]:
    """LMDB reports a full disk as its own DiskError: raise it as the OSError (ENOSPC) every other writer raises."""
    try:
        yield
    except lmdb.DiskError as exc:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({exc})", str(path)) from None


class LmdbSink:
    def __init__(self, target: Path, schema: ShardSchema) -> None:
        self.target = target
        self.schema = schema
        self.work = target.with_name(target.name + ".work")
        self._remove_work()
        shard_bytes = schema.samples_per_shard * schema.bytes_per_sample
        with _as_os_error(self.work):
            self.env = lmdb.open(str(self.work), subdir=False, map_size=2 * shard_bytes + (64 << 20), lock=False,
                                 sync=False, metasync=False, max_dbs=2, readahead=False)
        self.blocks_db = self.env.open_db(b"blocks")
        self.meta_db = self.env.open_db(b"__meta__")
        self.txn = self.env.begin(write=True)
        self.block = 0
        self.samples = 0
        block_bytes = schema.block_samples * schema.bytes_per_sample
        self.commit_every = max(1, _COMMIT_BYTES // block_bytes)

    def write(self, pixels: np.ndarray, records: np.ndarray) -> None:
        if self.schema.encoding == RAW:
            value = pixels.tobytes() + records.tobytes()
        else:
            images = encode_images(pixels, self.schema.encoding)
            ends = np.cumsum([len(b) for b in images], dtype=np.uint64).astype("<u4")
            value = b"".join([np.uint32(len(images)).astype("<u4").tobytes(), ends.tobytes(), *images,
                              records.tobytes()])
        with _as_os_error(self.work):
            if not self.txn.put(block_key(self.block), value, append=True, db=self.blocks_db):
                raise FacedataError(f"{self.target.name}: LMDB refused block {self.block} (key order)")
            self.block += 1
            self.samples += len(records)
            if self.block % self.commit_every == 0:  # a function of the block number only: deterministic bytes
                self.txn.commit()
                self.txn = self.env.begin(write=True)

    def finish(self) -> None:
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "image_shape": list(self.schema.image_shape),
            "image_encoding": self.schema.encoding,
            "record_dtype": dtype_to_json(self.schema.record_dtype),
            "block_samples": self.schema.block_samples,
            "samples": self.samples,
        }
        try:
            with _as_os_error(self.target):
                self.txn.put(_META_KEY, canonical_json(meta).encode(), db=self.meta_db)
                self.txn.commit()
                self.txn = None
                with open(self.target, "wb") as fh:
                    self.env.copyfd(fh.fileno(), compact=True)
                    fh.flush()
                    os.fsync(fh.fileno())
        finally:
            self.txn = None
            self.env.close()
            self._remove_work()

    def abort(self) -> None:
        """Drop the shard in progress (also after a failed `finish`): no work env or temp file stays."""
        try:
            if self.txn is not None:
                self.txn.abort()
                self.txn = None
            self.env.close()
        finally:
            self._remove_work()
            self.target.unlink(missing_ok=True)

    def _remove_work(self) -> None:
        for path in (self.work, self.work.with_name(self.work.name + "-lock")):
            if path.exists():
                path.unlink()


# LMDB's on-disk format (mdb.c, format version 1), just enough to find where each value lies in the file:
# page header 16 bytes (pgno u64, pad u16, flags u16, lower u16, upper u16, then the node offsets u16[]);
# meta pages 0 and 1 hold magic, version, address, mapsize, then the free and main DBs' MDB_db records.
_PAGE_HEADER = 16
_META = struct.Struct("<IIQQ")  # magic, version, fixed address, map size
_DB = struct.Struct("<IHHQQQQQ")  # MDB_db: pad (the page size, in the free DB), flags, depth, 3 page counts,
#                                   entries, root page
_P_BRANCH, _P_LEAF, _P_LEAF2 = 0x01, 0x02, 0x20
_F_BIGDATA, _F_SUBDATA = 0x01, 0x02


def value_extents(fd: int, db_name: bytes) -> dict[bytes, tuple[int, int]]:
    """key -> (file offset, length) of every value of the named DB `db_name`, read from the B-tree pages
    with pread. py-lmdb's get() touches every page of a value, so a value's place cannot be learnt from
    py-lmdb without reading it; this is what lets a reader ask for a block's pages before it needs them."""
    size = os.fstat(fd).st_size
    psize = _DB.unpack_from(os.pread(fd, 256, 0), _PAGE_HEADER + _META.size)[0]
    if psize < 512 or psize & (psize - 1):
        raise ValueError(f"page size {psize}")
    metas = [os.pread(fd, 256, k * psize) for k in range(2)]
    txnid = _PAGE_HEADER + _META.size + 2 * _DB.size + 8  # after the two MDB_db records and last_pg

    def newest(meta: bytes) -> int:
        return struct.unpack_from("<Q", meta, txnid)[0]

    meta = max(metas, key=newest)
    if _META.unpack_from(meta, _PAGE_HEADER)[:2] != (0xBEEFC0DE, 1):
        raise ValueError("not an LMDB format 1 file")
    named = _leaves(fd, psize, size, _DB.unpack_from(meta, _PAGE_HEADER + _META.size + _DB.size)[7])
    if db_name not in named or not named[db_name][2] & _F_SUBDATA:
        raise ValueError(f"no named DB {db_name!r}")
    root = _DB.unpack_from(os.pread(fd, _DB.size, named[db_name][0]), 0)[7]
    return {key: (offset, length) for key, (offset, length, _) in _leaves(fd, psize, size, root).items()}


def _leaves(fd: int, psize: int, size: int, root: int) -> dict[bytes, tuple[int, int, int]]:
    """key -> (value offset, value length, node flags) of one B-tree, walking branch and leaf pages."""
    found: dict[bytes, tuple[int, int, int]] = {}
    todo, visited = [root], 0
    while todo:
        pgno = todo.pop()
        visited += 1
        if not 0 <= pgno < size // psize or visited > size // psize:
            raise ValueError(f"page {pgno} outside the file")
        page = os.pread(fd, psize, pgno * psize)
        flags, lower = struct.unpack_from("<HH", page, 10)
        if flags & _P_LEAF2 or not flags & (_P_BRANCH | _P_LEAF):
            raise ValueError(f"page {pgno}: flags {flags:#x}")
        for i in range((lower - _PAGE_HEADER) // 2):
            node = struct.unpack_from("<H", page, _PAGE_HEADER + 2 * i)[0]
            lo, hi, node_flags, key_size = struct.unpack_from("<HHHH", page, node)
            if flags & _P_BRANCH:
                todo.append(lo | hi << 16 | node_flags << 32)
                continue
            data = node + 8 + key_size
            offset = pgno * psize + data
            if node_flags & _F_BIGDATA:  # the value lives on overflow pages, after their page header
                offset = struct.unpack_from("<Q", page, data)[0] * psize + _PAGE_HEADER
            found[bytes(page[node + 8 : data])] = (offset, lo | hi << 16, node_flags)
    return found


# LMDB forbids opening one env twice in a process, so sources share envs, counted per process.
_OPEN: dict[str, tuple[int, lmdb.Environment, object, int]] = {}


def _file_key(path: Path, fd: int | None) -> str:
    """Which file: device and inode, so that a dataset swapped in at the same path is never given the env of the
    one it replaced."""
    try:
        stat = os.fstat(fd) if fd is not None else os.stat(path)
    except OSError:
        return str(path)  # lmdb.open says what is wrong with it
    return f"{stat.st_dev}:{stat.st_ino}"


def _acquire(path: Path, fd: int | None = None) -> tuple[lmdb.Environment, object]:
    key = _file_key(path, fd)
    held = _OPEN.get(key)
    if held is not None and held[0] == os.getpid():
        _OPEN[key] = (held[0], held[1], held[2], held[3] + 1)
        return held[1], held[2]
    if held is not None:
        # Inherited through fork(): LMDB handles are unusable here, but py-lmdb still counts the env as
        # open in this process. Closing it (readonly, lock=False: no shared lock state) only unmaps the
        # child's copy and lets us open a fresh env.
        held[1].close()
        del _OPEN[key]
    try:
        env = lmdb.open(pinned_path(path, fd), subdir=False, readonly=True, lock=False, readahead=False,
                        max_spare_txns=1, max_dbs=2)
    except lmdb.Error as exc:
        raise FacedataError(f"{path}: cannot open LMDB shard ({exc})") from None
    try:
        _check_extent(path, env, fd)  # before open_db: the main DB's root page is the last page of the file
        blocks_db = env.open_db(b"blocks", create=False)
    except lmdb.Error as exc:
        env.close()
        raise FacedataError(f"{path}: cannot open LMDB shard ({exc})") from None
    except FacedataError:
        env.close()
        raise
    _OPEN[key] = (os.getpid(), env, blocks_db, 1)
    return env, blocks_db


def _check_extent(path: Path, env: lmdb.Environment, fd: int | None) -> None:
    """The pages the meta page says are in use must lie inside the file: a page past the end of a
    memory-mapped file is a SIGBUS on first touch, not an error."""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (os.fstat(fd) if fd is not None else path.stat()).st_size
    if size < used:
        raise FacedataError(f"{path}: truncated LMDB shard: its pages need {used:,} bytes, the file has {size:,}")


def _release(key: str) -> None:
    held = _OPEN.get(key)
    if held is None or held[0] != os.getpid():
        return
    if held[3] > 1:
        _OPEN[key] = (held[0], held[1], held[2], held[3] - 1)
    else:
        del _OPEN[key]
        held[1].close()


class LmdbSource:
    def __init__(self, path: Path, schema: ShardSchema, samples: int, fd: int | None = None) -> None:
        self.path = path
        self.schema = schema
        self.samples = samples
        self.key = _file_key(path, fd)
        self.env, self.blocks_db = _acquire(path, fd)
        self.txn = self.env.begin(db=self.blocks_db, buffers=True)
        self.fd = os.open(pinned_path(path, fd), os.O_RDONLY)
        try:
            self.extents = value_extents(self.fd, b"blocks")
        except (OSError, ValueError, struct.error):  # only a read-ahead hint is lost; reads do not depend on it
            self.extents = {}

    def read_unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        value = self.txn.get(block_key(unit))
        if value is None:
            raise FacedataError(f"{self.path.name}: block {unit} is missing")
        if self.schema.encoding != RAW:
            return self._decode_block(unit, value)
        bps = self.schema.bytes_per_sample
        n = len(value) // bps
        if n * bps != len(value):
            raise FacedataError(f"{self.path.name}: block {unit} size {len(value)} not a multiple of {bps}")
        pixels = np.frombuffer(value, np.uint8, n * self.schema.image_bytes)
        pixels = pixels.reshape((n, *self.schema.image_shape))
        records = np.frombuffer(value, self.schema.record_dtype, n, offset=n * self.schema.image_bytes)
        return pixels, records

    def _decode_block(self, unit: int, value: memoryview) -> tuple[np.ndarray, np.ndarray]:
        where = f"{self.path.name}: block {unit}"
        size = len(value)
        n = int(np.frombuffer(value, "<u4", 1)[0]) if size >= 4 else -1
        head = 4 + 4 * n
        ends = np.frombuffer(value, "<u4", n, 4) if 0 <= n and head <= size else None
        body = int(ends[-1]) if ends is not None and n else 0
        if ends is None or head + body + n * self.schema.record_dtype.itemsize != size:
            raise FacedataError(f"{where}: size {size} does not match its encoded layout")
        pixels = decode_images(np.frombuffer(value, np.uint8, body, head), ends, self.schema.image_shape, where)
        return pixels, np.frombuffer(value, self.schema.record_dtype, n, offset=head + body)

    def will_need(self, unit: int) -> Callable[[], None] | None:
        """posix_fadvise(WILLNEED) on the block's bytes: the env maps the file with readahead off (random
        reads must not drag in neighbouring blocks), so without this hint a cold block faults in page by page.
        Blocks are small and scattered: queued all at once, the kernel reads many in parallel (reading each
        in turn, as Parquet's row groups are, measured slower)."""
        extent = self.extents.get(block_key(unit))
        if extent is None or not hasattr(os, "posix_fadvise") or in_page_cache(self.fd, *extent):
            return None
        return partial(os.posix_fadvise, self.fd, extent[0], extent[1], os.POSIX_FADV_WILLNEED)

    def labels(self) -> np.ndarray:
        n_blocks = -(-self.samples // self.schema.block_samples)
        parts = [self.read_unit(b)[1]["label"].copy() for b in range(n_blocks)]
        extra = self.txn.get(block_key(n_blocks))
        if extra is not None:
            raise FacedataError(f"{self.path.name}: holds more blocks than the index says")
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)

    def close(self) -> None:
        os.close(self.fd)
        self.txn.abort()
        _release(self.key)


@BACKENDS.register("lmdb")
class LmdbBackend(Backend):
    name = "lmdb"
    suffix = "lmdb"
    cache_bytes = 1 << 40  # cached blocks are views of the memory map: they cost no RAM

    def open_sink(self, target: Path, schema: ShardSchema) -> LmdbSink:
        return LmdbSink(target, schema)

    def open_source(self, path: Path, schema: ShardSchema, samples: int, fd: int | None = None) -> LmdbSource:
        return LmdbSource(path, schema, samples, fd)

    def pieces(self, path: Path, schema: ShardSchema, samples: int) -> list[Piece]:
        """One piece per block value, from the B-tree pages (`value_extents`, plain preads)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            extents = value_extents(fd, b"blocks")
        finally:
            os.close(fd)
        pieces = []
        for key, (offset, length) in sorted(extents.items()):
            block = int.from_bytes(key, "big")
            first = block * schema.block_samples
            pieces.append(Piece(f"block {block}", first, max(0, min(schema.block_samples, samples - first)),
                                offset, length))
        return pieces
