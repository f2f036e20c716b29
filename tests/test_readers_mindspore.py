"""MindSpore source through a real GeneratorDataset pipeline: identity with the numpy reader (which the
PyTorch reader's tests compare with too: MindSpore runs in its own numpy < 2 environment, without PyTorch),
a new order every epoch of one dataset, and the protobuf setting facedata makes itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_framework
from shard_fixtures import synthetic, write_dataset

pytestmark = pytest.mark.mindspore
os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
require_framework("mindspore.dataset")

from facedata.readers.mindspore import MindSporeBatchSource  # noqa: E402
from facedata.storage import ShardedDataset  # noqa: E402

N = 3000


@pytest.fixture(scope="module", params=["lmdb", "parquet"])
def shards(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp(f"ms_{request.param}")
    write_dataset(path, request.param, N)
    return path


def mindspore_batches(source: MindSporeBatchSource, **options) -> list[dict[str, np.ndarray]]:
    dataset = source.dataset(num_parallel_workers=1, python_multiprocessing=False, **options)
    return list(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))


@pytest.mark.parametrize(("shard_id", "num_shards"), [(0, 1), (1, 2)])
@pytest.mark.parametrize(("batch_mix", "channels"), [(None, "bgr"), ("3:1:1:2", "rgb")])
def test_mindspore_and_numpy_yield_identical_batches(shards: Path, shard_id: int, num_shards: int,
                                                           batch_mix: str | None, channels: str) -> None:
    options = {"seed": 11, "epoch": 2, "batch_mix": batch_mix, "channels": channels}
    source = MindSporeBatchSource(shards, 128, num_shards=num_shards, shard_id=shard_id, **options)
    ms = mindspore_batches(source)
    numpy_batches = list(ShardedDataset(shards).iter_batches(128, seed=11, epoch=2, rank=shard_id,
                                                             world_size=num_shards, batch_mix=batch_mix,
                                                             channels=channels))
    assert len(ms) == len(numpy_batches) == len(source)
    for a, (pixels, records) in zip(ms, numpy_batches, strict=True):
        assert set(a) == {"image", *records.dtype.names}
        assert np.array_equal(a["image"], pixels)
        for name in records.dtype.names:
            assert np.array_equal(a[name], records[name]), name
        assert a["label"].dtype == np.int32  # what MindSpore's sparse cross-entropy takes
        if batch_mix:
            assert np.array_equal(a["label"], np.repeat([0, 1, -1, -2], [55, 18, 18, 37]))
    indices = np.concatenate([b["image_index"] for b in ms])
    expected = source.order.rank(2, shard_id)
    assert np.array_equal(indices, expected)
    pixels, records = synthetic(N)
    stored = np.concatenate([b["image"] for b in ms])
    assert np.array_equal(stored, pixels[expected][..., ::-1] if channels == "rgb" else pixels[expected])
    assert np.array_equal(np.concatenate([b["bbox"] for b in ms]), records["bbox"][expected])


def test_float_chw(shards: Path) -> None:
    source = MindSporeBatchSource(shards, 500, seed=0, image_format="float_chw", drop_last=True)
    first = mindspore_batches(source)
    assert len(first) == 6 and first[0]["image"].shape == (500, 3, 12, 12)
    pixels, _ = next(ShardedDataset(shards).iter_batches(500, seed=0, drop_last=True))
    expected = (pixels.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128  # the documented normalisation
    assert first[0]["image"].dtype == np.float32 and np.array_equal(first[0]["image"], expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_one_dataset_sees_a_new_order_every_epoch(shards: Path, workers: int) -> None:
    """Issue 8: GeneratorDataset asked for items 0..len-1 every epoch, so every epoch repeated the first."""
    source = MindSporeBatchSource(shards, 500, seed=1, epoch=3)
    dataset = source.dataset(num_parallel_workers=workers, python_multiprocessing=workers > 1)
    iterator = dataset.create_dict_iterator(num_epochs=2, output_numpy=True)
    for epoch in (3, 4):
        seen = np.concatenate([b["image_index"] for b in iterator])
        assert np.array_equal(seen, source.order.rank(epoch, 0)), epoch
    assert not np.array_equal(source.order.rank(3, 0), source.order.rank(4, 0))
    again = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)  # a new iterator runs on
    assert np.array_equal(np.concatenate([b[5] for b in again]), source.order.rank(5, 0))
    source.set_epoch(0)
    restarted = np.concatenate([b["image_index"] for b in mindspore_batches(source)])
    assert np.array_equal(restarted, source.order.rank(0, 0))
    assert source.column_names[5] == "image_index"


def run_clean(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter without PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION."""
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    return subprocess.run([sys.executable, "-c", code + "\nimport os; os._exit(0)"], capture_output=True,
                          text=True, env=env, timeout=300)


def test_facedata_sets_the_protobuf_implementation_mindspore_needs() -> None:
    """onnx loads protobuf's default implementation, under which MindSpore's *_pb2 modules fail to import;
    facedata.readers.mindspore sets the pure-Python one first, and says so when it is too late."""
    proc = run_clean("import facedata.readers.mindspore, onnx, os\nfrom mindspore.train import Model\n"
                     "print(os.environ['PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION'])")
    assert proc.returncode == 0 and proc.stdout.split() == ["python"], proc.stderr[-2000:]
    late = run_clean("import onnx\nimport facedata.readers.mindspore")
    assert late.returncode != 0
    assert "import facedata.readers.mindspore before onnx" in late.stderr.strip().splitlines()[-1]
