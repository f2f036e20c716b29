"""Sharded store: round trips, deterministic bytes, resume after a crash, verification, safety."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

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
from facedata.storage.index import dtype_from_json, dtype_to_json

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


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_verify_reports_flipped_byte_and_missing_shard(tmp_path: Path, backend: str) -> None:
    write_dataset(tmp_path, backend, N)
    name = f"shard-00001.{backend}"
    with open(tmp_path / name, "r+b") as fh:
        fh.seek(20000)
        byte = fh.read(1)
        fh.seek(20000)
        fh.write(bytes([byte[0] ^ 0x01]))
    problems = verify_dataset(tmp_path)
    assert f"{name}: sha256 mismatch" in problems
    assert all(p.startswith(name) for p in problems)
    (tmp_path / f"shard-00002.{backend}").unlink()
    assert f"shard-00002.{backend}: missing" in verify_dataset(tmp_path)


def test_verify_reports_count_mismatch(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet", N)
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][2]["samples"] += 1
    (tmp_path / "index.json").write_text(json.dumps(index))
    problems = verify_dataset(tmp_path)
    assert any(p.startswith("shard-00002.parquet: holds 952 samples, index says 953") for p in problems)
    assert any(p.startswith("index.json: shards hold 3001") for p in problems)


def test_index_cannot_point_outside_the_directory(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lmdb", 100)
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][0]["file"] = "../shard-00000.lmdb"
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(FacedataError, match="refusing shard file name"):
        ShardedDataset(tmp_path)
    assert verify_dataset(tmp_path)[0].startswith("index.json: ")


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


@pytest.mark.parametrize("options", [{"data_page_size": 4096}, {"data_page_size": 4096, "data_page_version": "2.0"}])
def test_parquet_raw_reader_reads_other_page_layouts(tmp_path: Path, options: dict) -> None:
    """Shards rewritten by pyarrow with many small pages (v1 or v2 headers) read back the same."""
    index = write_dataset(tmp_path, "parquet", N)
    for entry in index["shards"]:
        path = tmp_path / entry["file"]
        table = pq.read_table(path)
        pq.write_table(table, path, row_group_size=index["unit_samples"], compression="none", use_dictionary=False,
                       **options)
    pixels, records = synthetic(N)
    got_pixels, got_records = ShardedDataset(tmp_path).read_range(0, N)
    assert np.array_equal(got_pixels, pixels) and np.array_equal(got_records, records)


def test_parquet_raw_reader_rejects_compressed_pages(tmp_path: Path) -> None:
    write_dataset(tmp_path, "parquet", N)
    path = tmp_path / "shard-00001.parquet"
    pq.write_table(pq.read_table(path), path, compression="zstd")
    ds = ShardedDataset(tmp_path)
    assert ds.read(np.array([5]))[1]["image_index"].tolist() == [5]
    with pytest.raises(FacedataError, match="shard-00001.parquet: row group 0 is not a facedata layout"):
        ds.read(np.array([1500]))


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
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(main, ["inspect", str(empty)])
    assert missing.exit_code == 2 and "not found" in missing.output
