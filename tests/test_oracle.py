"""The independent oracle (`verify --labels`, `verify --pixels`) on real builds of every stage.

PNet is built from real photos (two WIDER train images, CUHK LFW/net_7876 landmark faces); RNet and ONet
are mined on the demo corpus with small real ONNX models (tests/onnx_models.py). The oracle must pass
them all, catch a sampler helper that is subtly wrong everywhere (which the samplers' own helpers cannot
see), and catch mirrored, altered and wrong-image pixels.
"""

from __future__ import annotations

import importlib
import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from onnx_models import mtcnn_pnet, mtcnn_rnet
from test_build import corpus  # noqa: F401  (the demo-corpus fixture)
from test_samplers import cuhk_manifest, wider_manifest

from facedata import samplers
from facedata.build import CascadeFactory, build_dataset
from facedata.cli import main
from facedata.detect import CascadeConfig
from facedata.errors import FacedataError
from facedata.manifest import Manifest, ManifestBuilder
from facedata.oracle import (
    TOLERANCE,
    DetectionRules,
    pick_samples,
    verify_build_labels,
    verify_build_pixels,
    verify_labels,
    verify_pixels,
)
from facedata.oracle import geometry as og
from facedata.oracle.pixels import recut
from facedata.samplers import crops, geometry, landmarks
from facedata.samplers import mined as mined_samplers
from facedata.samplers.landmarks import LandmarkRecipe
from facedata.samples import LABEL_LANDMARK, LABEL_POSITIVE, ORIGIN_DETECTIONS, ORIGIN_LANDMARKS, SAMPLE_DTYPE
from facedata.storage import ShardedDataset

# the module, not the function facedata.samplers re-exports under the same name
render_module = importlib.import_module("facedata.samplers.render")


