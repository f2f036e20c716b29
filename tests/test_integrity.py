"""Integrity of a shard directory, through the real `facedata verify` command and the readers.

Each fault is made on real LMDB and Parquet shards: a flipped byte inside one sample block (located here
without facedata's code: the block's bytes are found in the file by their content, a row group by
pyarrow's footer), a flipped byte outside the sample data, a truncated shard, a missing shard, unexpected
files, and an index whose sample count disagrees with its shards. verify names the file (and the block
and samples for a flipped byte) and exits 1; the numpy and PyTorch readers refuse a truncated shard with
a one-line error, in a fresh process, never a bus error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lmdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import require_framework
from shard_fixtures import write_dataset

from facedata.cli import main
from facedata.storage.verify import CHANGED, COUNT, MISSING, TRUNCATED, UNEXPECTED, verify_dataset

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["lmdb", "parquet"]
N = 3000  # shards of 1,024 samples: two full ones and one of 952
BLOCK = 64  # samples per LMDB block (and Parquet unit)


@pytest.fixture(scope="module", params=BACKENDS)
def clean(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    backend = request.param
    out = tmp_path_factory.mktemp(f"clean-{backend}") / "ds"
    write_dataset(out, backend, N, block_samples=BLOCK)
    assert verify_dataset(out) == []
    return backend, out


def damaged(clean: tuple[str, Path], tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    out = tmp_path / "ds"
    shutil.copytree(clean[1], out)
    damage(out)
    return out


def verify_cli(directory: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["verify", str(directory)])
    return result.exit_code, result.output.strip().splitlines()


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x40]))


def block_offset(shard: Path, backend: str, piece: int) -> int:
    """A file offset inside piece `piece` of the shard (LMDB block value / Parquet row group), found
    independently of facedata: the LMDB value's bytes are searched for in the file; the row group's first
    column chunk comes from pyarrow's footer."""
    if backend == "lmdb":
        env = lmdb.open(str(shard), subdir=False, readonly=True, lock=False, max_dbs=2)
        try:
            with env.begin() as txn:
                value = bytes(txn.get(piece.to_bytes(8, "big"), db=env.open_db(b"blocks", txn=txn)))
        finally:
            env.close()
        data = shard.read_bytes()
        at = data.find(value)  # whole: its records (image_index) make it unique
        assert at > 0 and data.find(value, at + 1) < 0
        return at + len(value) // 2
    column = pq.read_metadata(shard).row_group(piece).column(0)
    return column.data_page_offset + 1000


