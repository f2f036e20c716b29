"""PyTorch readers through a real DataLoader with two worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_framework
from shard_fixtures import synthetic, write_dataset

from facedata.errors import FacedataError
from facedata.readers.order import ReadOrder
from facedata.storage import ShardedDataset

torch = require_framework("torch")
from torch.utils.data import BatchSampler, DataLoader, RandomSampler  # noqa: E402

from facedata.readers.torch import ShardIterableDataset, ShardMapDataset, make_loader  # noqa: E402

N = 3000


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torch_shards")
    write_dataset(path, "lmdb", N)
    return path


def rank_order(n: int, unit: int, *, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1
               ) -> np.ndarray:
    return ReadOrder(n, unit, 1, seed=seed, world_size=world_size).rank(epoch, rank)


def collect(loader: DataLoader) -> tuple[np.ndarray, np.ndarray, list[int]]:
    images, indices, sizes = [], [], []
    for batch in loader:
        images.append(batch["image"].numpy())
        indices.append(batch["image_index"].numpy())
        sizes.append(len(batch["label"]))
    return np.concatenate(images), np.concatenate(indices), sizes


@pytest.mark.parametrize("rank", [0, 1])
def test_iterable_dataset_two_workers_gives_the_rank_order(shards: Path, rank: int) -> None:
    ds = ShardIterableDataset(shards, batch_size=128, seed=7, rank=rank, world_size=2)
    ds.set_epoch(3)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    images, indices, sizes = collect(loader)
    expected = rank_order(N, ds.data.unit_samples, seed=7, epoch=3, rank=rank, world_size=2)
    assert np.array_equal(indices, expected)
    assert sizes == [128] * 11 + [92] and len(ds) == 12
    pixels, _ = synthetic(N)
    assert images.dtype == np.uint8 and np.array_equal(images, pixels[expected])
    ds.set_epoch(4)
    _, other_epoch, _ = collect(DataLoader(ds, batch_size=None, num_workers=2))
    next_epoch = rank_order(N, ds.data.unit_samples, seed=7, epoch=4, rank=rank, world_size=2)
    assert np.array_equal(other_epoch, next_epoch)
    assert not np.array_equal(other_epoch, indices)


def test_rank_and_world_from_environment(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ds = ShardIterableDataset(shards, batch_size=256, seed=1, drop_last=True)
    assert (ds.rank, ds.world_size) == (2, 3)
    _, indices, sizes = collect(DataLoader(ds, batch_size=None, num_workers=0))
    assert sizes == [256] * 3
    assert np.array_equal(indices, rank_order(N, ds.data.unit_samples, seed=1, rank=2, world_size=3)[:768])


def test_float_chw_normalisation(shards: Path) -> None:
    ds = ShardIterableDataset(shards, batch_size=64, shuffle=False, image_format="float_chw", rank=0,
                              world_size=1)
    batch = next(iter(ds))
    pixels, _ = synthetic(64)
    assert batch["image"].dtype == torch.float32 and tuple(batch["image"].shape) == (64, 3, 12, 12)
    expected = (pixels.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128
    assert np.array_equal(batch["image"].numpy(), expected)
    assert batch["image"].min() >= -1 and batch["image"].max() < 1


def test_map_dataset_single_items_and_batch_sampler(shards: Path) -> None:
    ds = ShardMapDataset(shards)
    pixels, records = synthetic(N)
    item = ds[1234]
    assert np.array_equal(item["image"].numpy(), pixels[1234]) and int(item["image_index"]) == 1234
    assert np.allclose(item["landmarks"].numpy(), records["landmarks"][1234])
    assert int(ds[-1]["image_index"]) == N - 1
    with pytest.raises(IndexError):
        ds[N]
    generator = torch.Generator().manual_seed(0)
    sampler = BatchSampler(RandomSampler(ds, generator=generator), batch_size=200, drop_last=False)
    loader = DataLoader(ds, batch_size=None, sampler=sampler, num_workers=2)
    images, indices, sizes = collect(loader)
    assert sorted(indices.tolist()) == list(range(N)) and sizes == [200] * 15
    assert np.array_equal(images, pixels[indices])
    default = DataLoader(ds, batch_size=50, num_workers=2)  # per-sample fetch + default collate
    images, indices, _ = collect(default)
    assert np.array_equal(indices, np.arange(N)) and np.array_equal(images, pixels)


@pytest.mark.parametrize("image_format", ["uint8_hwc", "float_chw"])
def test_packed_transfer_matches_unpacked(shards: Path, image_format: str) -> None:
    from facedata.readers.torch import PackedBatch, make_loader

    options = {"seed": 3, "rank": 0, "world_size": 1, "image_format": image_format}
    packed = list(make_loader(shards, 256, num_workers=2, **options))
    plain = list(DataLoader(ShardIterableDataset(shards, 256, packed=False, **options), batch_size=None,
                            num_workers=2))
    assert len(packed) == len(plain) == 12
    for a, b in zip(packed, plain, strict=True):
        assert isinstance(a, dict) and set(a) == set(b)
        for name in a:
            assert a[name].dtype == b[name].dtype and a[name].is_contiguous(), name
            assert torch.equal(a[name], b[name]), name
    ds = ShardIterableDataset(shards, 100, **options)
    in_process = next(iter(ds))  # no worker: plain dicts, never PackedBatch
    assert isinstance(in_process, dict) and torch.equal(in_process["image"], plain[0]["image"][:100])
    batch, pixels, records = PackedBatch.allocate(5, (12, 12, 3), ds.data.record_dtype)
    expected_pixels, expected_records = synthetic(5)
    pixels[...] = expected_pixels
    records[...] = expected_records
    unpacked = batch.unpack()
    assert np.array_equal(unpacked["image"].numpy(), expected_pixels)
    assert np.array_equal(unpacked["landmarks"].numpy(), expected_records["landmarks"])


def test_ring_slots_are_reused_and_never_overwritten_while_held(shards: Path) -> None:
    options = {"seed": 8, "rank": 0, "world_size": 1}
    expected = rank_order(N, ShardIterableDataset(shards, 32, **options).data.unit_samples, seed=8)
    pixels, _ = synthetic(N)
    from facedata.readers.torch import make_loader

    streamed = 0
    for i, batch in enumerate(make_loader(shards, 32, num_workers=2, **options)):  # 47 batches per worker
        assert np.array_equal(batch["image"].numpy(), pixels[expected[i * 32 : (i + 1) * 32]])
        streamed += len(batch["label"])
    assert streamed == N
    held = list(make_loader(shards, 32, num_workers=2, **options))  # more batches than ring slots
    assert np.array_equal(np.concatenate([b["image"].numpy() for b in held]), pixels[expected])
    assert np.array_equal(np.concatenate([b["image_index"].numpy() for b in held]), expected)


def test_ring_slot_is_freed_when_its_last_view_dies(shards: Path) -> None:
    from facedata.readers.torch import RING_SLOTS, _Ring

    ds = ShardIterableDataset(shards, 16)
    ring = _Ring(16, ds.data.image_shape, ds.data.record_dtype)
    claims = [ring.claim(16) for _ in range(RING_SLOTS)]
    assert all(claims) and ring.claim(16) is None  # all slots held: the worker falls back
    batch, pixels, records = claims[0]
    expected_pixels, expected_records = synthetic(16)
    pixels[...] = expected_pixels
    records[...] = expected_records
    unpacked = batch.unpack()
    view = unpacked.pop("image")[2:5]
    assert np.array_equal(unpacked["bbox"].numpy(), expected_records["bbox"])
    del unpacked
    assert ring.flags[0] == 1  # a slice of the image still views the slot
    assert np.array_equal(view.numpy(), expected_pixels[2:5])
    del view
    assert ring.flags[0] == 0 and ring.claim(16) is not None


def test_labels_are_int64_for_the_losses(shards: Path) -> None:
    """F.cross_entropy takes int64 class targets; the shards store int8."""
    _, records = synthetic(N)
    for batch in (next(iter(make_loader(shards, 64, num_workers=1, seed=0, rank=0, world_size=1))),
                  next(iter(ShardIterableDataset(shards, 64, rank=0, world_size=1))), ShardMapDataset(shards)[[3, 4]]):
        assert batch["label"].dtype == torch.int64
        assert batch["image_index"].dtype == torch.int32  # the other fields keep their stored types
        assert np.array_equal(batch["label"].numpy(), records["label"][batch["image_index"].numpy()])
    torch.nn.functional.cross_entropy(torch.zeros(2, 2), batch["label"].clamp(min=0))  # int8 would raise


@pytest.mark.parametrize("image_format", ["uint8_hwc", "float_chw"])
def test_rgb_channels_through_shared_memory_workers(shards: Path, image_format: str) -> None:
    options = {"seed": 4, "rank": 0, "world_size": 1, "image_format": image_format}
    bgr = list(make_loader(shards, 200, num_workers=2, **options))
    rgb = list(make_loader(shards, 200, num_workers=2, channels="rgb", **options))
    channel = 3 if image_format == "uint8_hwc" else 1
    for a, b in zip(bgr, rgb, strict=True):
        assert torch.equal(a["image_index"], b["image_index"])
        assert torch.equal(a["image"].flip(channel), b["image"])
    mapped = ShardMapDataset(shards, channels="rgb", image_format=image_format)[rgb[0]["image_index"].tolist()]
    assert torch.equal(mapped["image"], rgb[0]["image"])
    with pytest.raises(FacedataError, match="channels must be one of"):
        ShardIterableDataset(shards, 10, channels="RGB")


def test_batch_mix_batches_equal_numpy_for_any_worker_count(shards: Path) -> None:
    """Exact class counts per batch; the same batches as ShardedDataset.iter_batches, 0 or 2 workers."""
    options = {"seed": 5, "batch_mix": "3:1:1:2", "drop_last": False}
    numpy_batches = list(ShardedDataset(shards).iter_batches(256, epoch=1, rank=1, world_size=2, **options))
    dataset = ShardIterableDataset(shards, 256, rank=1, world_size=2, epoch=1, **options)
    assert len(dataset) == len(numpy_batches) == 6  # as without a mix: ceil(1500 / 256)
    counts = [110, 37, 36, 73]
    for workers in (0, 2):
        batches = list(DataLoader(dataset, batch_size=None, num_workers=workers))
        assert len(batches) == len(numpy_batches)
        for batch, (pixels, records) in zip(batches, numpy_batches, strict=True):
            assert np.array_equal(batch["image"].numpy(), pixels)
            assert np.array_equal(batch["image_index"].numpy(), records["image_index"])
            labels = batch["label"].numpy()
            assert np.array_equal(labels, np.repeat([0, 1, -1, -2], counts))
    with pytest.raises(FacedataError, match="batch_mix"):
        ShardIterableDataset(shards, 256, batch_mix="3:1:1")
