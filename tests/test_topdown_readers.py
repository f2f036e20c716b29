"""Top-down read-time targets through the real PyTorch and MindSpore readers: the same seed and epoch give
the numpy reader's arrays (one implementation, draws from (seed, epoch, image, person)), a new epoch new draws.
PyTorch and MindSpore are checked in their own environments (MindSpore needs numpy < 2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_framework

from facedata.cli import main
from facedata.readers.heatmaps import COLUMNS, TopDownTargets
from facedata.storage import ShardedDataset


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


def numpy_targets(shards: Path, targets: TopDownTargets) -> list[dict[str, np.ndarray]]:
    """The reference: the targets of the numpy reader's batches of seed 1, epoch 2."""
    return [targets(p, r, 2) for p, r in ShardedDataset(shards).iter_batches(16, seed=1, epoch=2)]


def assert_same_batches(got: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]]) -> None:
    assert len(got) == len(expected) > 1
    for gb, nb in zip(got, expected, strict=True):
        assert set(gb) == set(COLUMNS)
        for name in COLUMNS:
            assert np.array_equal(gb[name], nb[name], equal_nan=name == "keypoints"), name


def test_torch_and_numpy_give_identical_targets(shards: Path) -> None:
    require_framework("torch")
    from facedata.readers.torch import ShardIterableDataset

    targets = TopDownTargets.for_dataset(shards, seed=5, half_body=True)
    batches = ShardIterableDataset(shards, 16, seed=1, epoch=2, targets=targets)
    assert_same_batches([{k: v.numpy() for k, v in b.items()} for b in batches], numpy_targets(shards, targets))


@pytest.mark.mindspore
def test_mindspore_and_numpy_give_identical_targets(shards: Path) -> None:
    os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
    from facedata.readers.mindspore import MindSporeBatchSource

    targets = TopDownTargets.for_dataset(shards, seed=5, half_body=True)
    source = MindSporeBatchSource(shards, 16, seed=1, epoch=2, targets=targets)
    assert source.column_names == list(COLUMNS)
    ms_batches = list(source.dataset(shuffle=False).create_dict_iterator(num_epochs=1, output_numpy=True))
    assert len(ms_batches) == len(source)
    assert_same_batches(ms_batches, numpy_targets(shards, targets))


def test_targets_draw_anew_each_epoch(shards: Path) -> None:
    targets = TopDownTargets.for_dataset(shards, seed=5, half_body=True)
    flips = np.concatenate([b["flipped"] for b in numpy_targets(shards, targets)])
    assert 0 < flips.sum() < len(flips)
    data = ShardedDataset(shards)
    other = targets(*data.read(np.arange(16)), 3)["transform"]
    assert not np.allclose(targets(*data.read(np.arange(16)), 2)["transform"], other)
