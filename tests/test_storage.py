"""Sharded store: round trips, deterministic bytes, resume after a crash, verification, safety."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shard_fixtures import BYTES_PER_SAMPLE, SHAPE, synthetic, write_dataset

from facedata.errors import FacedataError
from facedata.paths import sha256_file
from facedata.samples import SAMPLE_DTYPE
from facedata.storage import BACKENDS, DatasetWriter, ShardedDataset, verify_dataset
from facedata.storage.base import drop_cached_pages, in_page_cache
from facedata.storage.index import dtype_from_json, dtype_to_json
from facedata.storage.lmdb_store import value_extents
from facedata.storage.reader import _rows, _take

BACKEND_NAMES = ["lmdb", "parquet"]
N = 3000  # 2 full shards of 1024 + a partial one


def shard_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*"))}


def test_backends_registered() -> None:
    assert BACKENDS.names() == ["lmdb", "parquet"]
    with pytest.raises(FacedataError, match="unknown storage backend"):
        DatasetWriter("/nonexistent", backend="tar", image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
                      provenance={})


def test_dtype_json_round_trip() -> None:
    assert dtype_from_json(json.loads(json.dumps(dtype_to_json(SAMPLE_DTYPE)))) == SAMPLE_DTYPE
    with pytest.raises(FacedataError, match="object"):
        dtype_from_json([["x", "|O"]])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_round_trip_and_index(tmp_path: Path, backend: str) -> None:
    index = write_dataset(tmp_path, backend, N)
    pixels, records = synthetic(N)
    assert index["samples"] == N and index["samples_per_shard"] == 1024
    assert [s["samples"] for s in index["shards"]] == [1024, 1024, N - 2048]
    assert [s["first_index"] for s in index["shards"]] == [0, 1024, 2048]
    labels, counts = np.unique(records["label"], return_counts=True)
    assert index["label_counts"] == {str(k): int(v) for k, v in zip(labels, counts, strict=True)}
    assert sum(s["label_counts"]["-2"] for s in index["shards"]) == index["label_counts"]["-2"]
    assert index["summary"] == {"note": "synthetic"} and index["provenance"]["seed"] == 0
    assert not (tmp_path / "index.partial.json").exists()
    for entry in index["shards"]:
        assert sha256_file(tmp_path / entry["file"]) == entry["sha256"]
        assert (tmp_path / entry["file"]).stat().st_size == entry["bytes"]

    ds = ShardedDataset(tmp_path)
    assert len(ds) == N and ds.image_shape == SHAPE and ds.record_dtype == SAMPLE_DTYPE
    got_pixels, got_records = ds.read_range(0, N)
    assert np.array_equal(got_pixels, pixels) and np.array_equal(got_records, records)
    rng = np.random.default_rng(1)
    for size in (1, 7, 500, 5000):  # single unit, sparse and dense (with repeats) gathers
        idx = rng.integers(0, N, size)
        got_pixels, got_records = ds.read(idx)
        assert np.array_equal(got_pixels, pixels[idx]) and np.array_equal(got_records, records[idx])
    assert ds.read_range(2990, 5000)[1]["image_index"].tolist() == list(range(2990, 3000))
    with pytest.raises(IndexError):
        ds.read(np.array([N]))
    assert verify_dataset(tmp_path) == []


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_bytes_on_disk_close_to_raw(tmp_path: Path, backend: str) -> None:
    index = write_dataset(tmp_path, backend, 4096, shard_samples=2048, block_samples=1024, chunk=4096)
    assert index["bytes"] / 4096 <= 1.1 * BYTES_PER_SAMPLE


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_identical_bytes_whatever_the_chunking(tmp_path: Path, backend: str) -> None:
    write_dataset(tmp_path / "a", backend, N, chunk=1000)
    write_dataset(tmp_path / "b", backend, N, chunk=17)
    a, b = shard_files(tmp_path / "a"), shard_files(tmp_path / "b")
    assert len(a) == 3 and a == b


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_interrupted_build_resumes_byte_identical(tmp_path: Path, backend: str) -> None:
    clean = write_dataset(tmp_path / "clean", backend, N)
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(out, backend=backend, image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
                           provenance={"seed": 0, "command_line": "first"},
                           shard_bytes=1024 * BYTES_PER_SAMPLE, block_samples=64) as writer:
            for lo in range(0, 2500, 100):
                writer.add(*synthetic(100, 0, lo))
            raise RuntimeError("boom")
    assert not (out / "index.json").exists()
    partial = json.loads((out / "index.partial.json").read_text())
    assert len(partial["shards"]) == 2 and not partial["complete"]
    assert not list(out.glob(".shard-*"))  # the shard in progress was removed
    with DatasetWriter(out, backend=backend, image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
                       provenance={"seed": 0, "command_line": "second"},
                       shard_bytes=1024 * BYTES_PER_SAMPLE, block_samples=64) as writer:
        assert writer.samples_done == 2048
        for lo in range(writer.samples_done, N, 333):
            writer.add(*synthetic(min(333, N - lo), 0, lo))
        resumed = writer.close({"note": "synthetic"})
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in clean["shards"]]
    assert shard_files(out) == shard_files(tmp_path / "clean")
    assert resumed["provenance"]["command_line"] == "second"
    assert verify_dataset(out) == []


def test_resume_drops_corrupt_shards_and_rejects_other_inputs(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lmdb", N)
    kwargs = dict(backend="lmdb", image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
                  shard_bytes=1024 * BYTES_PER_SAMPLE, block_samples=64)
    with pytest.raises(FacedataError, match="complete dataset"):  # a finished dataset is never reopened
        DatasetWriter(tmp_path, provenance={"seed": 0}, resume=False, **kwargs)
    (tmp_path / "index.json").rename(tmp_path / "index.partial.json")  # as if interrupted before close
    with open(tmp_path / "shard-00001.lmdb", "r+b") as fh:
        fh.seek(5000)
        fh.write(b"\xff")
    with DatasetWriter(tmp_path, provenance={"seed": 0, "command_line": "again"}, **kwargs) as writer:
        assert writer.samples_done == 1024  # shard 0 verified, shard 1 corrupt: rewritten from there
        assert not (tmp_path / "shard-00001.lmdb").exists() and not (tmp_path / "index.json").exists()
        writer.abort()
    with pytest.raises(FacedataError, match="new output directory") as info:
        DatasetWriter(tmp_path, provenance={"seed": 1}, **kwargs)
    assert "seed: 0 -> 1" in str(info.value)
    with pytest.raises(FacedataError, match="new output directory"):
        DatasetWriter(tmp_path, provenance={"seed": 0}, **{**kwargs, "block_samples": 128})
    fresh = DatasetWriter(tmp_path, provenance={"seed": 1}, resume=False, **kwargs)
    assert fresh.samples_done == 0 and not list(tmp_path.glob("shard-*"))


def _flip_byte(directory: Path, name: str) -> None:
    with open(directory / name, "r+b") as fh:
        fh.seek(20000)
        byte = fh.read(1)
        fh.seek(20000)
        fh.write(bytes([byte[0] ^ 0x01]))


# Where byte 20,000 of shard 1 lies (blocks of 64 samples; one row group per 1,024-sample shard).
FLIPPED_PIECE = {"lmdb": "block 0 (samples 1,024-1,087)", "parquet": "row group 0 (samples 1,024-2,047)"}


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_verify_names_each_fault_in_one_line(tmp_path: Path, backend: str) -> None:
    clean = tmp_path / "clean"
    write_dataset(clean, backend, N)
    one, two = f"shard-00001.{backend}", f"shard-00002.{backend}"
    size = (clean / one).stat().st_size
    faults: dict[str, tuple[Callable[[Path], None], str]] = {
        "flipped byte": (lambda d: _flip_byte(d, one),
                         f"{one}: sha256 mismatch: the bytes changed since the build (same size, {size:,} bytes); "
                         f"in {FLIPPED_PIECE[backend]}"),
        "truncated": (lambda d: os.truncate(d / one, 5000),
                      f"{one}: truncated: 5,000 bytes on disk, index.json says {size:,}"),
        "missing": (lambda d: (d / two).unlink(), f"{two}: missing (listed in index.json)"),
        "index total": (lambda d: _edit_index(d, lambda index: index.__setitem__("samples", N + 5)),
                        "index.json: says 3,005 samples but its shards list 3,000"),
        "shard count": (lambda d: _edit_index(d, lambda index: index["shards"][2].__setitem__("samples", 953)),
                        f"{two}: holds 952 samples, index.json says 953"),
        "unlisted shard": (lambda d: shutil.copy(d / one, d / f"shard-00003.{backend}"),
                           f"shard-00003.{backend}: unexpected shard file: not listed in index.json"),
    }
    assert verify_dataset(clean) == []
    for fault, (damage, line) in faults.items():
        damaged = tmp_path / fault.replace(" ", "_")
        shutil.copytree(clean, damaged)
        damage(damaged)
        assert [str(p) for p in verify_dataset(damaged)] == [line], fault


def test_index_cannot_point_outside_the_directory(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lmdb", 100)
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][0]["file"] = "../shard-00000.lmdb"
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(FacedataError, match="refusing shard file name"):
        ShardedDataset(tmp_path)
    assert str(verify_dataset(tmp_path)[0]).startswith("index.json: ")


def test_lmdb_layout(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lmdb", 1100)
    env = lmdb.open(str(tmp_path / "shard-00001.lmdb"), subdir=False, readonly=True, lock=False, max_dbs=2)
    try:
        meta_db = env.open_db(b"__meta__", create=False)
        blocks_db = env.open_db(b"blocks", create=False)
        with env.begin() as txn:
            meta = json.loads(txn.get(b"schema", db=meta_db))
            keys = [key for key, _ in txn.cursor(db=blocks_db)]
            last = txn.get(keys[-1], db=blocks_db)
        assert meta["samples"] == 76 and meta["block_samples"] == 64
        assert dtype_from_json(meta["record_dtype"]) == SAMPLE_DTYPE
        assert keys == [(0).to_bytes(8, "big"), (1).to_bytes(8, "big")]
        assert len(last) == 12 * BYTES_PER_SAMPLE  # 1100 - 1024 - 64 samples in the last block
        records = np.frombuffer(last, SAMPLE_DTYPE, offset=12 * 432)
        assert records["image_index"].tolist() == list(range(1088, 1100))
    finally:
        env.close()


def test_parquet_layout(tmp_path: Path) -> None:
    index = write_dataset(tmp_path, "parquet", 1100, shard_samples=4096, block_samples=64)
    file = pq.ParquetFile(tmp_path / "shard-00000.parquet")
    schema = file.schema_arrow
    assert str(schema.field("image").type) == "fixed_size_binary[432]"
    assert pa.types.is_fixed_size_list(schema.field("landmarks").type)
    assert schema.field("landmarks").type.list_size == 10
    assert str(schema.field("label").type) == "int8"
    unit = index["unit_samples"]
    assert index["samples_per_shard"] % unit == 0 and unit % 64 == 0
    assert [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)][:-1] == [unit] * (
        file.num_row_groups - 1
    )
    image_chunk = file.metadata.row_group(0).column(0)
    assert image_chunk.statistics is None
    assert not any("DICTIONARY" in encoding for encoding in image_chunk.encodings)
    assert file.metadata.row_group(0).column(1).statistics is not None  # label


def test_parquet_column_chunks_are_one_plain_page(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet", 1100, shard_samples=4096, block_samples=64)
    row_group = pq.ParquetFile(tmp_path / "shard-00000.parquet").metadata.row_group(0)
    image = row_group.column(0)
    assert image.compression == "UNCOMPRESSED" and image.dictionary_page_offset is None
    assert image.total_compressed_size - row_group.num_rows * 432 < 64  # the values behind one page header


def _rewrite_parquet_shards(directory: Path, shards: list[int] | None = None, **options: Any) -> None:
    """Rewrite shards with pyarrow's own writer (`options` as pq.write_table's) and record the new files
    in index.json, as a user converting a dataset with another tool would."""
    index = json.loads((directory / "index.json").read_text())
    for k, entry in enumerate(index["shards"]):
        if shards is None or k in shards:
            path = directory / entry["file"]
            pq.write_table(pq.read_table(path), path, **options)
            entry.update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (directory / "index.json").write_text(json.dumps(index))


PYARROW_LAYOUTS = {
    "many plain pages v1": dict(data_page_size=4096, compression="none", use_dictionary=False),
    "many plain pages v2": dict(data_page_size=4096, data_page_version="2.0", compression="none",
                                use_dictionary=False),
    "zstd": dict(compression="zstd"),
    "dictionary pages": dict(compression="none", use_dictionary=True),
    "snappy, many pages, v2": dict(compression="snappy", data_page_size=4096, data_page_version="2.0"),
    "other row groups": dict(compression="none", use_dictionary=False, row_group_size=300),
    "other row groups, gzip, dictionary": dict(compression="gzip", use_dictionary=True, row_group_size=700),
}


@pytest.mark.parametrize("layout", PYARROW_LAYOUTS)
def test_parquet_shards_rewritten_by_pyarrow_read_the_same(tmp_path: Path, layout: str) -> None:
    """Any valid Parquet encoding of the schema reads: the raw path falls back to pyarrow when it must."""
    index = write_dataset(tmp_path, "parquet", N, shard_samples=2048, block_samples=256)
    assert index["unit_samples"] == 2048
    _rewrite_parquet_shards(tmp_path, **{"row_group_size": 2048, **PYARROW_LAYOUTS[layout]})
    pixels, records = synthetic(N)
    ds = ShardedDataset(tmp_path)
    got_pixels, got_records = ds.read_range(0, N)
    assert np.array_equal(got_pixels, pixels) and np.array_equal(got_records, records)
    order = np.concatenate([b[1]["image_index"] for b in ds.iter_batches(500, seed=3)])
    assert np.array_equal(np.sort(order), np.arange(N))
    assert verify_dataset(tmp_path) == []


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_bool_record_field(tmp_path: Path, backend: str) -> None:
    dtype = np.dtype([("label", "i1"), ("flipped", "?"), ("point", "<f4", (2,))])
    records = np.zeros(700, dtype)
    records["label"] = np.arange(700) % 3
    records["flipped"] = np.arange(700) % 7 == 0
    records["point"] = np.arange(1400).reshape(700, 2) / 8
    pixels = np.arange(700 * 12, dtype=np.uint32).astype(np.uint8).reshape(700, 2, 2, 3)
    with DatasetWriter(tmp_path, backend=backend, image_shape=(2, 2, 3), record_dtype=dtype, provenance={},
                       block_samples=64) as writer:
        writer.add(pixels, records)
        writer.close()
    got_pixels, got_records = ShardedDataset(tmp_path).read(np.arange(699, -1, -1))
    assert np.array_equal(got_pixels, pixels[::-1]) and np.array_equal(got_records, records[::-1])


def test_parquet_with_other_columns_is_refused(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet", N)
    path = tmp_path / "shard-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(1, "label", table.column("label").cast(pa.int32())), path)
    _rewrite_parquet_shards(tmp_path, [1])  # records the new bytes
    with pytest.raises(FacedataError, match=r"shard-00001.parquet: Parquet column 1 is label: int32, "
                                            r"the index's schema needs label: int8 not null"):
        ShardedDataset(tmp_path).read(np.array([1500]))


def _read_in_child(path: str) -> list[int]:
    return ShardedDataset(path).read(np.arange(0, 3000, 97))[1]["image_index"].tolist()


def _read_inherited(ds: ShardedDataset, queue: multiprocessing.Queue) -> None:
    queue.put(ds.read(np.arange(0, 3000, 97))[1]["image_index"].tolist())


def test_dataset_opened_before_fork_reads_in_children(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lmdb", N)
    ds = ShardedDataset(tmp_path)
    expected = ds.read(np.arange(0, 3000, 97))[1]["image_index"].tolist()  # opens envs in the parent
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_read_inherited, args=(ds, queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results == [expected, expected]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_read_in_child, [str(tmp_path)]) == [expected]
    assert ds.read(np.arange(0, 3000, 97))[1]["image_index"].tolist() == expected


def test_writer_rejects_bad_batches(tmp_path: Path) -> None:
    writer = DatasetWriter(tmp_path, backend="parquet", image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
                           provenance={})
    pixels, records = synthetic(10)
    with pytest.raises(FacedataError, match="uint8"):
        writer.add(pixels.astype(np.float32), records)
    with pytest.raises(FacedataError, match="records dtype"):
        writer.add(pixels, records[["label", "image_index"]])
    with pytest.raises(FacedataError, match="10 images but 9 records"):
        writer.add(pixels, records[:9])
    index = writer.close()
    assert index["samples"] == 0 and index["shards"] == []
    with pytest.raises(FacedataError, match="label"):
        DatasetWriter(tmp_path / "x", backend="lmdb", image_shape=SHAPE, record_dtype=np.dtype([("a", "i4")]),
                      provenance={})


def test_cli_verify_and_inspect(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from facedata.cli import main

    write_dataset(tmp_path, "lmdb", N)
    runner = CliRunner()
    shown = runner.invoke(main, ["inspect", str(tmp_path)])
    assert shown.exit_code == 0 and "3,000" in shown.output and "shard-00002.lmdb" in shown.output
    assert runner.invoke(main, ["verify", str(tmp_path)]).exit_code == 0
    with open(tmp_path / "shard-00000.lmdb", "r+b") as fh:
        fh.seek(9000)
        fh.write(b"\x00\x01")
    result = runner.invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 1 and "shard-00000.lmdb: sha256 mismatch" in result.output
    os.truncate(tmp_path / "shard-00000.lmdb", 4096)
    result = runner.invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 1 and result.output.splitlines()[0] == (
        "shard-00000.lmdb: truncated: 4,096 bytes on disk, index.json says 610,304")
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(main, ["inspect", str(empty)])
    assert missing.exit_code == 2 and "not found" in missing.output


def _edit_index(directory: Path, edit: Callable[[dict], None]) -> None:
    index = json.loads((directory / "index.json").read_text())
    edit(index)
    (directory / "index.json").write_text(json.dumps(index))


def _one_more_sample(index: dict) -> None:
    index["shards"][-1]["samples"] += 1
    index["samples"] += 1


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_gather_past_a_short_unit_raises_instead_of_clipping(tmp_path: Path, backend: str) -> None:
    """The index claims one sample more than the last shard holds: reading it must not return sample 2999."""
    write_dataset(tmp_path, backend, N)
    _edit_index(tmp_path, _one_more_sample)
    ds = ShardedDataset(tmp_path)
    assert ds.read(np.array([5, 2000]))[1]["image_index"].tolist() == [5, 2000]
    for indices in ([N], [N, 5], [2999, 2000]):  # from the unit itself, or through the stage
        with pytest.raises(FacedataError, match=rf"shard-00002.{backend}: unit \d+ holds \d+ samples, index.json"):
            ShardedDataset(tmp_path).read(np.array(indices))


def test_gather_checks_its_bounds() -> None:
    pixels, records = synthetic(10)
    out_pixels, out_records = np.empty_like(pixels[:2]), np.empty_like(records[:2])
    _take(pixels, _rows(records), np.array([9, 0]), out_pixels, out_records)
    assert out_records["image_index"].tolist() == [9, 0]
    for where in ([10, 0], [0, -1]):
        with pytest.raises(FacedataError, match=r"out of range \[0, 10\)"):
            _take(pixels, _rows(records), np.array(where), out_pixels, out_records)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_index_counts_must_add_up(tmp_path: Path, backend: str) -> None:
    write_dataset(tmp_path, backend, N)
    _edit_index(tmp_path, lambda index: index.__setitem__("samples", N + 1))
    with pytest.raises(FacedataError, match="its shards hold 3000 samples but it says 3001"):
        ShardedDataset(tmp_path)
    _edit_index(tmp_path, lambda index: index["shards"][0].__setitem__("samples", 1000))
    with pytest.raises(FacedataError, match=f"shard-00000.{backend}: index.json lists 1000 samples, expected 1024"):
        ShardedDataset(tmp_path)


_READ_ALL = "import sys; from facedata.storage import ShardedDataset; ds = ShardedDataset(sys.argv[1]); " \
            "ds.read_range(0, len(ds)); print('read', len(ds))"


def _read_all_in_subprocess(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _READ_ALL, str(directory)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_truncated_or_missing_shard_is_an_error_not_a_crash(tmp_path: Path, backend: str) -> None:
    """A reader in a fresh process gets a one-line error naming the shard and both sizes (never SIGBUS)."""
    write_dataset(tmp_path, backend, N)
    shard = tmp_path / f"shard-00001.{backend}"
    size = shard.stat().st_size
    os.truncate(shard, size // 2)
    done = _read_all_in_subprocess(tmp_path)
    assert done.returncode == 1, (done.returncode, done.stderr)  # negative: killed by a signal
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"facedata.errors.FacedataError: {shard}: truncated: {size // 2:,} bytes on disk, "
                    f"index.json says {size:,} (run `facedata verify {tmp_path}`)")
    shard.unlink()
    done = _read_all_in_subprocess(tmp_path)
    assert done.returncode == 1 and done.stderr.strip().endswith(f"{shard}: shard listed in index.json is missing")


@pytest.mark.parametrize(("backend", "size", "error"), [
    ("lmdb", 305_152, "truncated LMDB shard: its pages need 610,304 bytes, the file has 305,152"),
    ("lmdb", 5000, "truncated LMDB shard: its pages need 610,304 bytes, the file has 5,000"),
    ("lmdb", 100, "cannot open LMDB shard"),
    ("parquet", 300_000, "cannot open Parquet shard"),
])
def test_truncated_shard_recorded_in_the_index_is_an_error_not_a_crash(tmp_path: Path, backend: str, size: int,
                                                                      error: str) -> None:
    """Even when index.json agrees with the cut file (re-hashed), the shard's own header exposes it."""
    write_dataset(tmp_path, backend, N)
    shard = tmp_path / f"shard-00001.{backend}"
    os.truncate(shard, size)

    def record_cut(index: dict) -> None:
        index["shards"][1].update(bytes=shard.stat().st_size, sha256=sha256_file(shard))

    _edit_index(tmp_path, record_cut)
    done = _read_all_in_subprocess(tmp_path)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines()[-1].startswith(f"facedata.errors.FacedataError: {shard}: {error}")


