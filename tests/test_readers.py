"""The shared reading order (pure function) and the numpy batch reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from shard_fixtures import SHAPE, synthetic, write_dataset

from facedata.errors import FacedataError
from facedata.readers.order import epoch_order, num_batches, rank_order, worker_order
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


def test_shuffle_stays_within_windows_of_units() -> None:
    n, unit, window = 50_000, 1024, 4096
    order = epoch_order(n, unit, seed=0, window_samples=window)
    units = order // unit
    for lo in range(0, 40 * 1024, window):  # each full window of 4 permuted units holds only those units
        assert len(np.unique(units[lo : lo + window])) <= 5
    assert len(np.unique(units[:window])) >= 3  # ... and mixes them


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
def test_workers_deal_batches_round_robin(n: int, batch: int, workers: int, drop_last: bool) -> None:
    rank = rank_order(n, 64, seed=5, rank=1, world_size=2, drop_last=drop_last)
    per_worker = [
        worker_order(n, 64, batch_size=batch, seed=5, rank=1, world_size=2, worker=w, num_workers=workers,
                     drop_last=drop_last)
        for w in range(workers)
    ]
    batches = [[wo[i : i + batch] for i in range(0, len(wo), batch)] for wo in per_worker]
    interleaved = [b for i in range(max(map(len, batches))) for bs in batches if i < len(bs) for b in [bs[i]]]
    expected = num_batches(len(rank), batch, drop_last)
    assert len(interleaved) == expected
    flat = np.concatenate(interleaved) if interleaved else np.zeros(0, np.int64)
    assert np.array_equal(flat, rank[: len(flat)])
    assert len(flat) == (expected * batch if drop_last else len(rank))


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
