"""DatasetWriter: streams fixed-width samples into checksummed shards that roll over deterministically.

Shard k always holds global samples [kM, (k+1)M) with M = samples_per_shard, so shard bytes depend
only on the sample stream. Each complete shard is written under a temp name (by a ShardBuilder: here, or
in a Dask worker, whose shard the writer `adopt`s), hashed, listed in `index.partial.json`, then renamed
(so a file under a shard's name is always a finished one); a rerun
with the same provenance fingerprint keeps the leading shards whose hashes verify and tells the
producer (`samples_done`) how many samples to skip, so an interrupted build ends byte-identical to an
uninterrupted one. A directory holding a complete dataset (`index.json`) is refused: replacing one is
the build's job (facedata.buildoutput), through a staging directory, never in place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import TracebackType

import numpy as np

from facedata import killpoint
from facedata.errors import FacedataError
from facedata.paths import sha256_file
from facedata.storage.base import BACKENDS, Backend, ShardSchema, ShardSink, file_digests
from facedata.storage.codec import check_encoding
from facedata.storage.index import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    PARTIAL_INDEX_NAME,
    SHARD_NAME,
    differences,
    dtype_to_json,
    fingerprint,
    read_json,
    samples_per_shard,
    shard_file_name,
    write_json_atomic,
)

_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(-lock)?$")  # facedata.paths.atomic_write's temp files (and LMDB's lock)


class DatasetWriter:
    """Write (pixels, records) batches of any length; `close()` writes `index.json` and returns it."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        backend: str,
        image_shape: tuple[int, int, int],
        record_dtype: np.dtype,
        provenance: dict,
        shard_bytes: int = 256 << 20,
        block_samples: int | None = None,  # None: default_block_samples (1,024 for small crops)
        resume: bool = True,
        encoding: str = "raw",
    ) -> None:
        self.out_dir = Path(out_dir)
        self.backend = BACKENDS.get(backend)()
        self.layout = shard_layout(backend, image_shape, record_dtype, shard_bytes, block_samples, encoding)
        self.schema = ShardSchema.from_index(self.layout)  # what readers will rebuild from index.json
        self.provenance = dict(provenance)
        self.fingerprint = fingerprint(self.layout, self.provenance)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # start over: drop an interrupted build's partial index (a complete one is refused)
            (self.out_dir / PARTIAL_INDEX_NAME).unlink(missing_ok=True)
        self._shards: list[dict] = self._recover()
        self._shard: ShardBuilder | None = None
        self._closed = False
        self._write_partial()

    @property
    def samples_done(self) -> int:
        """Samples durable in complete shards; the producer skips this many leading samples."""
        return len(self._shards) * self.schema.samples_per_shard

    @property
    def shards(self) -> list[dict]:
        """The index entries of the complete shards, in order."""
        return list(self._shards)

    # -- resume ---------------------------------------------------------------------------------
    def _recover(self) -> list[dict]:
        """Complete shards of an interrupted build with this fingerprint; a finished dataset (index.json)
        is never touched, and shards of other inputs or options are never mixed in."""
        if (self.out_dir / INDEX_NAME).exists():
            raise FacedataError(f"{self.out_dir} holds a complete dataset (index.json): it is not modified")
        if not (self.out_dir / PARTIAL_INDEX_NAME).exists():
            self._remove_shards(keep=0)
            return []
        previous = read_json(self.out_dir / PARTIAL_INDEX_NAME)
        if previous.get("fingerprint") != self.fingerprint:
            changes = "; ".join(differences(previous, self.layout, self.provenance)) or "fingerprint"
            raise FacedataError(
                f"{self.out_dir} holds an interrupted build with other inputs or options ({changes}); "
                "use a new output directory, the same options to resume it, or --overwrite"
            )
        kept: list[dict] = []
        per_shard = self.schema.samples_per_shard
        for k, entry in enumerate(previous.get("shards", [])):
            path = self.out_dir / shard_file_name(k, self.backend.suffix)
            if (
                entry.get("file") != path.name
                or entry.get("samples") != per_shard
                or entry.get("first_index") != k * per_shard
                or not path.is_file()
                or path.stat().st_size != entry.get("bytes")
                or sha256_file(path) != entry.get("sha256")
            ):
                break
            kept.append(entry)
        self._remove_shards(keep=len(kept))
        return kept

    def _remove_shards(self, keep: int) -> None:
        """Delete every shard file from number `keep` on (never index.json), and the temp files a killed
        process left (a shard in progress, an `atomic_write` of the partial index: `.NAME.tmp-PID`), which
        verify would report as unexpected files."""
        for path in self.out_dir.iterdir():
            match = SHARD_NAME.match(path.name)
            temp = _TEMP_NAME.match(path.name)
            stale_temp = (path.name.startswith(".shard-") and ".tmp" in path.name) or (
                temp is not None and int(temp.group(1)) != os.getpid())
            if (match and int(match.group(1)) >= keep) or stale_temp:
                path.unlink()

    # -- writing --------------------------------------------------------------------------------
    def add(self, pixels: np.ndarray, records: np.ndarray) -> None:
        """Append samples; completes shards as they fill."""
        if self._closed:
            raise FacedataError("DatasetWriter is closed")
        pixels, records = check_samples(self.schema, pixels, records)
        pos = 0
        while pos < len(records):
            if self._shard is None:
                self._shard = ShardBuilder(self.backend, self.schema, self._temp_path())
            take = min(len(records) - pos, self._shard.room)
            self._shard.add(pixels[pos : pos + take], records[pos : pos + take])
            pos += take
            if self._shard.room == 0:
                self._finish_shard()

    def _temp_path(self) -> Path:
        name = shard_file_name(len(self._shards), self.backend.suffix)
        return self.out_dir / f".{name}.tmp-{os.getpid()}"

    def _finish_shard(self) -> None:
        assert self._shard is not None
        shard, self._shard = self._shard, None
        k = len(self._shards)
        entry = shard.finish(shard_file_name(k, self.backend.suffix), k * self.schema.samples_per_shard)
        self._list(entry, shard.path)

    def adopt(self, entry: dict, temp: Path, steps: int = 0) -> None:
        """Take shard `entry` (the next one), finished at `temp` by another process (a Dask worker's
        ShardBuilder): listed, then renamed, as the writer's own shards are. `steps` write steps count first
        (facedata.killpoint: the units the worker wrote, so that a kill lands at comparable points)."""
        k = len(self._shards)
        expected = shard_file_name(k, self.backend.suffix)
        if entry.get("file") != expected or entry.get("first_index") != k * self.schema.samples_per_shard:
            raise FacedataError(f"shard {entry.get('file')!r} offered where {expected} belongs")
        for _ in range(steps):
            killpoint.step()
        self._list(entry, temp)

    def _list(self, entry: dict, temp: Path) -> None:
        """Listed first: a file under a shard's name is always a finished, listed shard."""
        self._shards.append(entry)
        try:
            self._write_partial()
        except BaseException:
            self._shards.pop()
            temp.unlink(missing_ok=True)  # e.g. the disk filled up: the temp goes, the rerun redoes this shard
            raise
        os.replace(temp, self.out_dir / entry["file"])

    def remove_temps(self) -> None:
        """Delete the temp shards other processes left here (e.g. a Dask task whose worker died mid-shard)."""
        self._remove_shards(keep=len(self._shards))

    def _index(self, complete: bool) -> dict:
        totals: dict[int, int] = {}
        for entry in self._shards:
            for label, count in entry["label_counts"].items():
                totals[int(label)] = totals.get(int(label), 0) + count
        return {
            **self.layout,
            "complete": complete,
            "samples": sum(entry["samples"] for entry in self._shards),
            "bytes": sum(entry["bytes"] for entry in self._shards),
            "label_counts": _label_json(totals),
            "fingerprint": self.fingerprint,
            "shards": self._shards,
            "provenance": self.provenance,
        }

    def _write_partial(self) -> None:
        write_json_atomic(self.out_dir / PARTIAL_INDEX_NAME, self._index(complete=False))

    def close(self, summary: dict | None = None) -> dict:
        """Flush the final partial shard, write `index.json` atomically and return the index."""
        if self._closed:
            raise FacedataError("DatasetWriter is already closed")
        if self._shard is not None:
            self._finish_shard()
        index = self._index(complete=True)
        if summary is not None:
            index["summary"] = summary
        write_json_atomic(self.out_dir / INDEX_NAME, index)
        (self.out_dir / PARTIAL_INDEX_NAME).unlink()
        self._closed = True
        return index

    def abort(self) -> None:
        """Drop the shard in progress; complete shards and the partial index stay for resume."""
        if self._shard is not None:
            self._shard.abort()
            self._shard = None
        self._closed = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


