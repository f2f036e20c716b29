"""`facedata build topdown` and its read-time targets: mmpose's centre/scale on a real annotation (numbers from
the spec, not from the code), dots drawn into a real COCO photo found again in the stored crops and in the
augmented inputs (flip, rotation, scale), heatmaps that decode back to the ground truth, the documented skips
(crowd-only images, persons without points) counted, mixed schemes refused, worker-invariant bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.parsers import ingest
from facedata.preview import draw_sample, write_preview
from facedata.readers.heatmaps import TopDownTargets, decode_heatmaps
from facedata.samplers.tasks import ImageTask
from facedata.samplers.topdown import TopDownRecipe, plan_topdown
from facedata.samples import LABEL_LANDMARK
from facedata.storage import ShardedDataset

COCO_MINI = "coco_val2017/coco_mini/annotations/person_keypoints_val2017.json"
COCO_MINI_IMAGES = "coco_val2017/coco_mini/val2017"
PHOTO = "000000000139.jpg"
# joint -> (x, y) of a dot and its BGR colour; joints 1/2 (left/right eye) swap under the coco17 flip
DOTS = {0: ((300, 200), (255, 0, 255)), 1: ((280, 180), (0, 255, 255)), 2: ((320, 185), (255, 255, 0)),
        9: ((270, 250), (0, 0, 255)), 16: ((330, 270), (0, 255, 0))}
PERM = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]  # coco17 flip (mmpose coco.py, spec §5.1)
BOX = [223.2, 132.6, 153.6, 204.8]  # x y w h: aspect 0.75, so zoom = 256 / (204.8 * 1.25) = 1


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def dot_centre(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Centroid of the largest blob of pixels within 60 of `colour` (drawn dots are the only such blobs)."""
    near = (np.abs(image.astype(np.int32) - np.array(colour)).max(axis=2) < 60).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(near)
    assert n > 1, f"dot {colour} not found"
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert stats[biggest, cv2.CC_STAT_AREA] >= 20
    return centroids[biggest]


