"""MindSpore source through a real GeneratorDataset pipeline, and identity with the PyTorch reader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from shard_fixtures import synthetic, write_dataset

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
ds_module = pytest.importorskip("mindspore.dataset")
torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from facedata.readers.mindspore import MindSporeBatchSource  # noqa: E402
from facedata.readers.order import rank_order  # noqa: E402
from facedata.readers.torch import ShardIterableDataset  # noqa: E402

N = 3000


@pytest.fixture(scope="module", params=["lmdb", "parquet"])
def shards(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(f"ms_{request.param}")
    write_dataset(path, request.param, N)
    return path


def mindspore_batches(source: MindSporeBatchSource) -> list[dict[str, np.ndarray]]:
    dataset = ds_module.GeneratorDataset(source, column_names=source.column_names, shuffle=False,
                                         num_parallel_workers=1, python_multiprocessing=False)
    return list(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))


@pytest.mark.parametrize(("shard_id", "num_shards"), [(0, 1), (1, 2)])
def test_mindspore_and_torch_yield_identical_batches(shards: Path, shard_id: int, num_shards: int) -> None:
    source = MindSporeBatchSource(shards, 128, seed=11, epoch=2, num_shards=num_shards, shard_id=shard_id)
    ms = mindspore_batches(source)
    torch_ds = ShardIterableDataset(shards, batch_size=128, seed=11, epoch=2, rank=shard_id,
                                    world_size=num_shards)
    pt = list(DataLoader(torch_ds, batch_size=None, num_workers=2))
    assert len(ms) == len(pt) == len(source) == len(torch_ds)
    for a, b in zip(ms, pt, strict=True):
        assert set(a) == set(b) == {"image", *source.data.record_dtype.names}
        for name in a:
            assert np.array_equal(a[name], b[name].numpy()), name
    indices = np.concatenate([b["image_index"] for b in ms])
    expected = rank_order(N, source.data.unit_samples, seed=11, epoch=2, rank=shard_id, world_size=num_shards)
    assert np.array_equal(indices, expected)
    pixels, records = synthetic(N)
    assert np.array_equal(np.concatenate([b["image"] for b in ms]), pixels[expected])
    assert np.array_equal(np.concatenate([b["bbox"] for b in ms]), records["bbox"][expected])


def test_float_chw_and_epochs(shards: Path) -> None:
    source = MindSporeBatchSource(shards, 500, seed=0, image_format="float_chw", drop_last=True)
    first = mindspore_batches(source)
    assert len(first) == 6 and first[0]["image"].shape == (500, 3, 12, 12)
    torch_ds = ShardIterableDataset(shards, batch_size=500, seed=0, image_format="float_chw", rank=0,
                                    world_size=1, drop_last=True)
    assert np.array_equal(first[0]["image"], next(iter(torch_ds))["image"].numpy())
    source.set_epoch(1)
    second = mindspore_batches(source)
    assert not np.array_equal(first[0]["image_index"], second[0]["image_index"])
    seen = np.concatenate([b["image_index"] for b in second])
    assert len(np.unique(seen)) == 3000