@pytest.mark.parametrize(("shape", "block"), [((12, 12, 3), 16), ((2, 2, 1), 4)])  # overflow / inline values
def test_lmdb_value_extents_locate_every_block(tmp_path: Path, shape: tuple[int, int, int], block: int) -> None:
    """The read-ahead hints come from our own walk of LMDB's B-tree: each extent must hold exactly the
    block's value as LMDB returns it (several leaf pages under a branch page here)."""
    n = 3000
    records = np.zeros(n, SAMPLE_DTYPE)
    records["image_index"] = np.arange(n)
    pixels = (np.arange(n * int(np.prod(shape))) % 251).astype(np.uint8).reshape(n, *shape)
    with DatasetWriter(tmp_path, backend="lmdb", image_shape=shape, record_dtype=SAMPLE_DTYPE, provenance={},
                       block_samples=block) as writer:
        writer.add(pixels, records)
        writer.close()
    path = tmp_path / "shard-00000.lmdb"
    fd = os.open(path, os.O_RDONLY)
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=2)
    try:
        extents = value_extents(fd, b"blocks")
        with env.begin(db=env.open_db(b"blocks", create=False)) as txn:
            values = dict(txn.cursor())
            assert env.stat()["depth"] == 1 and txn.stat(env.open_db(b"blocks", create=False))["depth"] == 2
        assert sorted(extents) == sorted(values) and len(values) == -(-n // block)
        for key, (offset, length) in extents.items():
            assert os.pread(fd, length, offset) == values[key]
    finally:
        env.close()
        os.close(fd)


def _resident_fraction(path: Path) -> float:
    """Share of the file's pages in the page cache (mincore on a fresh read-only map)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = np.frombuffer(mapped, np.uint8)
        pages = -(-len(mapped) // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        assert libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(len(mapped)), vector) == 0
        del view
        return sum(v & 1 for v in vector) / pages


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="posix_fadvise and mincore semantics of Linux")
@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("whole_files", [True, False])
def test_shuffled_read_asks_the_kernel_for_units_ahead(
    tmp_path: Path, backend: str, whole_files: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cold reads: the first batch of an epoch already has every unit of the next READAHEAD_BYTES on its
    way into the page cache (in bulk), instead of each page faulting in when a gather touches it: whole
    files read sequentially for a set small against RAM, unit hints otherwise (RAM share 0 here)."""
    from facedata.storage import reader

    if not whole_files:
        monkeypatch.setattr(reader, "WHOLE_READ_RAM_SHARE", 0.0)
    whole_reads: list[str] = []
    read_file = reader._read_file_into_cache
    monkeypatch.setattr(reader, "_read_file_into_cache",  # given the shard's pinned descriptor
                        lambda fd, size: (whole_reads.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name),
                                          read_file(fd, size)))
    write_dataset(tmp_path, backend, 20_000, shard_samples=8192, chunk=5000)  # 3 shards of 4 MB at most
    shards = sorted(tmp_path.glob("shard-*"))
    drop_cached_pages(shards)
    if any(_resident_fraction(shard) > 0.05 for shard in shards):
        pytest.skip("this file system keeps the shards in memory (tmpfs?)")
    batches = ShardedDataset(tmp_path).iter_batches(64, seed=1)
    next(batches)
    deadline = time.monotonic() + 20
    while min(_resident_fraction(shard) for shard in shards) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [round(_resident_fraction(shard), 2) for shard in shards] == [1.0] * len(shards)
    assert sorted(whole_reads) == ([shard.name for shard in shards] if whole_files else [])


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="preadv(RWF_NOWAIT) is Linux only")
def test_in_page_cache_tells_cold_from_warm_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 8192)  # 2 MB
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, 1 << 21, 0)
        assert in_page_cache(fd, 4096, 1 << 20)
        drop_cached_pages([path])
        if _resident_fraction(path) > 0.05:
            pytest.skip("this file system keeps the file in memory (tmpfs?)")
        assert not in_page_cache(fd, 4096, 1 << 20)
        assert not in_page_cache(fd, 0, 0)
    finally:
        os.close(fd)