@pytest.fixture(scope="module")
def dotted(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo with five dots, a person labelled at them, a person without points on the same image,
    and a second image with only a crowd annotation; ingested by the real COCO parser, then built."""
    root = tmp_path_factory.mktemp("dotted")
    images = root / "images"
    images.mkdir()
    photo = cv2.imread(str(realdata / COCO_MINI_IMAGES / PHOTO))
    for (x, y), colour in DOTS.values():
        cv2.circle(photo, (x, y), 5, colour, -1)
    cv2.imwrite(str(images / "dots.png"), photo)
    cv2.imwrite(str(images / "crowd.png"), cv2.imread(str(realdata / COCO_MINI_IMAGES / PHOTO)))
    keypoints = [0] * 51
    for j, ((x, y), _) in DOTS.items():
        keypoints[3 * j : 3 * j + 3] = [x, y, 2]
    raw = json.loads((realdata / COCO_MINI).read_text())
    h, w = photo.shape[:2]
    doc = {
        "images": [{"id": 1, "file_name": "dots.png", "width": w, "height": h},
                   {"id": 2, "file_name": "crowd.png", "width": w, "height": h}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": BOX, "keypoints": keypoints, "num_keypoints": 5,
             "iscrowd": 0, "area": 1000.0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 90], "keypoints": [0] * 51,
             "num_keypoints": 0, "iscrowd": 0, "area": 500.0},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [1, 1, 300, 200], "keypoints": [0] * 51,
             "num_keypoints": 0, "iscrowd": 1, "area": 5000.0},
        ],
        "categories": raw["categories"],
    }
    (root / "dots.json").write_text(json.dumps(doc))
    run("ingest", str(root / "dots.json"), "--images", str(images), "-o", str(root / "dots.parquet"), "-q")
    summary = run("build", "topdown", "--keypoints", str(root / "dots.parquet"), "-o", str(root / "out"),
                  "--workers", "1")  # not -q: the summary table is what is kept
    (root / "summary.txt").write_text(summary)
    return root


def test_dots_land_on_their_pixels_in_the_stored_crop(dotted: Path) -> None:
    data = ShardedDataset(dotted / "out")
    pixels, records = data.read(np.arange(len(data)))
    assert len(data) == 1 and pixels.shape == (1, 320, 240, 3)  # 192x256 input x margin 1.25
    rec = records[0]
    assert rec["visible"].tolist() == [2 if j in DOTS else 0 for j in range(17)]  # the JSON's v
    # independent geometry: centre of the box at the crop centre, zoom 256 / (204.8 * 1.25) = 1
    x, y, w, h = BOX
    for j, ((dx, dy), colour) in DOTS.items():
        expected = np.array([dx - (x + w / 2) + 120, dy - (y + h / 2) + 160])
        assert np.allclose(rec["keypoints"][j], expected, atol=1e-3)
        assert np.allclose(dot_centre(pixels[0], colour), expected, atol=0.5), j
        image_xy = rec["affine"][:, :2] @ [dx, dy] + rec["affine"][:, 2]
        assert np.allclose(image_xy, expected, atol=1e-3)  # the stored affine maps the image to the crop
    assert np.isnan(rec["keypoints"][3]).all()


def test_dots_follow_read_time_flip_rotation_and_scale(dotted: Path) -> None:
    data = ShardedDataset(dotted / "out")
    pixels, records = data.read(np.arange(len(data)))
    seen = set()
    perm = PERM
    targets = TopDownTargets.for_dataset(dotted / "out", seed=7, rotation_prob=1.0)
    for epoch in range(12):
        out = targets(pixels, records, epoch)
        flipped = bool(out["flipped"][0])
        m = out["transform"][0]
        rotation = math.degrees(math.atan2(m[1, 0], m[0, 0]))
        seen.add((flipped, rotation > 1, rotation < -1))
        for j, (_, colour) in DOTS.items():
            k = perm[j] if flipped else j  # where joint j's dot is after the flip
            found = dot_centre(out["image"][0], colour)
            assert np.allclose(found, out["keypoints"][0, k], atol=1.0), (epoch, j)
            assert out["target_weight"][0, k, 0] == 1
        # the heatmaps decode back to the dots in the original image
        decoded, _ = decode_heatmaps(out["target"], out["transform"], targets.input)
        for j, ((dx, dy), _) in DOTS.items():
            k = perm[j] if flipped else j
            zoom = math.hypot(m[0, 0], m[1, 0])
            assert np.abs(decoded[0, k] - [dx, dy]).max() <= 0.5 * 4 / zoom * math.sqrt(2) + 1e-6
        absent = [k for k in range(17) if (perm[k] if flipped else k) not in DOTS]
        assert (out["target_weight"][0, absent, 0] == 0).all() and (out["target"][0, absent] == 0).all()
    assert {(True, True, False), (False, True, False), (True, False, True), (False, False, True)} <= seen


def test_skips_are_counted_in_the_summary(dotted: Path) -> None:
    text = (dotted / "summary.txt").read_text()
    assert "1 crops of 3 annotations; skipped: 1 crowd/ignored, 1 without a labelled point" in text
    assert "images without a crop: 1 (of which only crowd/ignored annotations: 1)" in text
    index = json.loads((dotted / "out" / "index.json").read_text())
    topdown = index["summary"]["topdown"]
    assert (topdown["ignored"], topdown["no_points"], topdown["images_only_ignored"]) == (1, 1, 1)


def test_keep_unlabelled_keeps_persons_without_points(dotted: Path) -> None:
    run("build", "topdown", "--keypoints", str(dotted / "dots.parquet"), "-o", str(dotted / "all"),
        "--keep-unlabelled", "--workers", "1", "-q")
    records = ShardedDataset(dotted / "all").read(np.arange(2))[1]
    assert (records["visible"] > 0).sum(axis=1).tolist() == [5, 0]  # the crowd annotation is still never used
    out = TopDownTargets.for_dataset(dotted / "all")(*ShardedDataset(dotted / "all").read(np.arange(2)))
    assert out["target_weight"][1].sum() == 0


@pytest.fixture(scope="module")
def coco(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    manifest, _ = ingest(realdata / COCO_MINI, images=realdata / COCO_MINI_IMAGES)
    manifest.write(root / "coco.parquet")
    run("build", "topdown", "--keypoints", str(root / "coco.parquet"), "-o", str(root / "w1"), "--workers", "1",
        "-q")
    return root


def test_centre_and_scale_equal_mmpose_on_a_real_annotation(coco: Path) -> None:
    """Spec §9.3 worked example: coco_mini id 200887, centre (443.365, 208.73), scale (1.3013, 1.7351)."""
    records = ShardedDataset(coco / "w1").read(np.arange(len(ShardedDataset(coco / "w1"))))[1]
    row = records[np.argmin(np.abs(records["box"][:, 0] - 388.66))]
    assert np.allclose(row["center"], [443.365, 208.73], atol=1e-3)
    assert np.allclose(row["scale"], [1.3013, 1.7351], atol=1e-4)
    assert math.isclose(row["affine"][0, 0], 0.7377, abs_tol=1e-4)  # the uniform zoom to 192 x 256
    assert (row["visible"] > 0).sum() == 13


def test_heatmaps_of_the_ground_truth_decode_back_to_it(coco: Path) -> None:
    data = ShardedDataset(coco / "w1")
    pixels, records = data.read(np.arange(len(data)))
    gt = np.stack([cv2.invertAffineTransform(a)[:, :2] @ k.T + cv2.invertAffineTransform(a)[:, 2:]
                   for a, k in zip(records["affine"], records["keypoints"].astype(np.float64), strict=True)])
    gt = gt.transpose(0, 2, 1)
    for augment in (False, True):
        out = TopDownTargets.for_dataset(coco / "w1", augment=augment, seed=1)(pixels, records, epoch=3)
        decoded, peak = decode_heatmaps(out["target"], out["transform"], (192, 256))
        grid = np.floor(out["keypoints"] / 4 + 0.5)  # the joint's grid point must lie on the 48 x 64 map
        on_map = (grid >= 0).all(-1) & (grid[..., 0] < 48) & (grid[..., 1] < 64) & (out["target_weight"][..., 0] > 0)
        assert on_map.sum() > 300 and (not augment or 0 < out["flipped"].sum() < len(out["flipped"]))
        expected = np.where(out["flipped"][:, None, None] == 1, gt[:, PERM], gt)  # joint k shows joint PERM[k]
        # the error, seen along the heatmap's axes (rotated and zoomed back), is at most half a heatmap pixel
        err = np.abs(np.einsum("nij,nkj->nki", out["transform"][:, :, :2], decoded - expected)).max(axis=-1) / 4
        assert (err[on_map] <= 0.5 + 1e-6).all() and err[on_map].max() > 0.3
        assert (peak[on_map] == 1).all()


def test_heatmap_is_mmpose_msra_gaussian(coco: Path) -> None:
    targets = TopDownTargets(input=(192, 256), stored=(240, 320), augment=False)
    maps, weight = targets.heatmaps(np.array([[41.0, 30.0], [-40.0, 10.0], [5.0, 5.0]]), np.array([1, 1, 0]))
    mu = (int(41 / 4 + 0.5), int(30 / 4 + 0.5))  # (10, 8)
    yy, xx = np.mgrid[0:64, 0:48]
    window = (np.abs(xx - mu[0]) <= 6) & (np.abs(yy - mu[1]) <= 6)
    expected = np.where(window, np.exp(-((xx - mu[0]) ** 2 + (yy - mu[1]) ** 2) / 8.0), 0)
    assert np.allclose(maps[0], expected, atol=1e-6) and maps[0].max() == 1
    assert weight.tolist() == [1, 0, 0] and not maps[1:].any()  # off the map; not labelled


def test_one_or_two_workers_write_identical_shards(coco: Path) -> None:
    run("build", "topdown", "--keypoints", str(coco / "coco.parquet"), "-o", str(coco / "w2"), "--workers", "2",
        "-q")
    shards = [[s["sha256"] for s in json.loads((coco / d / "index.json").read_text())["shards"]] for d in ("w1", "w2")]
    assert shards[0] == shards[1]


def test_the_library_call_builds_what_the_cli_builds(coco: Path) -> None:
    """`build topdown` only parses options: stages.topdown.build_topdown assembles the recipe (like build pfld),
    so a script gets the CLI's dataset (its default --shard-size 256MB given), fingerprint included."""
    from facedata.stages.topdown import build_topdown

    recipe = {"input": (192, 256), "margin": 1.25, "keep_unlabelled": False, "interpolation": "linear"}
    build_topdown(coco / "coco.parquet", coco / "lib", recipe, workers=1, progress=False, shard_bytes=256 * 10**6)
    cli, lib = (json.loads((coco / d / "index.json").read_text()) for d in ("w1", "lib"))
    assert lib["fingerprint"] == cli["fingerprint"]
    assert [s["sha256"] for s in lib["shards"]] == [s["sha256"] for s in cli["shards"]]


def test_mixed_schemes_are_refused(coco: Path) -> None:
    manifest = Manifest.read(coco / "coco.parquet")
    faces = manifest.faces
    faces.loc[faces.index[faces["scheme"].notna()][0], "scheme"] = "wflw98"
    manifest.write(coco / "mixed.parquet")
    result = CliRunner().invoke(main, ["build", "topdown", "--keypoints", str(coco / "mixed.parquet"),
                                       "-o", str(coco / "mixed")])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: --keypoints: the manifest mixes landmark schemes ['coco17', 'wflw98']: "
                                     "fuse them to one first (facedata fuse --to SCHEME)")


