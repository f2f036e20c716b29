"""LMDB backend: one single-file env per shard, one value per block of samples.

Key = big-endian uint64 block number inside the shard (sorted, so writes use `append=True`); value =
the block's pixels (n*H*W*C bytes) followed by its records (n * itemsize bytes). The schema lives in a
named DB `__meta__`, the blocks in a named DB `blocks` (a named DB's entry in the main DB would
break `append` order if both shared it). The shard is written into a work env with a fixed commit
pattern, then `copyfd(compact=True)` produces the final file: two identical writes give identical
bytes (tested). Readers open lazily per process (never across fork) with readonly, lock=False,
readahead=False and keep one read txn, so blocks are zero-copy numpy views of the memory map.
"""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import numpy as np

from facedata.errors import FacedataError
from facedata.storage.base import BACKENDS, Backend, ShardSchema
from facedata.storage.index import FORMAT_NAME, FORMAT_VERSION, canonical_json, dtype_to_json

_META_KEY = b"schema"
_COMMIT_BYTES = 16 << 20  # bounds the write txn's dirty pages (RAM) independently of shard size


def block_key(block: int) -> bytes:
    return int(block).to_bytes(8, "big")


class LmdbSink:
    def __init__(self, target: Path, schema: ShardSchema) -> None:
        self.target = target
        self.schema = schema
        self.work = target.with_name(target.name + ".work")
        self._remove_work()
        shard_bytes = schema.samples_per_shard * schema.bytes_per_sample
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
        value = pixels.tobytes() + records.tobytes()
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
            "record_dtype": dtype_to_json(self.schema.record_dtype),
            "block_samples": self.schema.block_samples,
            "samples": self.samples,
        }
        self.txn.put(_META_KEY, canonical_json(meta).encode(), db=self.meta_db)
        self.txn.commit()
        self.txn = None
        try:
            with open(self.target, "wb") as fh:
                self.env.copyfd(fh.fileno(), compact=True)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            self.env.close()
            self._remove_work()

    def abort(self) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None
        self.env.close()
        self._remove_work()
        if self.target.exists():
            self.target.unlink()

    def _remove_work(self) -> None:
        for path in (self.work, self.work.with_name(self.work.name + "-lock")):
            if path.exists():
                path.unlink()


# LMDB forbids opening one env twice in a process, so sources share envs, counted per process.
_OPEN: dict[str, tuple[int, lmdb.Environment, object, int]] = {}


def _acquire(path: Path) -> tuple[lmdb.Environment, object]:
    key = str(path.resolve())
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
        env = lmdb.open(key, subdir=False, readonly=True, lock=False, readahead=False, max_spare_txns=1,
                        max_dbs=2)
    except lmdb.Error as exc:
        raise FacedataError(f"{path}: cannot open LMDB shard ({exc})") from None
    try:
        _check_extent(path, env)  # before open_db: the main DB's root page is the last page of the file
        blocks_db = env.open_db(b"blocks", create=False)
    except lmdb.Error as exc:
        env.close()
        raise FacedataError(f"{path}: cannot open LMDB shard ({exc})") from None
    except FacedataError:
        env.close()
        raise
    _OPEN[key] = (os.getpid(), env, blocks_db, 1)
    return env, blocks_db


def _check_extent(path: Path, env: lmdb.Environment) -> None:
    """The pages the meta page says are in use must lie inside the file: a page past the end of a
    memory-mapped file is a SIGBUS on first touch, not an error."""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = path.stat().st_size
    if size < used:
        raise FacedataError(f"{path}: truncated LMDB shard: its pages need {used:,} bytes, the file has {size:,}")


def _release(path: Path) -> None:
    key = str(path.resolve())
    held = _OPEN.get(key)
    if held is None or held[0] != os.getpid():
        return
    if held[3] > 1:
        _OPEN[key] = (held[0], held[1], held[2], held[3] - 1)
    else:
        del _OPEN[key]
        held[1].close()


class LmdbSource:
    def __init__(self, path: Path, schema: ShardSchema, samples: int) -> None:
        self.path = path
        self.schema = schema
        self.samples = samples
        self.env, self.blocks_db = _acquire(path)
        self.txn = self.env.begin(db=self.blocks_db, buffers=True)

    def read_unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        value = self.txn.get(block_key(unit))
        if value is None:
            raise FacedataError(f"{self.path.name}: block {unit} is missing")
        bps = self.schema.bytes_per_sample
        n = len(value) // bps
        if n * bps != len(value):
            raise FacedataError(f"{self.path.name}: block {unit} size {len(value)} not a multiple of {bps}")
        pixels = np.frombuffer(value, np.uint8, n * self.schema.image_bytes)
        pixels = pixels.reshape((n, *self.schema.image_shape))
        records = np.frombuffer(value, self.schema.record_dtype, n, offset=n * self.schema.image_bytes)
        return pixels, records

    def labels(self) -> np.ndarray:
        n_blocks = -(-self.samples // self.schema.block_samples)
        parts = [self.read_unit(b)[1]["label"].copy() for b in range(n_blocks)]
        extra = self.txn.get(block_key(n_blocks))
        if extra is not None:
            raise FacedataError(f"{self.path.name}: holds more blocks than the index says")
        return np.concatenate(parts) if parts else np.zeros(0, np.int8)

    def close(self) -> None:
        self.txn.abort()
        _release(self.path)


@BACKENDS.register("lmdb")
class LmdbBackend(Backend):
    name = "lmdb"
    suffix = "lmdb"
    cache_bytes = 1 << 40  # cached blocks are views of the memory map: they cost no RAM

    def open_sink(self, target: Path, schema: ShardSchema) -> LmdbSink:
        return LmdbSink(target, schema)

    def open_source(self, path: Path, schema: ShardSchema, samples: int) -> LmdbSource:
        return LmdbSource(path, schema, samples)
