"""`verify --labels / --pixels` on `build pfld` and `build topdown` shards: real builds pass, a corrupted record
or pixel fails on the field it corrupts, and a stage the oracle does not know is a one-line error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.manifest import Manifest
from facedata.oracle.dataset import pfld_manifest
from facedata.oracle.keypoints import (
    PfldOracle,
    PfldRules,
    TopDownOracle,
    TopDownRules,
    annotated_euler,
    verify_topdown_pixels,
)
from facedata.oracle.labels import run_checks
from facedata.oracle.pixels import verify_pixels
from facedata.parsers import ingest
from facedata.samples import ORIGIN_LANDMARKS
from facedata.storage import ShardedDataset

COCO_MINI = "coco_val2017/coco_mini/annotations/person_keypoints_val2017.json"
COCO_MINI_IMAGES = "coco_val2017/coco_mini/val2017"


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def everything(directory: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    data = ShardedDataset(directory)
    try:
        pixels, records = data.read(np.arange(len(data)))
        return pixels, records, data.index
    finally:
        data.close()


@pytest.fixture(scope="module")
def pfld(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real inputs in one scheme: AFLW2000-3D (annotated poses) then 300-W (estimated), 4 variants a face."""
    out = tmp_path_factory.mktemp("pfld")
    for name in ("aflw2000_3d", "300w"):
        assert run("ingest", realdata / name, "-o", out / f"{name}.parquet", "-q").exit_code == 0
    result = run("build", "pfld", "--landmarks", out / "aflw2000_3d.parquet", "--landmarks", out / "300w.parquet",
                 "-o", out / "shards", "--variants", 4, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def topdown(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("topdown")
    manifest, _ = ingest(realdata / COCO_MINI, images=realdata / COCO_MINI_IMAGES)
    manifest.write(out / "coco.parquet")
    result = run("build", "topdown", "--keypoints", out / "coco.parquet", "-o", out / "shards", "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    return out


def test_a_real_pfld_build_passes_labels_and_pixels(pfld: Path) -> None:
    result = run("verify", pfld / "shards", "--labels", "--pixels", 60)
    assert result.exit_code == 0, result.output
    assert "all labels re-derived, 0 mismatches" in result.output
    assert "re-cut 60 samples" in result.output and "0 outside tolerance" in result.output
    _, records, _ = everything(pfld / "shards")
    assert set(records["pose_source"].tolist()) == {1, 2}  # annotated and estimated poses were both checked
    assert (records["angle"] != 0).any() and (records["mirror"] != 0).any()


def test_pfld_inputs_given_again_are_used_in_order(pfld: Path) -> None:
    given = ("--landmarks", pfld / "aflw2000_3d.parquet", "--landmarks", pfld / "300w.parquet")
    assert run("verify", pfld / "shards", *given).exit_code == 0
    swapped = run("verify", pfld / "shards", *given[2:], *given[:2])
    assert swapped.exit_code == 1 and "differs from the one this dataset was built from" in swapped.output


def test_a_real_topdown_build_passes_labels_and_pixels(topdown: Path) -> None:
    result = run("verify", topdown / "shards", "--labels", "--pixels", 40, "--keypoints", topdown / "coco.parquet")
    assert result.exit_code == 0, result.output
    assert "all labels re-derived, 0 mismatches" in result.output and "0 outside tolerance" in result.output


def test_topdown_takes_its_recorded_manifest_or_names_the_option(topdown: Path, tmp_path: Path) -> None:
    result = run("verify", topdown / "shards", "--labels")  # the path index.json records
    assert result.exit_code == 0 and "0 mismatches" in result.output, result.output
    moved = tmp_path / "coco.parquet"
    (topdown / "coco.parquet").rename(moved)
    try:
        result = run("verify", topdown / "shards", "--labels")
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert "is missing; pass --keypoints" in result.output.strip().splitlines()[-1]
    finally:
        moved.rename(topdown / "coco.parquet")


def test_a_stage_the_oracle_does_not_know_is_one_line(pfld: Path, tmp_path: Path) -> None:
    shutil.copytree(pfld / "shards", tmp_path / "copy")
    index_path = tmp_path / "copy" / "index.json"
    index = json.loads(index_path.read_text())
    index["provenance"]["stage"] = "facemesh"
    del index["provenance"]["pfld_recipe"]
    index_path.write_text(json.dumps(index))
    result = run("verify", tmp_path / "copy", "--labels")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: index.json: the oracle cannot check stage 'facemesh' (it knows pnet, rnet, onet, pfld and topdown "
        "builds)")


def _pfld_check(pfld: Path, records: np.ndarray):
    index = everything(pfld / "shards")[2]
    manifest, _ = pfld_manifest(index)
    prov = index["provenance"]
    oracle = PfldOracle(manifest, PfldRules.from_recipe(prov["pfld_recipe"]), prov["pfld_corpora"])
    return run_checks(oracle.check, records)


def _corrupt_pfld(records: np.ndarray, what: str) -> int:
    """Corrupt one record the way `what` says; returns its index."""
    if what == "landmarks":
        i = int(np.flatnonzero(records["mask"].all(axis=1))[0])
        records["landmarks"][i, 0] += 0.01  # ~1 px of a 112 px crop
    elif what == "euler":  # an annotated, rotated sample with a clear yaw: the yaw sign flipped
        i = int(np.flatnonzero((records["pose_source"] == 1) & (records["angle"] != 0)
                               & (np.abs(records["euler"][:, 1]) > 5))[0])
        records["euler"][i, 1] *= -1
    elif what == "mask":
        i = 0
        records["mask"][i, 3] = 0
    elif what == "crop":
        i = 1
        records["crop"][i] += [1, 0, 1, 0]
    elif what == "corpus":
        i = 0
        records["corpus"][i] = 1 - records["corpus"][i]
    else:
        i = 2
        records["attributes"][i, 0] = 1
    return i


@pytest.mark.parametrize("what", ["landmarks", "euler", "mask", "crop", "corpus", "attributes"])
def test_a_corrupted_pfld_record_fails_on_its_field(pfld: Path, what: str) -> None:
    _, records, _ = everything(pfld / "shards")
    assert _pfld_check(pfld, records).ok
    i = _corrupt_pfld(records, what)
    report = _pfld_check(pfld, records)
    assert not report.ok and report.samples_with_mismatch == 1
    assert report.listed[0].index == i
    expected = {"crop": "landmarks"}.get(what, what)  # a moved crop moves its targets (and nothing else breaks)
    assert expected in report.by_field, report.summary()


def test_annotated_euler_follows_the_documented_composition() -> None:
    # pitch = yaw = 0: a crop rotated +a counter-clockwise lowers roll by a; a mirror negates yaw and roll
    assert np.allclose(annotated_euler(np.array([[0.0, 0, 10]]), np.array([30.0]), np.array([False])), [[0, 0, -20]])
    out = annotated_euler(np.array([[5.0, 20, 10]]), np.array([0.0]), np.array([True]))
    assert np.allclose(out, [[5, -20, -10]])


def _topdown_check(topdown: Path, records: np.ndarray):
    index = everything(topdown / "shards")[2]
    oracle = TopDownOracle(Manifest.read(topdown / "coco.parquet"),
                           TopDownRules.from_recipe(index["provenance"]["topdown_recipe"]))
    return run_checks(oracle.check, records)


@pytest.mark.parametrize("what", ["affine", "keypoints", "visible", "scale", "center"])
def test_a_corrupted_topdown_record_fails_on_its_field(topdown: Path, what: str) -> None:
    _, records, _ = everything(topdown / "shards")
    assert _topdown_check(topdown, records).ok
    i = 3
    if what == "affine":
        records["affine"][i, 0, 2] += 0.5  # half a pixel to the right
    elif what == "keypoints":
        k = int(np.flatnonzero(records["visible"][i])[0])
        records["keypoints"][i, k, 1] += 0.5
    elif what == "visible":
        records["visible"][i] = 1 - records["visible"][i]
    elif what == "scale":
        records["scale"][i] *= 1.01
    else:
        records["center"][i, 0] += 1
    report = _topdown_check(topdown, records)
    assert not report.ok and report.listed[0].index == i and what in report.by_field, report.summary()


def test_an_altered_pixel_fails_the_pfld_recut(pfld: Path) -> None:
    pixels, records, index = everything(pfld / "shards")
    manifest, _ = pfld_manifest(index)
    everyone = len(records)
    assert verify_pixels((pixels, records), None, manifest, n=everyone, interpolation={ORIGIN_LANDMARKS: "linear"}).ok
    pixels[5, 50, 50] = np.where(pixels[5, 50, 50] < 128, 255, 0)  # one pixel, over 127 levels off
    report = verify_pixels((pixels, records), None, manifest, n=everyone)
    assert [r.index for r in report.failures] == [5]


def test_an_altered_pixel_fails_the_topdown_recut(topdown: Path) -> None:
    pixels, records, _ = everything(topdown / "shards")
    manifest = Manifest.read(topdown / "coco.parquet")
    assert verify_topdown_pixels((pixels, records), manifest, n=len(records)).ok
    pixels[7, 100, 80] = np.where(pixels[7, 100, 80] < 128, 255, 0)
    report = verify_topdown_pixels((pixels, records), manifest, n=len(records))
    assert [r.index for r in report.failures] == [7]


def test_an_annotated_box_build_without_mirrors_passes_and_a_mirror_fails(pfld: Path, tmp_path: Path) -> None:
    result = run("build", "pfld", "--landmarks", pfld / "aflw2000_3d.parquet", "-o", tmp_path / "o", "--box",
                 "annotated", "--no-mirror", "--variants", 3, "--workers", 1, "-q")
    assert result.exit_code == 0, result.output
    assert run("verify", tmp_path / "o", "--labels", "--pixels", 20).exit_code == 0
    _, records, index = everything(tmp_path / "o")
    manifest, _ = pfld_manifest(index)
    oracle = PfldOracle(manifest, PfldRules.from_recipe(index["provenance"]["pfld_recipe"]),
                        index["provenance"]["pfld_corpora"])
    records["mirror"][4] = 1
    report = run_checks(oracle.check, records)
    assert "mirror" in report.by_field and report.listed[0].index == 4