def test_index_records_the_file_and_block_digests(clean: tuple[str, Path]) -> None:
    """index.json's sha256 of each shard is the file's, and (LMDB) each block's digest is the sha256 prefix of
    that block value's bytes as LMDB itself returns them: recomputed here with hashlib, not facedata."""
    import hashlib

    backend, out = clean
    for entry in json.loads((out / "index.json").read_text())["shards"]:
        shard = out / entry["file"]
        assert entry["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
        if backend != "lmdb":
            continue
        env = lmdb.open(str(shard), subdir=False, readonly=True, lock=False, max_dbs=2)
        try:
            with env.begin() as txn:
                values = [bytes(value) for _, value in txn.cursor(db=env.open_db(b"blocks", txn=txn))]
        finally:
            env.close()
        assert entry["piece_sha256"] == [hashlib.sha256(value).hexdigest()[:16] for value in values]


def test_a_flipped_byte_names_the_shard_block_and_samples(clean: tuple[str, Path], tmp_path: Path) -> None:
    backend, _ = clean
    shard = f"shard-00001.{backend}"
    piece = 5 if backend == "lmdb" else 0  # a Parquet shard of 1,024 samples is one row group
    out = damaged(clean, tmp_path, lambda d: flip(d / shard, block_offset(d / shard, backend, piece)))
    code, lines = verify_cli(out)
    first = 1024 + (piece * BLOCK if backend == "lmdb" else 0)
    last = first + (BLOCK if backend == "lmdb" else 1024) - 1
    name = f"block {piece}" if backend == "lmdb" else f"row group {piece}"
    assert code == 1 and lines[0].startswith(f"{shard}: sha256 mismatch"), lines
    assert lines[0].endswith(f"; in {name} (samples {first:,}-{last:,})"), lines[0]
    assert [(f.kind, f.file) for f in verify_dataset(out)] == [(CHANGED, shard)]


def test_a_flipped_byte_outside_the_samples_is_named_too(clean: tuple[str, Path], tmp_path: Path) -> None:
    """In LMDB's first meta page's unused tail / Parquet's file header magic: no sample changed."""
    backend, _ = clean
    shard = f"shard-00000.{backend}"
    offset = 3000 if backend == "lmdb" else 2  # LMDB meta page 0 (4 KB) holds ~150 bytes; "PAR1" magic
    out = damaged(clean, tmp_path, lambda d: flip(d / shard, offset))
    code, lines = verify_cli(out)
    assert code == 1 and lines[0].startswith(f"{shard}: sha256 mismatch"), lines
    assert "every sample's bytes are intact" in lines[0] or "metadata is damaged" in lines[0], lines[0]


@pytest.mark.parametrize("fault", ["truncated", "missing", "index says more", "index says fewer"])
def test_each_fault_is_one_line_naming_the_file(clean: tuple[str, Path], tmp_path: Path, fault: str) -> None:
    backend, _ = clean
    last = f"shard-00002.{backend}"

    def edit_index(d: Path, samples: int) -> None:
        """index.json consistent with itself (total = sum of its shards) but not with the last shard file."""
        index = json.loads((d / "index.json").read_text())
        index["shards"][2]["samples"] = samples
        index["samples"] = 2048 + samples
        (d / "index.json").write_text(json.dumps(index))

    size = (clean[1] / last).stat().st_size
    damage, kind, words = {
        "truncated": (lambda d: os.truncate(d / last, size // 3), TRUNCATED,
                      f"truncated: {size // 3:,} bytes on disk, index.json says {size:,}"),
        "missing": (lambda d: (d / last).unlink(), MISSING, "missing (listed in index.json)"),
        "index says more": (lambda d: edit_index(d, 960), COUNT, "holds 952 samples, index.json says 960"),
        "index says fewer": (lambda d: edit_index(d, 900), COUNT, "holds 952 samples, index.json says 900"),
    }[fault]
    out = damaged(clean, tmp_path, damage)
    code, lines = verify_cli(out)
    assert code == 1 and lines[0] == f"{last}: {words}", lines
    assert [(f.kind, f.file) for f in verify_dataset(out)][:1] == [(kind, last)]


def test_unexpected_files_are_named(clean: tuple[str, Path], tmp_path: Path) -> None:
    backend, _ = clean

    def add(d: Path) -> None:
        (d / "notes.txt").write_text("copied in")
        shutil.copy(d / f"shard-00000.{backend}", d / f"shard-00003.{backend}")
        (d / f".shard-00003.{backend}.tmp-123").write_bytes(b"left by a crash")
        (d / "subdir").mkdir()

    out = damaged(clean, tmp_path, add)
    code, lines = verify_cli(out)
    assert code == 1 and lines[:-1] == [
        f".shard-00003.{backend}.tmp-123: unexpected file: not listed in index.json",
        "notes.txt: unexpected file: not listed in index.json",
        f"shard-00003.{backend}: unexpected shard file: not listed in index.json",
        "subdir: unexpected folder: not listed in index.json",
    ], lines
    assert {f.kind for f in verify_dataset(out)} == {UNEXPECTED}


def test_a_mining_report_named_by_the_index_is_expected(clean: tuple[str, Path], tmp_path: Path) -> None:
    def add(d: Path) -> None:
        index = json.loads((d / "index.json").read_text())
        index["summary"] = {"mining": {"per_image_report": "mining-report.csv"}}
        (d / "index.json").write_text(json.dumps(index))
        (d / "mining-report.csv").write_text("image_id\n")

    assert verify_dataset(damaged(clean, tmp_path, add)) == []


_READERS = {
    "numpy": "from facedata.storage import ShardedDataset\n"
             "ds = ShardedDataset(sys.argv[1])\nds.read_range(0, len(ds))\n",
    "torch": "from facedata.readers.torch import ShardIterableDataset\n"
             "for batch in ShardIterableDataset(sys.argv[1], 256, seed=0):\n    pass\n",
}


@pytest.mark.parametrize("reader", list(_READERS))
@pytest.mark.parametrize("recorded", [False, True])
def test_readers_refuse_a_truncated_shard_in_one_line(clean: tuple[str, Path], tmp_path: Path, reader: str,
                                                      recorded: bool) -> None:
    """Cut to a third (and, with `recorded`, index.json updated to the cut file's size and hash, so only the
    shard's own header can tell): the reader process exits 1 with one FacedataError naming the shard."""
    if reader == "torch":
        require_framework("torch")
    backend, _ = clean
    shard = f"shard-00001.{backend}"

    def cut(d: Path) -> None:
        os.truncate(d / shard, (d / shard).stat().st_size // 3)
        if recorded:
            from facedata.paths import sha256_file

            index = json.loads((d / "index.json").read_text())
            index["shards"][1].update(bytes=(d / shard).stat().st_size, sha256=sha256_file(d / shard))
            (d / "index.json").write_text(json.dumps(index))

    out = damaged(clean, tmp_path, cut)
    done = subprocess.run([sys.executable, "-c", "import sys\n" + _READERS[reader], str(out)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # negative: killed by a signal (SIGBUS)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"facedata.errors.FacedataError: {out / shard}: "), last
    assert ("truncated" in last or "cannot open" in last), last


def test_leftovers_of_a_killed_build_are_cleared_so_verify_finds_nothing(tmp_path: Path) -> None:
    """A build killed after writing index.json (before removing its plan) and one killed while writing its
    partial index: the next run clears what only a running build needs."""
    from facedata.buildoutput import recover, staging_dir

    out = tmp_path / "ds"
    staging = staging_dir(out)
    write_dataset(staging, "lmdb", 1500, block_samples=BLOCK)
    for name in ("build-plan.json", "build-plan.rec", "build-progress.json", ".index.partial.json.tmp-999999"):
        (staging / name).write_bytes(b"left by a killed build")
    recover(out)  # DIR missing, STAGING complete: STAGING becomes DIR
    assert not staging.exists() and verify_dataset(out) == []
    partial = tmp_path / "partial"
    write_dataset(partial, "parquet", 1500, block_samples=BLOCK)
    (partial / "index.json").rename(partial / "index.partial.json")  # as if killed before close
    (partial / ".index.partial.json.tmp-999999").write_bytes(b"{")
    write_dataset(partial, "parquet", 3000, block_samples=BLOCK)  # resumes
    assert verify_dataset(partial) == []