@pytest.fixture(scope="module")
def real(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real photos: manifests as files, and a PNet build from them (every sample kept)."""
    root = tmp_path_factory.mktemp("oracle_real")
    wider_manifest(realdata).write(root / "wider.parquet")
    cuhk_manifest(realdata, limit=40).write(root / "cuhk.parquet")
    out = root / "pnet"
    build_dataset(root / "wider.parquet", root / "cuhk.parquet", out, workers=1, progress=False, mix=False)
    return {"root": root, "det": root / "wider.parquet", "lmk": root / "cuhk.parquet", "pnet": out}


@pytest.fixture(scope="module")
def mined_builds(corpus: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    """RNet and ONet builds mined on 10 demo-corpus images (test_build's corpus) with small real ONNX models."""
    root = tmp_path_factory.mktemp("oracle_mined")
    det, lmk = corpus["root"] / "det_small.parquet", corpus["root"] / "lmk.parquet"
    pnet = mtcnn_pnet(root / "pnet.onnx", seed=1, prob_bias=0.8)
    rnet = mtcnn_rnet(root / "rnet.onnx", seed=2, prob_bias=3.0)
    config = CascadeConfig(pyramid_min_face=40)
    for stage, factory in (("rnet", CascadeFactory(str(pnet), config=config)),
                           ("onet", CascadeFactory(str(pnet), str(rnet), config=config))):
        build_dataset(det, lmk, root / stage, stage=stage, detector=factory, workers=1, progress=False)
    return {"root": root, "rnet": root / "rnet", "onet": root / "onet"}


def _build(request: pytest.FixtureRequest, stage: str) -> Path:
    if stage == "pnet":
        return request.getfixturevalue("real")["pnet"]
    return request.getfixturevalue("mined_builds")[stage]


@pytest.mark.parametrize("stage", ["pnet", "rnet", "onet"])
def test_every_stage_passes_both_checks(request: pytest.FixtureRequest, stage: str) -> None:
    out = _build(request, stage)
    report, notes = verify_build_labels(out)  # manifests found through index.json
    n = len(ShardedDataset(out))
    assert notes == [] and report.ok, report.summary()
    assert report.checked == n
    assert {0, 1, -1, -2} <= set(report.by_label)
    pixels, _ = verify_build_pixels(out, 40, seed=3)
    assert pixels.ok, pixels.summary()
    assert len(pixels.results) == min(40, n)
    assert any(r.mirror for r in pixels.results) and any(r.angle != 0 for r in pixels.results)
    assert {r.origin for r in pixels.results} == {ORIGIN_DETECTIONS, ORIGIN_LANDMARKS}
    assert max(r.mean_diff for r in pixels.results) <= TOLERANCE.mean


def test_cli_verify_labels_and_pixels(real: dict) -> None:
    result = CliRunner().invoke(main, ["verify", str(real["pnet"]), "--labels", "--pixels", "25", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "0 mismatches" in result.output
    assert "re-cut 25 samples" in result.output and "0 outside tolerance" in result.output


def _break_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make two sampler helpers subtly wrong in every samplers module that uses them (a build with
    workers=1 runs in this process): box offsets over (size + 1), rotation the wrong way round."""
    right_offsets, right_targets = geometry.offsets_for, geometry.landmark_targets

    def offsets_for(crops, gt_boxes, mirror=None):
        side = np.asarray(crops, np.float64).reshape(-1, 4) @ np.array([-1.0, 0, 1, 0])
        return (right_offsets(crops, gt_boxes, mirror) * (side / (side + 1))[:, None]).astype(np.float32)

    def landmark_targets(points, crops, angles, mirror, flip_permutation):
        return right_targets(points, crops, -np.asarray(angles, np.float32), mirror, flip_permutation)

    for module in (geometry, samplers, crops, landmarks, mined_samplers):
        for name, wrong in (("offsets_for", offsets_for), ("landmark_targets", landmark_targets)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, wrong)


def test_oracle_catches_a_helper_bug_the_samplers_share(real: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a sampler helper is invisible to any check that re-derives with that helper (the old
    verify --labels did): the stored targets equal what the broken helpers compute. The oracle, written
    from the conventions, reports them."""
    _break_helpers(monkeypatch)
    out = tmp_path / "broken"
    build_dataset(real["det"], real["lmk"], out, workers=1, progress=False, mix=False)
    det, lmk = Manifest.read(real["det"]), Manifest.read(real["lmk"])
    _, records = ShardedDataset(out).read_range(0, len(ShardedDataset(out)))
    faces = det.faces[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
    pos = records[records["label"] == LABEL_POSITIVE]
    assert np.array_equal(pos["bbox"], geometry.offsets_for(pos["crop"], faces[pos["face_index"]]))
    marks = records[(records["label"] == LABEL_LANDMARK) & (records["angle"] != 0)]
    points = np.stack(lmk.faces["points"].to_numpy())[marks["face_index"]].reshape(len(marks), 5, 2)
    again = geometry.landmark_targets(points, marks["crop"], marks["angle"], marks["mirror"] != 0,
                                      LandmarkRecipe().flip_permutation)
    assert np.array_equal(marks["landmarks"], again.reshape(len(marks), -1))  # self-consistent, yet wrong

    report, _ = verify_build_labels(out)
    assert not report.ok
    assert report.by_field["bbox"] == int(np.isin(records["label"], [1, -1]).sum())
    assert report.by_field["landmarks"] >= 0.9 * len(marks)
    monkeypatch.undo()
    clean, _ = verify_build_labels(real["pnet"])
    assert clean.ok


def test_pixels_fail_on_mirrored_altered_and_wrong_image_samples(real: dict) -> None:
    ds = ShardedDataset(real["pnet"])
    pixels, records = ds.read_range(0, len(ds))
    det, lmk = Manifest.read(real["det"]), Manifest.read(real["lmk"])
    picked = pick_samples(records, 60, seed=0)
    assert records["mirror"][picked].any() and (records["angle"][picked] != 0).any()
    asymmetric = [int(i) for i in picked
                  if np.abs(pixels[i].astype(int) - pixels[i][:, ::-1]).mean() > 10 * TOLERANCE.mean]
    mirrored, altered = asymmetric[:2]
    detection = [int(i) for i in picked if records["origin"][i] == ORIGIN_DETECTIONS]
    wrong_image = detection[-1]
    pixels, records = pixels.copy(), records.copy()
    pixels[mirrored] = pixels[mirrored][:, ::-1]
    pixels[altered, 3:9, 3:9] = 255 - pixels[altered, 3:9, 3:9]
    records["image_index"][wrong_image] = 1 - records["image_index"][wrong_image]  # the other WIDER photo
    report = verify_pixels((pixels, records), det, lmk, n=60, seed=0)
    failed = {r.index for r in report.failures}
    assert failed == {mirrored, altered, wrong_image}, report.summary()
    assert all("mean abs diff" in r.problem or "does not" in r.problem for r in report.failures)
    assert f"sample {mirrored} " in report.summary()
    # a record whose image is not in the manifest, or cannot be decoded, is a failure too
    records["image_index"][detection[0]] = 99
    records["crop"][detection[1]] = [40, 40, 40, 52]
    broken = verify_pixels((pixels, records), det, lmk, n=60, seed=0)
    problems = {r.index: r.problem for r in broken.failures}
    assert problems[detection[0]] == "image row 99 is not in the manifest"
    assert "is not a whole-pixel box of positive size" in problems[detection[1]]


def test_pick_samples_is_seeded_and_covers_variants() -> None:
    records = np.zeros(1000, [("mirror", "i1"), ("angle", "f4")])
    records["mirror"][::50] = 1
    records["angle"][5::100] = 3.0
    a, b, c = (pick_samples(records, 40, seed) for seed in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and len(np.unique(a)) == 40
    assert (records["mirror"][a] != 0).sum() >= 10 and (records["angle"][a] != 0).sum() == 10
    assert len(pick_samples(records, 5000, 0)) == 1000


def test_manifests_come_from_index_until_they_move_or_change(real: dict, tmp_path: Path) -> None:
    out = tmp_path / "pnet"
    shutil.copytree(real["pnet"], out)
    det_copy = tmp_path / "wider.parquet"
    shutil.copy(real["det"], det_copy)
    index = json.loads((out / "index.json").read_text())
    assert index["provenance"]["inputs"]["detections"]["path"] == str(Path(real["det"]).resolve())
    runner = CliRunner()
    moved = tmp_path / "moved.parquet"
    real["det"].rename(moved)
    try:
        result = runner.invoke(main, ["verify", str(out), "--labels"])
        assert result.exit_code == 2
        assert "detections manifest recorded in index.json" in result.output and "--detections" in result.output
        assert "Traceback" not in result.output
        result = runner.invoke(main, ["verify", str(out), "--labels", "--detections", str(moved)])
        assert result.exit_code == 0 and "0 mismatches" in result.output
        det = Manifest.read(moved)
        Manifest(det.images, det.faces.assign(x1=det.faces["x1"] + 2), det.provenance).write(real["det"])
        with pytest.raises(FacedataError, match="has changed since the build"):
            verify_build_labels(out)
        result = runner.invoke(main, ["verify", str(out), "--pixels", "5"])
        assert result.exit_code == 2 and "has changed since the build" in result.output
        report, notes = verify_build_labels(out, detections=real["det"])  # given explicitly: warn, check
        assert notes and not report.ok
    finally:
        shutil.copy(det_copy, real["det"])
        moved.unlink(missing_ok=True)
    assert verify_build_labels(out)[0].ok


def test_in_memory_manifests_need_the_option(real: dict, tmp_path: Path) -> None:
    det = Manifest.read(real["det"])
    out = tmp_path / "mem"
    build_dataset(det, None, out, workers=1, progress=False)
    with pytest.raises(FacedataError, match="does not record where the detections manifest is; pass --detections"):
        verify_build_labels(out)
    assert verify_build_labels(out, detections=det)[0].ok
    assert verify_labels(ShardedDataset(out), det, None).ok


def test_cli_lists_samples_a_renderer_bug_spoiled(real: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    """Rotated crops warped the wrong way round: labels still re-derive (the records are right), shard
    hashes match, only the pixels are wrong, and `verify --pixels` names each spoiled sample."""
    right = render_module.pixel_crop_matrices
    monkeypatch.setattr(render_module, "pixel_crop_matrices",
                        lambda crops, angles, size=None: right(crops, -np.asarray(angles), size))
    out = tmp_path / "spoiled"
    build_dataset(real["det"], real["lmk"], out, workers=1, progress=False, mix=False)
    monkeypatch.undo()
    assert verify_build_labels(out)[0].ok
    result = CliRunner().invoke(main, ["verify", str(out), "--pixels", "40", "--max-listed", "100"])
    assert result.exit_code == 1
    report, _ = verify_build_pixels(out, 40)
    rotated = [r for r in report.results if abs(r.angle) > 1]
    assert len(rotated) >= 10 and all(r.problem for r in rotated)
    assert all(r.angle != 0 for r in report.failures)
    for r in report.failures:
        assert f"sample {r.index} (landmark mirrored rotated" in result.output or \
            f"sample {r.index} (landmark rotated" in result.output


def test_rotated_crops_follow_the_documented_sampling_points() -> None:
    """Rotated "linear" crops read each output pixel's crop point once (no warp of the window then a
    resize, which blurs and shifts texture by tens of levels); "area" ones still box-average the warped
    window. Fine texture, a hard edge, crops shrunk, kept and enlarged, over the border, mirrored."""
    rng = np.random.default_rng(11)
    image = cv2.resize(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), (320, 240), interpolation=cv2.INTER_LINEAR)
    image[100:180, 150:260] = 255
    records = np.zeros(5, SAMPLE_DTYPE)
    records["crop"] = [[30, 20, 180, 170], [130, 90, 210, 170], [200, 150, 224, 174], [-30, -20, 90, 100],
                       [250, 160, 340, 250]]
    records["angle"] = [4.7, -3.1, 2.2, -4.9, 1.3]
    records["mirror"] = [0, 1, 0, 1, 1]
    for interpolation in ("linear", "area"):
        for size in (12, 24, 48):
            stored = samplers.render(image, records, size, interpolation)
            for rec, pixels in zip(records, stored, strict=True):
                mine = recut(image, rec["crop"], float(rec["angle"]), bool(rec["mirror"]), size, interpolation)
                diff = np.abs(pixels.astype(int) - mine)
                assert diff.mean() <= TOLERANCE.mean / 2 and diff.max() <= TOLERANCE.max / 2, \
                    (interpolation, size, rec["crop"], diff.mean(), diff.max())


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The same JPEG with an EXIF APP1 segment whose Orientation tag is `orientation`."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01" + \
        struct.pack(">H", orientation) + b"\x00\x00" + b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_pixels_index_the_stored_array_whatever_the_exif_orientation(real: dict, tmp_path: Path) -> None:
    """Annotations index the stored pixel array: the re-cut ignores an EXIF Orientation tag."""
    det = Manifest.read(real["det"])
    source = det.image_paths()
    for rel, path in zip(det.images["rel_path"], source, strict=True):
        tagged = tmp_path / rel
        tagged.parent.mkdir(parents=True, exist_ok=True)
        tagged.write_bytes(_with_orientation(Path(path).read_bytes(), 6))
    first = tmp_path / det.images["rel_path"][0]
    stored = cv2.imread(str(first), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION).shape
    assert cv2.imread(str(first), cv2.IMREAD_COLOR).shape == (stored[1], stored[0], 3)  # the tag is honoured
    ds = ShardedDataset(real["pnet"])
    pixels, records = ds.read_range(0, len(ds))
    detection = records["origin"] == ORIGIN_DETECTIONS
    report = verify_pixels((pixels[detection], records[detection]), det, None, n=30, roots={"wider": str(tmp_path)})
    assert report.ok and len(report.results) == 30, report.summary()


def test_geometry_by_hand() -> None:
    """The oracle's conventions on boxes small enough to work out on paper."""
    assert og.iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == pytest.approx(50 / 150)
    assert og.iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10]), plus_one=True) == pytest.approx(66 / 176)
    assert og.iou(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0])) == 0
    # a degenerate face (zero width) is a 1 px wide region: a crop over half of it covers half
    assert og.ignore_cover(np.array([[0, 0, 10, 5]]), np.array([[4, 0, 4, 10]]))[0, 0] == pytest.approx(0.5)
    crop, face = np.array([[10, 20, 30, 40]]), np.array([[12, 21, 26, 39]])
    np.testing.assert_allclose(og.box_offsets(crop, face, [False]), [[0.1, 0.05, -0.2, -0.05]])
    # mirrored inside the crop: x -> 40 - x, so the face spans 14..28
    np.testing.assert_allclose(og.box_offsets(crop, face, [True]), [[0.2, 0.05, -0.1, -0.05]])
    # 90 degrees counter-clockwise as displayed (y down) about the crop centre (20, 30): right of the
    # centre goes up; then the mirror swaps the two points and flips u
    points = np.array([[[25.0, 30.0], [20.0, 35.0]]])
    np.testing.assert_allclose(og.landmark_targets(points, crop, [90.0], [False], ()), [[[0.5, 0.25], [0.75, 0.5]]],
                               atol=1e-12)
    np.testing.assert_allclose(og.landmark_targets(points, crop, [90.0], [True], ((0, 1),)),
                               [[[0.25, 0.5], [0.5, 0.25]]], atol=1e-12)


def test_mined_face_must_be_the_best_overlap(tmp_path: Path) -> None:
    """For mined samples the best-IoU face decides; PNet positives are cut for a face and keep it."""
    builder = ManifestBuilder("test", "train", "images")
    builder.add_image("img", "img.jpg", width=200, height=200)
    builder.add_faces("img", np.array([[50, 50, 100, 100], [52, 50, 102, 100], [150, 150, 190, 190]], np.float32))
    manifest = builder.build({"roots": {"images": str(tmp_path)}})
    records = np.zeros(3, SAMPLE_DTYPE)
    records["crop"] = [[50, 50, 100, 100], [50, 50, 100, 100], [0, 0, 30, 30]]
    records["label"] = [LABEL_POSITIVE, LABEL_POSITIVE, 0]
    records["face_index"] = [0, 1, 2]  # sample 1: cut for face 1, though face 0 fits it exactly
    faces = manifest.faces[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
    records["bbox"][:2] = og.box_offsets(records["crop"][:2], faces[[0, 1]], [False, False])
    mining = {"min_size": 20, "max_negatives_per_image": 60, "pad_border": False}
    assert verify_labels(records, manifest, None).ok
    report = verify_labels(records, manifest, None, detection_rules=DetectionRules.from_recipes({}, mining))
    assert [(m.index, m.field) for m in report.listed] == [(1, "face_index")]
    records["face_index"][2] = 7  # no such face
    assert [(m.index, m.field) for m in verify_labels(records, manifest, None).listed] == [(2, "face_index")]