class ShardBuilder:
    """One shard file, written unit by unit through the backend's sink, then hashed: its bytes depend only
    on its samples and the schema, so the writer and a Dask worker (facedata.shardworker) write the same."""

    def __init__(self, backend: Backend, schema: ShardSchema, path: Path) -> None:
        self.backend, self.schema, self.path = backend, schema, path  # path: the temp file it writes
        self._pixels = np.empty((schema.unit_samples, *schema.image_shape), np.uint8)
        self._records = np.empty(schema.unit_samples, schema.record_dtype)
        self._fill = 0  # samples buffered in the current unit
        self._sink: ShardSink | None = None
        self.samples = 0  # samples written to the sink
        self.units = 0
        self._labels: dict[int, int] = {}

    @property
    def room(self) -> int:
        """Samples the shard still takes."""
        return self.schema.samples_per_shard - self.samples - self._fill

    def add(self, pixels: np.ndarray, records: np.ndarray) -> None:
        """Append at most `room` samples (checked by `check_samples`)."""
        if len(records) > self.room:
            raise FacedataError(f"{self.path.name}: {len(records)} samples offered, room for {self.room}")
        unit, pos = self.schema.unit_samples, 0
        while pos < len(records):
            take = min(len(records) - pos, unit - self._fill)
            self._pixels[self._fill : self._fill + take] = pixels[pos : pos + take]
            self._records[self._fill : self._fill + take] = records[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == unit:
                self._flush_unit()

    def _flush_unit(self) -> None:
        if self._fill == 0:
            return
        if self._sink is None:
            self._sink = self.backend.open_sink(self.path, self.schema)
        records = self._records[: self._fill]
        self._sink.write(self._pixels[: self._fill], records)
        labels, counts = np.unique(records["label"], return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
            self._labels[label] = self._labels.get(label, 0) + count
        self.samples += self._fill
        self.units += 1
        self._fill = 0
        killpoint.step()

    def finish(self, name: str, first_index: int) -> dict:
        """Write the file and return its index entry (to be listed as `name`); a failure removes it."""
        self._flush_unit()
        assert self._sink is not None, "a shard holds at least one sample"
        try:
            self._sink.finish()
            self._sink = None
            sha256, pieces = file_digests(self.path, self.backend.pieces(self.path, self.schema, self.samples))
            return {
                "file": name,
                "samples": self.samples,
                "first_index": first_index,
                "bytes": self.path.stat().st_size,
                "sha256": sha256,
                "label_counts": _label_json(self._labels),
                "piece_sha256": pieces,
            }
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        self.path.unlink(missing_ok=True)


def check_samples(schema: ShardSchema, pixels: np.ndarray, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch as arrays of the schema's image shape and record dtype, else one line saying what differs."""
    pixels, records = np.asarray(pixels), np.asarray(records)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != schema.image_shape:
        raise FacedataError(
            f"pixels must be uint8 of shape (N, {', '.join(map(str, schema.image_shape))}), "
            f"got {pixels.dtype} {pixels.shape}"
        )
    if records.dtype != schema.record_dtype:
        raise FacedataError(f"records dtype {records.dtype} differs from {schema.record_dtype}")
    if len(pixels) != len(records):
        raise FacedataError(f"{len(pixels)} images but {len(records)} records")
    return pixels, records


BLOCK_BYTES = 8 << 20  # a block is at most this many raw bytes (and at most 1,024 samples)


def default_block_samples(image_shape: tuple[int, ...], record_dtype: np.dtype) -> int:
    """Samples per block: 1,024 for the small cascade crops (12-48 px), fewer for large samples so that a
    block (what the writer buffers and a reader stages at once) stays near BLOCK_BYTES: 222 for 112 px PFLD
    crops, 36 for 240x320 top-down crops (1,024 of those would be 236 MB)."""
    bytes_per_sample = int(np.prod([int(x) for x in image_shape])) + np.dtype(record_dtype).itemsize
    return max(16, min(1024, BLOCK_BYTES // bytes_per_sample))


def shard_layout(
    backend: str, image_shape: tuple[int, ...], record_dtype: np.dtype, shard_bytes: int,
    block_samples: int | None = None, encoding: str = "raw",
) -> dict:
    """The index's layout fields for these options: what, with the provenance, fixes every shard byte.
    Shards are sized by raw samples whatever the encoding (an encoded shard is smaller, never larger by
    more than the encoder's few header bytes)."""
    record_dtype = np.dtype(record_dtype)
    if record_dtype.names is None or "label" not in record_dtype.names:
        raise FacedataError("record_dtype must be a structured dtype with a 'label' field")
    if len(image_shape) != 3 or min(image_shape) <= 0:
        raise FacedataError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape!r}")
    shape = [int(x) for x in image_shape]
    bytes_per_sample = int(np.prod(shape)) + record_dtype.itemsize
    block_samples = block_samples or default_block_samples(image_shape, record_dtype)
    per_shard = samples_per_shard(shard_bytes, bytes_per_sample, block_samples)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "backend": backend,
        "image_shape": shape,
        "image_encoding": check_encoding(encoding),
        "record_dtype": dtype_to_json(record_dtype),
        "bytes_per_sample": bytes_per_sample,
        "block_samples": block_samples,
        "unit_samples": BACKENDS.get(backend)().unit_samples(per_shard, block_samples, bytes_per_sample),
        "samples_per_shard": per_shard,
    }


def _label_json(counts: dict[int, int]) -> dict[str, int]:
    return {str(label): counts[label] for label in sorted(counts)}
