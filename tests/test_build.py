"""`facedata build`: end to end on the demo corpus, real images, real LMDB/Parquet, real onnxruntime.

Checked: integrity (verify_dataset), labels re-derived from the manifests (verify_labels: 0 mismatches),
byte-identical shards for any worker count / chunking, resume after an interruption ends byte-identical,
unreadable images skipped and named (strict stops), RNet mining with a real ONNX PNet, the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from build_fixtures import demo_manifests
from click.testing import CliRunner
from onnx_models import mtcnn_pnet, mtcnn_rnet

from facedata.build import (
    PROGRESS_NAME,
    CascadeFactory,
    build_dataset,
    format_summary,
    parse_ratio,
    parse_size,
)
from facedata.buildplan import PLAN_FILES
from facedata.buildworker import interleaved_stream
from facedata.cli import main
from facedata.detect import CascadeConfig
from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.oracle import check_inputs, verify_build_labels
from facedata.samplers import CropRecipe
from facedata.samplers.mined import MiningRecipe
from facedata.storage import ShardedDataset, verify_dataset
from facedata.storage.index import load_index

# Small shards so the demo corpus spans several of them (resume and roll-over are exercised).
SMALL = {"shard_bytes": 256 * 552, "block_samples": 128}


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return demo_manifests(tmp_path_factory.mktemp("build_corpus"), seed=3)


def shard_hashes(path: Path) -> list[str]:
    return [entry["sha256"] for entry in load_index(path)["shards"]]


def check_dataset(path: Path, det: Manifest, lmk: Manifest | None) -> None:
    assert verify_dataset(path) == []
    report, notes = verify_build_labels(path, det, lmk)
    assert notes == []
    assert report.checked == len(ShardedDataset(path)) > 0
    assert report.mismatches == 0, report.summary()


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_pnet_build_is_sound_and_labels_rederive(corpus: dict, tmp_path: Path, backend: str) -> None:
    out = tmp_path / "out"
    summary = build_dataset(corpus["det"], corpus["lmk"], out, backend=backend, workers=1, progress=False,
                            seed=5, **SMALL)
    check_dataset(out, corpus["det"], corpus["lmk"])
    index = load_index(out)
    counts = summary["label_counts"]
    assert all(counts[name] > 0 for name in ("negative", "positive", "part", "landmark"))
    assert sum(counts.values()) == summary["samples"] == index["samples"]
    assert summary["shards"] == len(index["shards"]) > 2
    # the mix keeps every positive and at most 1 part per positive (3:1:1:2, positives are the anchor)
    plan = summary["mixing"]
    assert counts["positive"] == plan["counts"]["1"]
    assert counts["part"] <= counts["positive"] * 1.3
    prov = index["provenance"]
    assert prov["seed"] == 5 and prov["stage"] == "pnet" and prov["backend"] == backend
    assert prov["crop_recipe"]["negatives_per_image"] == CropRecipe().negatives_per_image
    assert prov["ratio"]["negative"] == 3
    assert len(prov["inputs"]["detections"]["sha256"]) == 64
    assert index["summary"]["skipped"] == []
    assert not (out / PROGRESS_NAME).exists()
    # the samples' pixels are the crops of the source images: re-cut a few by hand
    ds = ShardedDataset(out)
    pixels, records = ds.read(np.arange(0, len(ds), 97))
    paths = corpus["det"].image_paths()
    for px, rec in zip(pixels, records, strict=True):
        if rec["origin"] != 0 or rec["angle"] != 0 or rec["mirror"]:
            continue
        image = cv2.imread(paths.iloc[int(rec["image_index"])], cv2.IMREAD_COLOR)
        x1, y1, x2, y2 = (int(v) for v in rec["crop"])
        expected = cv2.resize(image[y1:y2, x1:x2], (12, 12), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(px, expected)
    text = format_summary(summary)
    assert "positive" in text and "shortage" not in text  # 100 shifts x 2 per landmark face: no shortage


def test_worker_count_and_chunking_do_not_change_a_byte(corpus: dict, tmp_path: Path) -> None:
    runs = [(1, 1), (2, 3), (2, 7)]
    hashes = []
    for workers, chunk in runs:
        out = tmp_path / f"w{workers}c{chunk}"
        build_dataset(corpus["det"], corpus["lmk"], out, workers=workers, chunk_images=chunk,
                      progress=False, **SMALL)
        hashes.append(shard_hashes(out))
    assert len(hashes[0]) > 2
    assert hashes[0] == hashes[1] == hashes[2]
    other = tmp_path / "seed1"
    build_dataset(corpus["det"], corpus["lmk"], other, workers=1, seed=1, progress=False, **SMALL)
    assert shard_hashes(other) != hashes[0]


def test_pnet_without_mixing_writes_every_planned_sample_in_one_pass(corpus: dict, tmp_path: Path) -> None:
    hashes = []
    for workers in (1, 2):
        out = tmp_path / f"all{workers}"
        summary = build_dataset(corpus["det"], corpus["lmk"], out, workers=workers, mix=False, progress=False,
                                **SMALL)
        hashes.append(shard_hashes(out))
    assert hashes[0] == hashes[1]
    assert summary["label_counts"] == summary["planned"] and summary["shortages"] == []
    assert load_index(out)["provenance"]["ratio"] is None
    check_dataset(out, corpus["det"], corpus["lmk"])


def test_landmark_images_are_interleaved_with_detection_images(corpus: dict, tmp_path: Path) -> None:
    """Landmark samples are spread over the whole stream (every shard), not written after all detection
    samples, so a unit-local shuffle mixes the classes on any backend (issue 8 §5)."""
    stream = interleaved_stream(5, 2)
    assert stream.tolist() == [0, 5, 1, 2, 3, 6, 4]  # detection i at (i + 1/2) / 5, landmark k at (k + 1/2) / 2
    big = interleaved_stream(1000, 333)
    assert sorted(big.tolist()) == list(range(1333))
    for part in (big[big < 1000], big[big >= 1000]):
        assert (np.diff(part) > 0).all()  # each manifest keeps its own order
    landmark_at = np.flatnonzero(big >= 1000)
    assert np.abs(landmark_at / 1333 - (np.arange(333) + 0.5) / 333).max() < 0.01  # evenly spread

    out = tmp_path / "mixed"
    build_dataset(corpus["det"], corpus["lmk"], out, workers=1, mix=False, progress=False, **SMALL)
    labels = ShardedDataset(out).labels()
    positions = np.flatnonzero(labels == -2) / len(labels)
    assert positions.min() < 0.1 and positions.max() > 0.9
    # the longest run without a landmark sample is about one detection image's samples, not the whole
    # detection part (before: all landmark samples after every detection sample)
    assert np.diff(positions).max() < 0.1, np.diff(positions).max()


@pytest.mark.parametrize("keep_progress", [True, False])
def test_interrupted_build_resumes_byte_identical(corpus: dict, tmp_path: Path, keep_progress: bool) -> None:
    reference = tmp_path / "reference"
    build_dataset(corpus["det"], corpus["lmk"], reference, workers=1, progress=False, **SMALL)

    out = tmp_path / "resumed"

    def stop(position: int) -> None:
        if position > 900:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_dataset(corpus["det"], corpus["lmk"], out, workers=2, chunk_images=2, progress=False,
                      on_write=stop, **SMALL)
    assert not (out / "index.json").exists()
    partial = json.loads((out / "index.partial.json").read_text())
    assert len(partial["shards"]) >= 2
    assert (out / PROGRESS_NAME).exists()
    if not keep_progress:  # the slow path: regenerate the stream and drop what is already durable
        (out / PROGRESS_NAME).unlink()
    summary = build_dataset(corpus["det"], corpus["lmk"], out, workers=2, progress=False, **SMALL)
    assert summary["resumed_from_sample"] == len(partial["shards"]) * partial["samples_per_shard"]
    if keep_progress:
        assert summary["resumed_from_image"] > 0
    assert shard_hashes(out) == shard_hashes(reference)
    assert load_index(out)["label_counts"] == load_index(reference)["label_counts"]
    check_dataset(out, corpus["det"], corpus["lmk"])


def test_flipped_byte_is_reported_with_the_shard_name(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_dataset(corpus["det"], None, out, workers=1, progress=False, backend="parquet", **SMALL)
    shard = out / load_index(out)["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = verify_dataset(out)
    assert problems and all(p.file == shard.name for p in problems)


@pytest.mark.parametrize("mix", [True, False])  # two passes, and one
def test_unreadable_and_missing_images_are_skipped_and_named(corpus: dict, tmp_path: Path, mix: bool) -> None:
    det: Manifest = corpus["det"]
    images = tmp_path / "images"
    shutil.copytree(corpus["corpus"].wider_images, images)
    rel = det.images["rel_path"].tolist()
    (images / rel[5]).write_bytes(b"not a jpeg")
    (images / rel[7]).unlink()
    roots = {str(det.images["root"].iloc[0]): str(images)}
    summary = build_dataset(det, None, tmp_path / "out", workers=2, roots=roots, progress=False, mix=mix,
                            **SMALL)
    skipped = {Path(item["path"]).name: item["reason"] for item in summary["skipped"]}
    assert set(skipped) == {Path(rel[5]).name, Path(rel[7]).name}
    assert "decoded" in skipped[Path(rel[5]).name] and "not found" in skipped[Path(rel[7]).name]
    check_dataset(tmp_path / "out", det, None)
    with pytest.raises(FacedataError, match="not found|cannot be decoded"):
        build_dataset(det, None, tmp_path / "strict", workers=1, roots=roots, progress=False, strict=True, mix=mix)


def test_resume_with_the_plan_behind_the_shards_names_each_skipped_image_once(corpus: dict, tmp_path: Path) -> None:
    """One pass, interrupted after shards completed, plan files lost: the rerun re-plans from image 0 and
    re-renders images whose samples are already durable; a skipped image among them is named once."""
    det: Manifest = corpus["det"]
    images = tmp_path / "images"
    shutil.copytree(corpus["corpus"].wider_images, images)
    rel = det.images["rel_path"].tolist()
    (images / rel[1]).unlink()
    roots = {str(det.images["root"].iloc[0]): str(images)}
    options = {"roots": roots, "progress": False, "mix": False, **SMALL}
    reference = build_dataset(det, None, tmp_path / "reference", workers=1, **options)

    def stop(position: int) -> None:
        if position > reference["samples"] // 2:
            raise Interrupt

    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        build_dataset(det, None, out, workers=1, chunk_images=2, on_write=stop, **options)
    for name in PLAN_FILES:
        (out / name).unlink()
    summary = build_dataset(det, None, out, workers=1, **options)
    assert summary["resumed_from_sample"] > 0 and summary["resumed_plan_from_image"] == 0
    assert [Path(item["path"]).name for item in summary["skipped"]] == [Path(rel[1]).name]
    assert shard_hashes(out) == shard_hashes(tmp_path / "reference")


def test_verify_labels_warns_on_other_manifests_and_finds_mismatches(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_dataset(corpus["det"], corpus["lmk"], out, workers=1, progress=False, **SMALL)
    det = corpus["det"]
    moved = Manifest(det.images, det.faces.assign(x1=det.faces["x1"] + 3), det.provenance)
    assert check_inputs(load_index(out), moved, corpus["lmk"])
    report, notes = verify_build_labels(out, moved, corpus["lmk"])
    assert notes and report.mismatches > 0


def test_option_parsers() -> None:
    assert parse_size("256MB") == 256_000_000 and parse_size("64MiB") == 64 << 20
    assert parse_size("1000") == 1000
    assert parse_ratio("3:1:1:2") == {0: 3, 1: 1, -1: 1, -2: 2}
    assert parse_ratio("all") is None
    for bad in ("3:1:1", "a:b:c:d"):
        with pytest.raises(FacedataError):
            parse_ratio(bad)
    with pytest.raises(FacedataError):
        parse_size("12 parsecs")


# ------------------------------------------------------------------------------------------ mining


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("models")
    # Random MTCNN-shaped weights, biased towards "face" so the cascade proposes plenty of boxes.
    return {"pnet": mtcnn_pnet(root / "pnet.onnx", seed=1, prob_bias=0.8),
            "rnet": mtcnn_rnet(root / "rnet.onnx", seed=2, prob_bias=3.0)}


def test_rnet_mining_labels_verify_and_worker_invariance(corpus: dict, models: dict, tmp_path: Path) -> None:
    factory = CascadeFactory(str(models["pnet"]), config=CascadeConfig(pyramid_min_face=40))
    recipe = MiningRecipe(size=24, max_negatives_per_image=20)
    hashes = []
    for workers in (1, 2):
        out = tmp_path / f"rnet{workers}"
        summary = build_dataset(
            corpus["small"], corpus["lmk"], out, stage="rnet", detector=factory, mining_recipe=recipe,
            workers=workers, progress=False, shard_bytes=128 * 1800, block_samples=128, mix=False,
        )
        hashes.append(shard_hashes(out))
    check_dataset(out, corpus["small"], corpus["lmk"])
    assert hashes[0] == hashes[1] and len(hashes[0]) >= 2
    mining = summary["mining"]
    counts = summary["label_counts"]
    assert mining["detections"]["detections"] > 0
    assert sum(mining["detections_per_image"].values()) == mining["images"] == len(corpus["small"].images)
    assert mining["before_cap"]["negative"] >= mining["after_cap"]["negative"] == counts["negative"]
    assert counts["negative"] <= 20 * len(corpus["small"].images)
    assert counts["positive"] == mining["after_cap"]["positive"] > 0
    assert counts["landmark"] == summary["planned"]["landmark"]
    report = pd.read_csv(out / summary["mining"]["per_image_report"])
    assert len(report) == len(corpus["small"].images) and (report["status"] == "mined").all()
    assert report["detections"].sum() == mining["detections"]["detections"]
    assert report["negatives_kept"].sum() == counts["negative"]
    index = load_index(out)
    assert index["image_shape"] == [24, 24, 3]
    assert index["provenance"]["detector"]["pnet"]["sha256"]
    assert index["provenance"]["ratio"] is None
    assert "mined" in format_summary(summary)


def test_mined_samples_are_mixed_like_pnet_samples(corpus: dict, models: dict, tmp_path: Path) -> None:
    """Every class, mined or landmark, is kept at the ratio relative to the mined positives."""
    factory = CascadeFactory(str(models["pnet"]), config=CascadeConfig(pyramid_min_face=40))
    ratio = {0: 2, 1: 1, -1: 1, -2: 1}
    summary = build_dataset(
        corpus["small"], corpus["lmk"], tmp_path / "mixed", stage="rnet", detector=factory, ratio=ratio,
        workers=1, progress=False,
    )
    planned, counts, plan = summary["planned"], summary["label_counts"], summary["mixing"]
    assert counts["positive"] == planned["positive"] > 0  # the anchor is kept whole
    for name, label in (("negative", 0), ("part", -1), ("landmark", -2)):
        assert counts[name] <= planned[name]
        wanted = plan["wanted"][str(label)]
        if wanted < planned[name]:  # subsampled by a per-sample hash: near the wanted count
            assert abs(counts[name] - wanted) <= 4 * np.sqrt(wanted) + 2
    assert counts["negative"] < summary["mining"]["after_cap"]["negative"]
    check_dataset(tmp_path / "mixed", corpus["small"], corpus["lmk"])


@pytest.mark.parametrize(("mix", "phase"), [(True, "mining"), (True, "rendering"), (False, "single pass")])
def test_interrupted_mining_build_resumes_byte_identical(
    corpus: dict, models: dict, tmp_path: Path, mix: bool, phase: str
) -> None:
    """Stopped while mining, a rerun runs the detector only on the images not yet mined; stopped while
    writing, it resumes from the complete shards; without mixing (one pass) it does both. Every case ends
    byte-identical to an uninterrupted build."""
    factory = CascadeFactory(str(models["pnet"]), config=CascadeConfig(pyramid_min_face=40))
    options = {"stage": "rnet", "detector": factory, "progress": False, "shard_bytes": 16 * 1800,
               "block_samples": 16, "mix": mix, "ratio": {0: 40, 1: 1, -1: 1, -2: 1}}
    reference = tmp_path / "reference"
    total = build_dataset(corpus["small"], corpus["lmk"], reference, workers=1, **options)["samples"]
    images = len(corpus["small"].images) + len(corpus["lmk"].images)

    def stop(count: int) -> None:
        if count >= (4 if phase == "mining" else total // 2):
            raise Interrupt

    out = tmp_path / "resumed"
    hook = {"on_plan": stop} if phase == "mining" else {"on_write": stop}
    with pytest.raises(Interrupt):
        build_dataset(corpus["small"], corpus["lmk"], out, workers=2, chunk_images=2, **hook, **options)
    summary = build_dataset(corpus["small"], corpus["lmk"], out, workers=2, **options)
    if phase == "mining":
        assert summary["resumed_plan_from_image"] == 4 and summary["resumed_from_sample"] == 0
    elif phase == "rendering":
        assert summary["resumed_plan_from_image"] == images and summary["resumed_from_sample"] > 0
    else:
        assert 0 < summary["resumed_plan_from_image"] < images and summary["resumed_from_sample"] > 0
    assert summary["mining"]["images"] == len(corpus["small"].images)
    assert total > 4 * 16 and summary["samples"] == total
    assert shard_hashes(out) == shard_hashes(reference)
    assert not any((out / name).exists() for name in PLAN_FILES)
    check_dataset(out, corpus["small"], corpus["lmk"])


def test_mined_image_of_the_wrong_size_is_skipped_with_its_detail(corpus: dict, models: dict, tmp_path: Path) -> None:
    small: Manifest = corpus["small"]
    images = small.images.copy()
    images.loc[0, "width"] += 7
    wrong = Manifest(images, small.faces, small.provenance)
    factory = CascadeFactory(str(models["pnet"]), config=CascadeConfig(pyramid_min_face=40))
    summary = build_dataset(wrong, None, tmp_path / "out", stage="rnet", detector=factory, workers=1,
                            progress=False, ratio={0: 40, 1: 1, -1: 1, -2: 1})
    (item,) = summary["skipped"]
    assert item["image_id"] == images.loc[0, "image_id"]
    assert "decoded size differs" in item["reason"] and "manifest says" in item["reason"]


def test_onet_mining_build_runs_pnet_and_rnet(corpus: dict, models: dict, tmp_path: Path) -> None:
    factory = CascadeFactory(str(models["pnet"]), str(models["rnet"]), config=CascadeConfig(pyramid_min_face=40))
    out = tmp_path / "onet"
    summary = build_dataset(corpus["small"], corpus["lmk"], out, stage="onet", detector=factory, workers=1,
                            progress=False)
    assert ShardedDataset(out).image_shape == (48, 48, 3)
    assert summary["mining"]["images"] == len(corpus["small"].images)
    check_dataset(out, corpus["small"], corpus["lmk"])


def test_build_rejects_wrong_sizes_and_missing_detector(corpus: dict, tmp_path: Path) -> None:
    with pytest.raises(FacedataError, match="12 px"):
        build_dataset(corpus["det"], None, tmp_path / "a", crop_recipe=CropRecipe(size=24), progress=False)
    with pytest.raises(FacedataError, match="detector"):
        build_dataset(corpus["det"], None, tmp_path / "b", stage="rnet", progress=False)


# --------------------------------------------------------------------------------------------- CLI


def test_cli_build_verify_preview(corpus: dict, models: dict, tmp_path: Path) -> None:
    root = corpus["root"]
    runner = CliRunner()
    out = tmp_path / "pnet"
    result = runner.invoke(main, [
        "build", "pnet", "--detections", str(root / "det.parquet"), "--landmarks", str(root / "lmk.parquet"),
        "-o", str(out), "--workers", "1", "--shard-size", "200KB", "--ratio", "3:1:1:1",
        "--negatives-per-image", "20", "--interpolation", "area", "--no-mirror",
    ])
    assert result.exit_code == 0, result.output
    assert "positive" in result.output and "shards" in result.output
    prov = load_index(out)["provenance"]
    assert prov["crop_recipe"]["negatives_per_image"] == 20 and prov["crop_recipe"]["interpolation"] == "area"
    assert prov["landmark_recipe"]["mirror"] is False and prov["ratio"]["landmark"] == 1

    result = runner.invoke(main, ["verify", str(out), "--labels", "--detections", str(root / "det.parquet"),
                                  "--landmarks", str(root / "lmk.parquet")])
    assert result.exit_code == 0, result.output
    assert "0 mismatches" in result.output

    sheet = tmp_path / "sheet.png"
    result = runner.invoke(main, ["preview", str(out), "-o", str(sheet), "--per-label", "4", "--cell", "48"])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[1] == 8 * 52 + 4 and image.shape[0] > 4 * 48

    result = runner.invoke(main, [
        "build", "rnet", "--detections", str(root / "det_small.parquet"), "-o", str(tmp_path / "rnet"),
        "--pnet", str(models["pnet"]), "--workers", "1", "--pyramid-min-face", "40", "--max-neg-per-image", "10",
        "--pad-border",
    ])
    assert result.exit_code == 0, result.output
    assert "mined" in result.output
    prov = load_index(tmp_path / "rnet")["provenance"]
    assert prov["mining_recipe"]["max_negatives_per_image"] == 10 and prov["mining_recipe"]["pad_border"]
    assert prov["detector"]["config"]["pyramid_min_face"] == 40

    result = runner.invoke(main, ["build", "pnet", "--detections", str(root / "det.parquet"), "-o",
                                  str(tmp_path / "bad"), "--ratio", "1:2"])
    assert result.exit_code == 2 and "ratio" in result.output


def test_a_build_renders_on_one_opencv_thread_and_gives_the_caller_its_threads_back(
    corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV 5.1's warpAffine gives other pixels on other thread counts, so an in-process build (workers=1)
    renders on one thread, as pool and Dask workers do, whatever its caller set; the caller's setting returns."""
    seen: list[int] = []
    resize = cv2.resize

    def counting_resize(*args, **kwargs):
        seen.append(cv2.getNumThreads())
        return resize(*args, **kwargs)

    monkeypatch.setattr(cv2, "resize", counting_resize)  # what the crop renderer calls
    previous = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        build_dataset(corpus["det"], corpus["lmk"], tmp_path / "out", workers=1, progress=False, **SMALL)
        assert seen and set(seen) == {1}
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(previous)
