"""Top-down read-time targets through the real PyTorch and MindSpore readers: the same seed and epoch give
identical arrays (one implementation, draws from (seed, epoch, image, person)), a new epoch new draws."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_framework

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
require_framework("mindspore.dataset")
torch = require_framework("torch")

from facedata.cli import main  # noqa: E402
from facedata.readers.heatmaps import COLUMNS, TopDownTargets  # noqa: E402
from facedata.readers.mindspore import MindSporeBatchSource  # noqa: E402
from facedata.readers.torch import ShardIterableDataset  # noqa: E402
from facedata.storage import ShardedDataset  # noqa: E402


@pytest.fixture(scope="module")
def shards(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("topdown_readers")
    coco = realdata / "coco_val2017/coco_mini"
    for args in (["ingest", str(coco / "annotations/person_keypoints_val2017.json"), "--images", str(coco / "val2017"),
                  "-o", str(root / "coco.parquet"), "-q"],
                 ["build", "topdown", "--keypoints", str(root / "coco.parquet"), "-o", str(root / "out"),
                  "--workers", "1", "-q"]):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return root / "out"


def test_torch_mindspore_and_numpy_give_identical_targets(shards: Path) -> None:
    targets = TopDownTargets.for_dataset(shards, seed=5, half_body=True)
    torch_batches = list(ShardIterableDataset(shards, 16, seed=1, epoch=2, targets=targets))
    source = MindSporeBatchSource(shards, 16, seed=1, epoch=2, targets=targets)
    assert source.column_names == list(COLUMNS) and len(source) == len(torch_batches) > 1
    ms_batches = list(source.dataset(shuffle=False).create_dict_iterator(num_epochs=1, output_numpy=True))
    data = ShardedDataset(shards)
    numpy_batches = [targets(p, r, 2) for p, r in data.iter_batches(16, seed=1, epoch=2)]
    for tb, mb, nb in zip(torch_batches, ms_batches, numpy_batches, strict=True):
        for name in COLUMNS:
            assert np.array_equal(tb[name].numpy(), mb[name], equal_nan=name == "keypoints"), name
            assert np.array_equal(nb[name], mb[name], equal_nan=name == "keypoints"), name
    flips = np.concatenate([b["flipped"] for b in ms_batches])
    assert 0 < flips.sum() < len(flips)
    other = targets(*data.read(np.arange(16)), 3)["transform"]
    assert not np.allclose(targets(*data.read(np.arange(16)), 2)["transform"], other)
