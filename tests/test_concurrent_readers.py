"""Concurrent readers: several processes read one finished shard set, full epochs with every sample checked
against its expected checksum, while one build writes another directory and another replaces the same
directory (`--overwrite`: built in staging, then swapped in with one renameat2 exchange). A reader never sees a
partial or mixed shard set: each dataset it opens reads all of the old set or all of the new one, and one opened
before the swap keeps reading the old set after it (the old files live on while open)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from build_fixtures import demo_manifests
from build_runs import REPO, cli, start_cli, stop
from shard_fixtures import synthetic, write_dataset

from facedata.buildoutput import staging_dir, swap_in, trash_dir
from facedata.storage import ShardedDataset

READERS = 3
BATCH = 97
EPOCHS_AFTER = 2  # fresh epochs each reader reads once the new set is in


def digests(data: ShardedDataset, order: np.ndarray) -> list[str]:
    """sha256 of each sample (its pixels, then its record) in `order`, read in batches."""
    out = []
    for pixels, records in data.iter_order(order, BATCH):
        out += [hashlib.sha256(p.tobytes() + r.tobytes()).hexdigest() for p, r in zip(pixels, records, strict=True)]
    return out


def epoch(data: ShardedDataset, expected: dict[str, list[str]], k: int) -> str:
    """Read one shuffled epoch; the set (old or new) every sample of it belongs to, else an AssertionError."""
    which = [name for name, sums in expected.items() if sums[0] == data.index["fingerprint"]]
    assert len(which) == 1, f"index of an unknown set: {data.index['fingerprint']}"
    order = data.read_order(BATCH, seed=k).epoch(k)
    sums = expected[which[0]]
    wrong = [int(i) for i, d in zip(order, digests(data, order), strict=True) if d != sums[1 + int(i)]]
    assert not wrong, f"epoch {k} of the {which[0]} set: {len(wrong)} samples differ, first {wrong[0]}"
    assert len(order) == len(sums) - 1
    return which[0]


def reader_main(directory: str, expected_path: str, swapped_flag: str) -> None:
    """A reader process: opens the set, reads one batch, says "ready", reads full epochs until the swap; then
    finishes the epoch of the dataset it opened first (the old set) and reads EPOCHS_AFTER fresh ones (new)."""
    expected = json.loads(Path(expected_path).read_text())
    held = ShardedDataset(directory)
    first = held.read_order(BATCH, seed=99).epoch(0)
    next(iter(held.iter_order(first[:BATCH], BATCH)))
    print("ready", flush=True)
    seen = {"old": 0, "new": 0}
    k = 0
    while not os.path.exists(swapped_flag):
        data = ShardedDataset(directory)
        seen[epoch(data, expected, k)] += 1
        data.close()
        k += 1
        time.sleep(0.05)  # leave the builds some CPU
    assert epoch(held, expected, 99) == "old", "a dataset opened before the swap must keep reading the old set"
    for _ in range(EPOCHS_AFTER):
        data = ShardedDataset(directory)
        assert epoch(data, expected, k) == "new"
        data.close()
        k += 1
    print(json.dumps(seen), flush=True)


def expected_sums(directory: Path) -> list[str]:
    """[fingerprint, sha256 of sample 0, 1, ...] of a finished set, read quietly before any concurrency."""
    data = ShardedDataset(directory)
    return [data.index["fingerprint"], *digests(data, np.arange(len(data)))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return demo_manifests(tmp_path_factory.mktemp("readers"), seed=7, wider_images=24)


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_readers_see_one_whole_set_while_builds_write_and_swap(corpus: dict, tmp_path: Path, backend: str) -> None:
    def build(out: Path, seed: int, *extra: str) -> list[object]:
        return ["build", "pnet", *corpus["inputs"], "-o", out, "--format", backend, "--shard-size", "1KB",
                "--seed", seed, "--quiet", "--workers", "1", *extra]

    expected = {}
    for name, seed in (("old", 0), ("new", 1)):
        cli(*build(tmp_path / name, seed))
        expected[name] = expected_sums(tmp_path / name)
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    live, flag = tmp_path / "live", tmp_path / "swapped"
    shutil.copytree(tmp_path / "old", live)
    code = (f"import sys; sys.path[:0] = [{str(REPO / 'tests')!r}, {str(REPO)!r}]; "
            "import test_concurrent_readers as t; "
            f"t.reader_main({str(live)!r}, {str(tmp_path / 'expected.json')!r}, {str(flag)!r})")
    readers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(READERS)]
    try:
        for proc in readers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
        writers = [start_cli(*build(tmp_path / "other", 2)), start_cli(*build(live, 1, "--overwrite"))]
        assert [stop(w) for w in writers] == [0, 0], [w.stderr.read() for w in writers]
        time.sleep(0.2)  # readers open a few datasets of the new set too
        flag.touch()
        results = [proc.communicate(timeout=120) for proc in readers]
    finally:
        for proc in readers:
            proc.kill()
    for proc, (out, err) in zip(readers, results, strict=True):
        assert proc.returncode == 0, err
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen["old"] + seen["new"] >= 1, seen
    assert expected_sums(live) == expected["new"]


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_a_dataset_opened_before_a_swap_reads_the_old_set_to_its_end(tmp_path: Path, backend: str) -> None:
    """The same in one process, step by step: open, read one shard, swap (and delete the old set), read on."""
    sets = {}
    for seed in (0, 1):
        write_dataset(tmp_path / f"set{seed}", backend, 3000, shard_samples=1024, seed=seed)
        sets[seed] = synthetic(3000, seed)
    live = tmp_path / "live"
    shutil.copytree(tmp_path / "set0", live)
    held = ShardedDataset(live)
    held.read(np.arange(10))  # opens the first shard only
    shutil.copytree(tmp_path / "set1", staging_dir(live))
    swap_in(live, staging_dir(live))
    assert not trash_dir(live).exists()  # the old files are deleted: only the pinned descriptors keep them
    fresh = ShardedDataset(live)
    for data, seed in ((held, 0), (fresh, 1)):
        pixels, records = data.read_range(0, 3000)
        assert np.array_equal(pixels, sets[seed][0]) and np.array_equal(records, sets[seed][1])