def test_bad_input_option_is_one_line(coco: Path) -> None:
    result = CliRunner().invoke(main, ["build", "topdown", "--keypoints", str(coco / "coco.parquet"),
                                       "-o", str(coco / "bad"), "--input", "192by256"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --input '192by256': expected WIDTHxHEIGHT, e.g. 192x256"


def test_a_face_landmark_manifest_builds_and_refuses_half_body(realdata: Path, tmp_path: Path) -> None:
    run("ingest", str(realdata / "300w/mmpose/test_300w.json"), "--images", str(realdata / "300w/mmpose"),
        "--scheme", "ibug68", "-o", str(tmp_path / "w.parquet"), "-q")
    run("build", "topdown", "--keypoints", str(tmp_path / "w.parquet"), "-o", str(tmp_path / "out"),
        "--input", "256x256", "--margin", "1.5", "--workers", "1", "-q")
    data = ShardedDataset(tmp_path / "out")
    faces = Manifest.read(tmp_path / "w.parquet").faces
    assert data.image_shape == (384, 384, 3) and len(data) == len(faces) > 0
    records = data.read(np.arange(len(data)))[1]
    for rec in records[:5]:
        truth = np.asarray(faces["points"].iloc[rec["face_index"]], np.float64).reshape(68, 2)
        assert np.allclose(rec["affine"][:, :2] @ truth.T + rec["affine"][:, 2:], rec["keypoints"].T, atol=1e-3)
    out = TopDownTargets.for_dataset(tmp_path / "out", seed=2)(*data.read(np.arange(len(data))))
    assert out["target"].shape == (len(data), 68, 64, 48)  # the default heatmap; pass heatmap=(64, 64) for 256x256
    with pytest.raises(FacedataError, match="half-body needs upper-body joints; scheme ibug68 has none"):
        TopDownTargets.for_dataset(tmp_path / "out", half_body=True)


def test_a_box_crossing_the_border_is_clipped_first_as_mmpose() -> None:
    """mmpose clips x2 to width - 1 before _xywh2cs: box (600, 100)-(700, 300) in a 640-wide image has its
    centre at ((600 + 639) / 2, 200) and a width of 39 (so the height sets the scale)."""
    task = ImageTask(image_index=0, image_id="a", path="a.jpg", width=640, height=480, origin=0,
                     boxes=np.array([[600, 100, 700, 300]], np.float32), face_index=np.array([0], np.int32),
                     usable=np.array([True]), points=np.full((1, 17, 2), 5.0, np.float32))
    records, counters = plan_topdown(task, TopDownRecipe(scheme="coco17", num_points=17))
    assert np.allclose(records["center"][0], [619.5, 200.0]) and np.allclose(records["scale"][0], [0.9375, 1.25])
    assert records["box"][0].tolist() == [600, 100, 700, 300] and counters == [1, 1, 0, 0, 0]


def test_preview_draws_the_keypoints_on_topdown_crops(dotted: Path) -> None:
    shown = write_preview(dotted / "out", dotted / "preview.png", cell=160)
    assert shown == {LABEL_LANDMARK: 1} and (dotted / "preview.png").stat().st_size > 0
    pixels, records = ShardedDataset(dotted / "out").read(np.array([0]))
    drawn = draw_sample(pixels[0], records[0], 160)
    zoom = 160 / 320
    for j in DOTS:
        x, y = np.round(records[0]["keypoints"][j] * zoom).astype(int)
        assert drawn[y, x].tolist() == [0, 0, 255]  # the point colour at every labelled keypoint
    assert (drawn[:, 121:] == 0).all()  # 240 x 320 fitted into 160 x 160: black bar on the right


def test_half_body_centres_the_input_on_the_upper_or_lower_joints(coco: Path) -> None:
    """mmpose TopDownHalfBodyTransform: with > 8 labelled joints the input is centred on the mean of the
    upper-body (0-10) or lower-body (11-16) joints; without scale/rotation that mean lands at (96, 128)."""
    data = ShardedDataset(coco / "w1")
    pixels, records = data.read(np.arange(len(data)))
    targets = TopDownTargets.for_dataset(coco / "w1", half_body=True, flip=False, seed=4, half_body_prob=1.0,
                                         scale_factor=0.0, rotation_prob=0.0)
    out = targets(pixels, records, 0)
    many = (records["visible"] > 0).sum(axis=1) > 8
    assert many.sum() >= 10
    groups = (np.arange(17) < 11, np.arange(17) >= 11)
    centred = []
    for i in np.flatnonzero(many):
        labelled = records["visible"][i] > 0
        means = [out["keypoints"][i][labelled & g].mean(axis=0) for g in groups if (labelled & g).sum() > 2]
        centred.append(min(np.abs(m - [96, 128]).max() for m in means))
    assert max(centred) < 1e-3
    few = np.flatnonzero(~many)[0]  # too few joints: the whole-box crop, the central window of the stored crop
    assert np.allclose(out["transform"][few], records["affine"][few] - [[0, 0, 24], [0, 0, 32]], atol=1e-4)


def test_stored_visibility_equals_the_coco_json(coco: Path, realdata: Path) -> None:
    """COCO's v = 1 (labelled, hidden) and v = 2 (visible) survive into the records, matched by image and box."""
    doc = json.loads((realdata / COCO_MINI).read_text())
    names = {img["id"]: img["file_name"] for img in doc["images"]}
    by_box = {(names[a["image_id"]], *np.round(a["bbox"], 2)): a["keypoints"][2::3] for a in doc["annotations"]}
    data = ShardedDataset(coco / "w1")
    records = data.read(np.arange(len(data)))[1]
    files = Manifest.read(coco / "coco.parquet").images["rel_path"].tolist()
    for rec in records:
        x1, y1, x2, y2 = (float(v) for v in rec["box"])
        key = (files[rec["image_index"]], *np.round([x1, y1, x2 - x1, y2 - y1], 2))
        assert rec["visible"].tolist() == by_box[key], key
    assert {1, 2} <= set(np.unique(records["visible"]).tolist())


def test_targets_for_a_wrong_or_damaged_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(FacedataError, match="index.json: not found"):
        TopDownTargets.for_dataset(tmp_path / "nowhere")
    (tmp_path / "index.json").write_text("")
    with pytest.raises(FacedataError, match="index.json: not valid JSON"):
        TopDownTargets.for_dataset(tmp_path)
