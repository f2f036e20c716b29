"""Faces removed by `filter` stay as ignore regions: real WIDER train images, a real pnet build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_samplers import wider_manifest

from facedata.build import build_dataset
from facedata.filters import MinSize, apply_filters
from facedata.manifest import Manifest
from facedata.samplers import CropRecipe
from facedata.samplers.tasks import task_table
from facedata.samples import LABEL_NEGATIVE, ORIGIN_DETECTIONS
from facedata.storage import ShardedDataset

MIN_SIZE = 40.0  # WIDER faces of 20-40 px are usable by the default recipe (ignore_under 20): filter removes them


@pytest.fixture(scope="module")
def wider(realdata: Path) -> Manifest:
    return wider_manifest(realdata)


def covered_share(crops: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(C, F) share of each face's area inside each crop (written here, not the samplers' coverage)."""
    ix = np.clip(
        np.minimum(crops[:, None, 2], faces[None, :, 2]) - np.maximum(crops[:, None, 0], faces[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(crops[:, None, 3], faces[None, :, 3]) - np.maximum(crops[:, None, 1], faces[None, :, 1]), 0, None
    )
    area = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
    return ix * iy / np.maximum(area, 1e-9)[None, :]


def test_task_table_treats_ignored_faces_like_invalid_ones(wider: Manifest) -> None:
    filtered, _ = apply_filters(wider, [MinSize(MIN_SIZE)])
    ignored = filtered.faces["ignore"].to_numpy(bool)
    assert 0 < ignored.sum() < len(ignored)
    flagged = wider.faces.assign(invalid=wider.faces["invalid"].to_numpy(bool) | ignored)
    as_invalid = Manifest(wider.images, flagged, wider.provenance)
    got = task_table(filtered, ORIGIN_DETECTIONS, ignore_under=20).faces
    want = task_table(as_invalid, ORIGIN_DETECTIONS, ignore_under=20).faces
    np.testing.assert_array_equal(got.usable, want.usable)
    assert not got.usable[ignored].any()
    np.testing.assert_array_equal(got.boxes, want.boxes)  # the ignore regions are all still there


@pytest.mark.parametrize("removed", ["ignore", "drop"])
def test_no_negative_crop_covers_a_removed_face(wider: Manifest, tmp_path: Path, removed: str) -> None:
    filtered, _ = apply_filters(wider, [MinSize(MIN_SIZE, removed)])
    recipe = CropRecipe(size=12)
    build_dataset(filtered, None, tmp_path / "out", crop_recipe=recipe, mix=False, workers=1, progress=False, seed=1)
    _, records = ShardedDataset(tmp_path / "out").read(np.arange(len(ShardedDataset(tmp_path / "out"))))
    negatives = records[records["label"] == LABEL_NEGATIVE]
    assert len(negatives) > 50
    faces = wider.faces
    small = ((faces["x2"] - faces["x1"]) < MIN_SIZE) | ((faces["y2"] - faces["y1"]) < MIN_SIZE)
    worst = 0.0
    for i, image_id in enumerate(filtered.images["image_id"]):
        crops = negatives["crop"][negatives["image_index"] == i].astype(np.float64)
        removed_faces = faces.loc[small & (faces["image_id"] == image_id), ["x1", "y1", "x2", "y2"]]
        if len(crops) and len(removed_faces):
            worst = max(worst, float(covered_share(crops, removed_faces.to_numpy(np.float64)).max()))
    if removed == "ignore":
        assert worst <= recipe.ignore_cover  # 0: no negative touches a removed face
    else:
        assert worst > 0.5  # dropped faces are background: negatives are cut right over them