def test_blocks_of_large_samples_stay_small() -> None:
    """A block is what the writer buffers and a reader stages: 1,024 small cascade crops, but only as many
    large crops as fit BLOCK_BYTES (1,024 top-down crops of 240x320 would be 236 MB)."""
    from facedata.storage.writer import BLOCK_BYTES, default_block_samples, shard_layout

    record = np.dtype([("label", "i1"), ("x", "<f4", (20,))])
    for shape in ((12, 12, 3), (24, 24, 3), (48, 48, 3)):
        assert default_block_samples(shape, record) == 1024
    for shape in ((112, 112, 3), (320, 240, 3), (1024, 1024, 3)):
        n = default_block_samples(shape, record)
        assert n < 1024 and (n == 16 or n * (int(np.prod(shape)) + record.itemsize) <= BLOCK_BYTES)
    assert shard_layout("lmdb", (320, 240, 3), record, 256 << 20)["block_samples"] == 36
    assert shard_layout("lmdb", (320, 240, 3), record, 256 << 20, 100)["block_samples"] == 100  # explicit wins


@pytest.mark.parametrize(("key", "edit"), [
    ("bytes", lambda index: index["shards"][0].pop("bytes")),
    ("block_samples", lambda index: index.pop("block_samples")),
    ("bytes", lambda index: index["shards"][0].update(bytes="x")),
    ("samples_per_shard", lambda index: index.update(samples_per_shard="abc")),
    ("image_shape", lambda index: index.update(image_shape=[12, 12])),
    ("unit_samples", lambda index: index.update(unit_samples=0)),
    ("q9", lambda index: index.update(record_dtype=[["label", "q9"]])),
    ("gif", lambda index: index.update(image_encoding="gif")),
])
def test_nonsense_index_values_are_one_line_errors(tmp_path: Path, key: str, edit: Callable[[dict], Any]) -> None:
    write_dataset(tmp_path, "lmdb", 300)
    _edit_index(tmp_path, edit)
    problems = [str(p) for p in verify_dataset(tmp_path)]
    assert len(problems) == 1 and problems[0].startswith("index.json: ") and key in problems[0], problems
    with pytest.raises(FacedataError, match=key):
        ShardedDataset(tmp_path)
