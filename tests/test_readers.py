"""The shared reading order (pure function) and the numpy batch reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_fixtures import SHAPE, synthetic, write_dataset

from facedata.errors import FacedataError
from facedata.readers.order import ReadOrder, epoch_order, mix_counts, num_batches, parse_batch_mix
from facedata.samples import LABEL_LANDMARK, LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE
from facedata.storage import ShardedDataset

CASES = [(1, 1), (1000, 64), (3000, 64), (4097, 1024), (50_000, 1024), (70_000, 65536)]


@pytest.mark.parametrize(("n", "unit"), CASES)
def test_epoch_order_is_a_seeded_permutation(n: int, unit: int) -> None:
    order = epoch_order(n, unit, seed=3, epoch=0)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(n))
    assert np.array_equal(order, epoch_order(n, unit, seed=3, epoch=0))
    if n >= 1000:
        assert not np.array_equal(order, epoch_order(n, unit, seed=3, epoch=1))
        assert not np.array_equal(order, epoch_order(n, unit, seed=4, epoch=0))
        assert not np.array_equal(order, np.arange(n))
    assert np.array_equal(epoch_order(n, unit, shuffle=False), np.arange(n))


def rank_order(n: int, unit: int, *, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
               drop_last: bool = False) -> np.ndarray:
    return ReadOrder(n, unit, 1, seed=seed, world_size=world_size, drop_last=drop_last).rank(epoch, rank)


def worker_order(n: int, unit: int, *, batch_size: int, seed: int = 0, epoch: int = 0, rank: int = 0,
                 world_size: int = 1, worker: int = 0, num_workers: int = 1, drop_last: bool = False) -> np.ndarray:
    return ReadOrder(n, unit, batch_size, seed=seed, world_size=world_size, drop_last=drop_last).worker(
        epoch, rank, worker, num_workers)


@pytest.mark.parametrize("seed", range(5))
def test_shuffle_windows_take_one_unit_from_every_stratum(seed: int) -> None:
    """8 units, windows of 2: 4 windows, strata {0..3} and {4..7}; each window holds one unit of each."""
    order = epoch_order(80, 10, seed=seed, window_samples=20)
    for lo in range(0, 80, 20):
        units = np.unique(order[lo : lo + 20] // 10)
        assert len(units) == 2 and units[0] < 4 <= units[1], units
    assert not np.array_equal(order[:20], np.sort(order[:20]))  # shuffled inside the window
    ragged = epoch_order(50_000, 1024, seed=seed, window_samples=4096)  # 49 units (the last one partial)
    assert np.array_equal(np.sort(ragged), np.arange(50_000))


def tail_class_labels(n: int, tail: float) -> np.ndarray:
    """Labels as the builds write them: detection samples per image (neg, pos, part), landmarks last."""
    labels = np.resize(np.array([LABEL_NEGATIVE] * 3 + [LABEL_POSITIVE, LABEL_PART], np.int8), n)
    labels[n - int(n * tail) :] = LABEL_LANDMARK
    return labels


@pytest.mark.parametrize("seed", range(4))
def test_default_shuffle_mixes_a_landmark_tail_into_every_batch(seed: int) -> None:
    """Issue 8: with windows of consecutive permuted units, batches of a small build held 0%-32% landmarks."""
    labels = tail_class_labels(20_000, 0.135)
    order = epoch_order(len(labels), 1024, seed=seed)
    share = (labels[order[: len(order) // 256 * 256]].reshape(-1, 256) == LABEL_LANDMARK).mean(axis=1)
    assert 0.04 < share.min() and share.max() < 0.25, (share.min(), share.max())


def test_mix_counts_round_by_largest_remainder() -> None:
    assert mix_counts(256, (3, 1, 1, 2)).tolist() == [110, 37, 36, 73]  # ties go to the class listed first
    assert mix_counts(7, (3, 1, 1, 2)).tolist() == [3, 1, 1, 2]
    assert mix_counts(10, (1, 0, 0, 0)).tolist() == [10, 0, 0, 0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        ratio, batch = rng.integers(0, 9, 4) + [1, 0, 0, 0], int(rng.integers(1, 1000))
        counts = mix_counts(batch, ratio)
        assert counts.sum() == batch and np.all(np.abs(counts - batch * ratio / ratio.sum()) < 1)
    assert parse_batch_mix("3:1:1:2") == (3, 1, 1, 2) and parse_batch_mix([1, 1, 0, 0.5]) == (1, 1, 0, 0.5)
    for bad in ("3:1:1", "a:1:1:1", "0:0:0:0", "nan:1:1:1", "-1:1:1:1", "inf:1:1:1"):
        with pytest.raises(FacedataError, match="batch_mix"):
            parse_batch_mix(bad)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batch_mix_exact_counts_and_classes_cycle_in_passes(shuffle: bool) -> None:
    labels = tail_class_labels(30_000, 0.1)
    mixed = ReadOrder(len(labels), 1024, 256, seed=3, shuffle=shuffle, world_size=2, batch_mix="3:1:1:2",
                      labels=labels)
    assert mixed.batches == 59  # as many batches as without a mix: ceil(15000 / 256) per rank
    expected = [LABEL_NEGATIVE] * 110 + [LABEL_POSITIVE] * 37 + [LABEL_PART] * 36 + [LABEL_LANDMARK] * 73
    epochs = [mixed.epoch(e) for e in range(4)]
    for order in epochs:
        assert len(order) == 2 * 59 * 256
        assert np.array_equal(labels[order].reshape(-1, 256), np.tile(expected, (2 * 59, 1)))
    assert np.array_equal(epochs[1], mixed.epoch(1)) and not np.array_equal(epochs[0], epochs[1])
    usage = mixed.class_usage()
    assert usage["landmark"] == (3000, 73 * 118) and usage["negative"] == (16200, 110 * 118)
    for label in (LABEL_NEGATIVE, LABEL_LANDMARK):  # every sample of a class once before any twice
        members = np.flatnonzero(labels == label)
        stream = np.concatenate([order[labels[order] == label] for order in epochs])
        for lo in range(0, len(stream) - len(members) + 1, len(members)):
            assert np.array_equal(np.sort(stream[lo : lo + len(members)]), members)
    ranks = [mixed.rank(2, r) for r in range(2)]
    assert np.array_equal(np.concatenate(ranks), epochs[2])


def test_batch_mix_needs_every_class_it_asks_for() -> None:
    labels = tail_class_labels(5000, 0.0)
    with pytest.raises(FacedataError, match="no landmark samples"):
        ReadOrder(5000, 64, 100, batch_mix="3:1:1:2", labels=labels)
    order = ReadOrder(5000, 64, 100, batch_mix="3:1:1:0", labels=labels).epoch(0)
    assert np.all(labels[order].reshape(-1, 100)[:, :60] == LABEL_NEGATIVE)


@pytest.mark.parametrize(("n", "world"), [(3000, 2), (3001, 2), (1000, 3), (10, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_equal_disjoint_and_cover(n: int, world: int, drop_last: bool) -> None:
    slices = [rank_order(n, 64, seed=1, epoch=2, rank=r, world_size=world, drop_last=drop_last)
              for r in range(world)]
    assert len({len(s) for s in slices}) == 1
    joined = np.concatenate(slices)
    if drop_last:
        assert len(joined) == n // world * world and len(np.unique(joined)) == len(joined)
    else:
        assert len(joined) == -(-n // world) * world and set(joined.tolist()) == set(range(n))
        assert len(np.unique(joined[:n])) == n  # only the wrapped-around padding repeats
    assert np.array_equal(joined[: len(joined)], np.resize(epoch_order(n, 64, seed=1, epoch=2), len(joined)))


@pytest.mark.parametrize(
    ("n", "batch", "workers"), [(3000, 128, 2), (3000, 100, 3), (257, 64, 4), (50, 64, 2)]
)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_mix", [None, "3:1:1:2"])
def test_workers_deal_batches_round_robin(n: int, batch: int, workers: int, drop_last: bool,
                                          batch_mix: str | None) -> None:
    labels = tail_class_labels(n, 0.2) if batch_mix else None
    read_order = ReadOrder(n, 64, batch, seed=5, world_size=2, drop_last=drop_last, batch_mix=batch_mix,
                           labels=labels)
    rank = read_order.rank(0, 1)
    per_worker = [read_order.worker(0, 1, w, workers) for w in range(workers)]
    batches = [[wo[i : i + batch] for i in range(0, len(wo), batch)] for wo in per_worker]
    interleaved = [b for i in range(max(map(len, batches))) for bs in batches if i < len(bs) for b in [bs[i]]]
    expected = num_batches(len(rank), batch, drop_last)
    assert len(interleaved) == expected
    flat = np.concatenate(interleaved) if interleaved else np.zeros(0, np.int64)
    assert np.array_equal(flat, rank[: len(flat)])
    assert len(flat) == (expected * batch if drop_last or batch_mix else len(rank))


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_iter_batches_follow_the_order(tmp_path: Path, backend: str) -> None:
    write_dataset(tmp_path, backend, 3000)
    ds = ShardedDataset(tmp_path)
    pixels, records = synthetic(3000)
    seen = []
    for world_rank in range(2):
        for worker in range(2):
            expected = worker_order(3000, ds.unit_samples, batch_size=100, seed=9, epoch=1, rank=world_rank,
                                    world_size=2, worker=worker, num_workers=2)
            got = list(ds.iter_batches(100, seed=9, epoch=1, rank=world_rank, world_size=2, worker=worker,
                                       num_workers=2))
            assert [len(r) for _, r in got] == [100] * (len(expected) // 100)
            got_pixels = np.concatenate([p for p, _ in got])
            got_records = np.concatenate([r for _, r in got])
            assert got_pixels.flags.c_contiguous and got[0][0].flags.c_contiguous
            assert np.array_equal(got_records, records[expected])
            assert np.array_equal(got_pixels, pixels[expected])
            seen.append(got_records["image_index"])
    assert sorted(np.concatenate(seen).tolist()) == list(range(3000))
    sequential = np.concatenate([r["image_index"] for _, r in ds.iter_batches(512, shuffle=False)])
    assert np.array_equal(sequential, np.arange(3000))
    dropped = list(ds.iter_batches(512, drop_last=True))
    assert len(dropped) == 5 and all(len(r) == 512 for _, r in dropped)


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_labels_batch_mix_and_rgb_from_shards(tmp_path: Path, backend: str) -> None:
    write_dataset(tmp_path, backend, 3000)
    ds = ShardedDataset(tmp_path)
    pixels, records = synthetic(3000)
    assert ds.labels().dtype == np.int8 and np.array_equal(ds.labels(), records["label"])
    batches = list(ds.iter_batches(100, seed=2, epoch=1, batch_mix=(1, 1, 1, 1), channels="rgb", rank=1, world_size=2))
    order = ReadOrder(3000, ds.unit_samples, 100, seed=2, world_size=2, batch_mix="1:1:1:1",
                      labels=records["label"]).rank(1, 1)
    assert len(batches) == 15
    assert np.array_equal(np.concatenate([r for _, r in batches]), records[order])
    assert np.array_equal(np.concatenate([p for p, _ in batches]), pixels[order][..., ::-1])
    assert all(np.array_equal(r["label"], np.repeat([0, 1, -1, -2], 25)) for _, r in batches)
    with pytest.raises(FacedataError, match="channels must be one of"):
        ds.iter_batches(100, channels="hsv")
    with pytest.raises(FacedataError, match="batch_mix"):
        ds.iter_batches(100, batch_mix="1:1")


def test_iter_batches_into_given_buffers_and_private_staging(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lmdb", 3000)
    ds = ShardedDataset(tmp_path)
    pixels, records = synthetic(3000)
    given: list[tuple[np.ndarray, np.ndarray]] = []

    def out(n: int) -> tuple[np.ndarray, np.ndarray]:
        given.append((np.empty((n, *SHAPE), np.uint8), np.empty(n, ds.record_dtype)))
        return given[-1]

    batches = list(ds.iter_batches(700, seed=2, out=out))
    order = worker_order(3000, ds.unit_samples, batch_size=700, seed=2)
    assert len(batches) == len(given) == 5
    assert all(b[0] is g[0] and b[1] is g[1] for b, g in zip(batches, given, strict=True))
    assert np.array_equal(np.concatenate([b[1] for b in batches]), records[order])
    # Random reads between batches must not disturb a running iteration's staged window.
    it = ds.iter_batches(100, seed=4)
    first = next(it)
    ds.read(np.arange(2999, 1499, -1))  # dense: restages units 23.. into the shared scratch
    rest = list(it)
    got = np.concatenate([first[0], *[p for p, _ in rest]])
    assert np.array_equal(got, pixels[worker_order(3000, ds.unit_samples, batch_size=100, seed=4)])


@pytest.mark.parametrize(("backend", "block"), [("lmdb", 20480), ("parquet", 1024)])
def test_units_larger_than_the_shuffle_window(tmp_path: Path, backend: str, block: int) -> None:
    """Large units (Parquet row groups of ~86k rows) are gathered in place, straddling batches unit by unit."""
    n = 50_000
    write_dataset(tmp_path, backend, n, shard_samples=40960, block_samples=block, chunk=10_000)
    ds = ShardedDataset(tmp_path)
    assert ds.unit_samples in (20480, 40960)
    pixels, records = synthetic(n)
    order = worker_order(n, ds.unit_samples, batch_size=3000, seed=6)
    got = list(ds.iter_batches(3000, seed=6))  # Parquet: row groups decoded ahead in a helper thread
    assert np.array_equal(np.concatenate([r for _, r in got]), records[order])
    assert np.array_equal(np.concatenate([p for p, _ in got]), pixels[order])
    if backend == "parquet":  # a failure in the helper thread surfaces in the reading thread
        shard = tmp_path / "shard-00000.parquet"  # seed 6 reads shard 1 first, so shard 0 is prefetched
        with open(shard, "r+b") as fh:  # damage the first page header of the image column
            fh.seek(pq.ParquetFile(shard).metadata.row_group(0).column(0).data_page_offset)
            fh.write(b"\xff" * 16)
        with pytest.raises(FacedataError, match=r"shard-00000.parquet: rows 0..40959 \(unit 0\) are unreadable"):
            list(ShardedDataset(tmp_path).iter_batches(3000, seed=6))


def test_framework_tests_fail_instead_of_skipping_under_ci(tmp_path: Path) -> None:
    """`.ci/run` names the frameworks each environment must have in FACEDATA_REQUIRE_FRAMEWORKS: a test whose
    import guard misses a named framework fails the run, where a developer's run (or a framework the variable
    does not name: MindSpore in the core environment) skips it."""
    module = tmp_path / "test_needs_framework.py"
    module.write_text("from conftest import require_framework\n\nrequire_framework('facedata_no_such_framework')\n\n\n"
                      "def test_uses_it():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "FACEDATA_REQUIRE_FRAMEWORKS"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)]
    for required in (None, "torch,facedata_no_such_frameworks"):  # unset, or naming only other frameworks
        run_env = env if required is None else {**env, "FACEDATA_REQUIRE_FRAMEWORKS": required}
        skipped = subprocess.run(command, capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=120)
        assert skipped.returncode == 5 and "1 skipped" in skipped.stdout, (required, skipped.stdout)  # 5: none ran
    failed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**env, "FACEDATA_REQUIRE_FRAMEWORKS": "torch, facedata_no_such_framework"})
    assert failed.returncode != 0, failed.stdout
    assert "FACEDATA_REQUIRE_FRAMEWORKS names facedata_no_such_framework" in failed.stdout, failed.stdout
