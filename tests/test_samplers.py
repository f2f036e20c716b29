"""Samplers on real WIDER train images (GT from the official .mat) and real CUHK net_7876 faces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import scipy.io

from facedata.errors import FacedataError
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest, ManifestBuilder
from facedata.samplers import (
    RECIPES,
    SAMPLERS,
    CropRecipe,
    ImageTask,
    LandmarkRecipe,
    classify,
    image_tasks,
    iou_matrix,
    label_boxes,
    mixing_plan,
    plan_crops,
    plan_landmarks,
    render,
    select,
)
from facedata.samplers.geometry import landmark_targets
from facedata.samplers.iou import coverage_matrix, iou_pairs
from facedata.samples import (
    LABEL_LANDMARK,
    LABEL_NEGATIVE,
    LABEL_PART,
    LABEL_POSITIVE,
    ORIGIN_DETECTIONS,
    ORIGIN_LANDMARKS,
    SAMPLE_DTYPE,
)

WIDER_IMAGES = (
    "36--Football/36_Football_americanfootball_ball_36_415",
    "7--Cheering/7_Cheering_Cheering_7_16",
)


def wider_manifest(realdata: Path, invalid_faces: dict[str, list[int]] | None = None) -> Manifest:
    """The two WIDER train images in realdata/wflw with their official GT (x y w h -> x1 y1 x2 y2)."""
    mat = scipy.io.loadmat(realdata / "wider_face" / "wider_face_train.mat")
    images_dir = realdata / "wflw" / "WFLW_images"
    builder = ManifestBuilder("wider_face", "train", "wider")
    for e, event in enumerate(str(x[0][0]) for x in mat["event_list"]):
        files = [str(f[0][0]) for f in mat["file_list"][e][0]]
        for f, name in enumerate(files):
            image_id = f"{event}/{name}"
            if image_id not in WIDER_IMAGES:
                continue
            h, w = cv2.imread(str(images_dir / f"{image_id}.jpg")).shape[:2]
            xywh = mat["face_bbx_list"][e][0][f][0].astype(np.float32)
            invalid = mat["invalid_label_list"][e][0][f][0].ravel().astype(bool)
            invalid[(invalid_faces or {}).get(image_id, [])] = True
            builder.add_image(image_id, f"{image_id}.jpg", width=w, height=h, event=event)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            builder.add_faces(image_id, xyxy, invalid=invalid)
    return builder.build({"roots": {"wider": str(images_dir)}})


def cuhk_manifest(realdata: Path, limit: int = 60) -> Manifest:
    """trainImageList.txt lines (x1 x2 y1 y2 + 5 points) whose image exists in realdata."""
    folder = realdata / "lfw_net_7876"
    builder = ManifestBuilder("cuhk_lfw_net", "train", "cuhk")
    lines = (folder / "trainImageList.txt").read_text().splitlines()
    added = 0
    for number, line in enumerate(lines, 1):
        fields = line.split()
        rel = fields[0].replace("\\", "/")
        if not (folder / rel).exists():
            continue
        h, w = cv2.imread(str(folder / rel)).shape[:2]
        x1, x2, y1, y2 = (float(v) for v in fields[1:5])
        points = np.asarray(fields[5:15], np.float32).reshape(1, 5, 2)
        builder.add_image(rel, rel, width=w, height=h)
        builder.add_faces(rel, np.array([[x1, y1, x2, y2]]), scheme="mtcnn5", points=points,
                          source_lines=np.array([number]))
        added += 1
        if added >= limit:
            break
    return builder.build({"roots": {"cuhk": str(folder)}})


@pytest.fixture(scope="module")
def wider(realdata: Path) -> Manifest:
    return wider_manifest(realdata)


@pytest.fixture(scope="module")
def cuhk(realdata: Path) -> Manifest:
    return cuhk_manifest(realdata)


def wider_tasks(manifest: Manifest, recipe: CropRecipe | None = None) -> list[ImageTask]:
    return list(image_tasks(manifest, ORIGIN_DETECTIONS, min_face=(recipe or CropRecipe()).min_face))


def _raster(box: np.ndarray, shape: tuple[int, int], inclusive: bool) -> np.ndarray:
    mask = np.zeros(shape, bool)
    x1, y1, x2, y2 = box.astype(int)
    mask[y1 : y2 + inclusive, x1 : x2 + inclusive] = True
    return mask


@pytest.mark.parametrize("plus_one", [False, True])
def test_iou_matches_pixel_counts(plus_one: bool) -> None:
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 30, size=(40, 2))
    wh = rng.integers(0, 15, size=(40, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    got = iou_matrix(boxes[:20], boxes[20:], plus_one=plus_one)
    for i in range(20):
        a = _raster(boxes[i], (50, 50), plus_one)
        for j in range(20):
            b = _raster(boxes[20 + j], (50, 50), plus_one)
            union = (a | b).sum()
            assert got[i, j] == pytest.approx((a & b).sum() / union if union else 0.0)
    assert np.allclose(iou_pairs(boxes[:20], boxes[20:], plus_one=plus_one), np.diag(got))


def test_classify_thresholds() -> None:
    recipe = CropRecipe()
    labels = classify(np.array([0.0, 0.2999, 0.3, 0.3999, 0.4, 0.6499, 0.65, 1.0]), recipe)
    assert labels.tolist() == [0, 0, -128, -128, -1, -1, 1, 1]


def test_image_tasks_from_manifest(wider: Manifest) -> None:
    tasks = wider_tasks(wider)
    assert [t.image_id for t in tasks] == list(wider.images["image_id"])
    assert sum(len(t.boxes) for t in tasks) == len(wider.faces) == 14 + 19  # published counts (SOURCES.md)
    for task in tasks:
        assert Path(task.path).is_file() and task.points is None
        side = np.maximum(task.boxes[:, 2] - task.boxes[:, 0], task.boxes[:, 3] - task.boxes[:, 1])
        assert np.array_equal(task.usable, side >= 20)
        assert np.array_equal(wider.faces.loc[task.face_index, "x1"].to_numpy(), task.boxes[:, 0])
    unsized = Manifest(wider.images.assign(width=None), wider.faces, wider.provenance)
    with pytest.raises(FacedataError, match="--images"):
        next(image_tasks(unsized, ORIGIN_DETECTIONS, min_face=20))


def test_plan_crops_is_deterministic(wider: Manifest) -> None:
    forward = [plan_crops(t, CropRecipe(), seed=7).tobytes() for t in wider_tasks(wider)]
    backward = [plan_crops(t, CropRecipe(), seed=7).tobytes() for t in reversed(wider_tasks(wider))]
    assert forward == backward[::-1]  # no state carried between images (any worker split)
    for task in wider_tasks(wider):
        a = plan_crops(task, CropRecipe(), seed=7)
        b = plan_crops(task, CropRecipe(), seed=7)
        c = plan_crops(task, CropRecipe(), seed=8)
        assert a.dtype == SAMPLE_DTYPE and len(a) > 0
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() != c.tobytes()


def test_plan_crops_labels_follow_iou_rules(wider: Manifest) -> None:
    recipe = CropRecipe()
    totals = dict.fromkeys((LABEL_POSITIVE, LABEL_PART, LABEL_NEGATIVE), 0)
    for task in wider_tasks(wider):
        records = plan_crops(task, recipe, seed=1)
        crops = records["crop"].astype(np.float64)
        assert np.array_equal(crops, np.round(crops))
        assert (crops[:, 2] - crops[:, 0] == crops[:, 3] - crops[:, 1]).all()
        assert (crops[:, :2] >= 0).all()
        assert (crops[:, 2] <= task.width).all() and (crops[:, 3] <= task.height).all()
        labels = records["label"]
        for label in totals:
            totals[label] += int((labels == label).sum())
        # positives / parts: IoU with their own face, which must be usable
        face_pos = {int(f): k for k, f in enumerate(task.face_index)}
        sampled = labels != LABEL_NEGATIVE
        own = np.array([face_pos[int(f)] for f in records["face_index"][sampled]])
        assert task.usable[own].all()
        iou = iou_pairs(crops[sampled], task.boxes[own])
        assert (iou[labels[sampled] == LABEL_POSITIVE] >= 0.65).all()
        part_iou = iou[labels[sampled] == LABEL_PART]
        assert ((part_iou >= 0.4) & (part_iou < 0.65)).all()
        # offsets reconstruct the face box: gt = crop + offset * size
        size = crops[sampled, 2:3] - crops[sampled, 0:1]
        rebuilt = crops[sampled] + records["bbox"][sampled] * size
        assert np.allclose(rebuilt, task.boxes[own], atol=1e-3)
        # negatives: < 0.3 with every face, no pixel of any ignore region
        neg = crops[labels == LABEL_NEGATIVE]
        assert (iou_matrix(neg, task.boxes).max(axis=1) < 0.3).all()
        assert (coverage_matrix(neg, task.boxes[~task.usable]) == 0).all()
        assert not records["bbox"][labels == LABEL_NEGATIVE].any()
        assert (records["face_index"][:50] == -1).all()  # random negatives first
    assert all(n > 0 for n in totals.values()), totals


def test_invalid_and_degenerate_faces_are_ignore_regions(realdata: Path) -> None:
    football = WIDER_IMAGES[0]
    manifest = wider_manifest(realdata, invalid_faces={football: [0, 1]})
    task = next(t for t in wider_tasks(manifest) if t.image_id == football)
    assert not task.usable[:2].any()
    # add a degenerate (zero-width) box where a face is
    degenerate = np.array([[300.0, 300.0, 300.0, 340.0]], np.float32)
    task = replace(
        task,
        boxes=np.concatenate([task.boxes, degenerate]),
        face_index=np.append(task.face_index, 999).astype(np.int32),
        usable=np.append(task.usable, False),
    )
    recipe = CropRecipe(negatives_per_image=400, negative_max_tries=4000)
    records = plan_crops(task, recipe, seed=3)
    assert not np.isin(records["face_index"], task.face_index[~task.usable]).any()
    neg = records["crop"][records["label"] == LABEL_NEGATIVE]
    assert len(neg) > 50
    assert (coverage_matrix(neg, task.boxes[~task.usable]) == 0).all()
    # a crop over the degenerate box would be a negative by IoU alone; the ignore rule rejects it
    probe = np.array([[280.0, 290.0, 330.0, 340.0]])
    assert label_boxes(probe, task.boxes, task.usable, recipe)[0][0] != LABEL_NEGATIVE
    assert label_boxes(probe, task.boxes[:-1], task.usable[:-1], recipe)[0][0] == LABEL_NEGATIVE


def _task(width: int, height: int, boxes: np.ndarray) -> ImageTask:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return ImageTask(0, "synthetic", "", width, height, ORIGIN_DETECTIONS, boxes,
                     np.arange(len(boxes), dtype=np.int32), side >= 20, None)


def test_zero_face_image_gives_negatives_only(wider: Manifest) -> None:
    task = wider_tasks(wider)[0]
    empty = replace(task, boxes=np.zeros((0, 4), np.float32), face_index=np.zeros(0, np.int32),
                    usable=np.zeros(0, bool))
    records = plan_crops(empty, CropRecipe(), seed=0)
    assert len(records) == 50 and (records["label"] == LABEL_NEGATIVE).all()
    sides = records["crop"][:, 2] - records["crop"][:, 0]
    assert sides.min() >= 12 and sides.max() <= min(task.width, task.height) // 2


def test_negative_loop_is_bounded_on_tiny_images() -> None:
    covered = _task(14, 14, [[0, 0, 14, 14]])
    assert (plan_crops(covered, CropRecipe(), seed=0)["label"] != LABEL_NEGATIVE).all()
    free = plan_crops(_task(14, 14, np.zeros((0, 4))), CropRecipe(), seed=0)
    assert len(free) == 50 and (free["crop"][:, 2] - free["crop"][:, 0] == 12).all()
    assert len(plan_crops(_task(11, 40, np.zeros((0, 4))), CropRecipe(), seed=0)) == 0


def test_stage_recipes_serve_24_and_48(wider: Manifest) -> None:
    assert SAMPLERS.get("crops").origin == ORIGIN_DETECTIONS
    for stage, size in (("pnet", 12), ("rnet", 24), ("onet", 48)):
        recipe = RECIPES.get(stage).crops
        assert recipe.size == size
        task = wider_tasks(wider, recipe)[1]
        records = plan_crops(task, recipe, seed=2)
        neg = records["crop"][records["label"] == LABEL_NEGATIVE]
        assert (neg[:, 2] - neg[:, 0] >= size).all()
        image = cv2.imread(task.path)
        assert render(image, records[:20], size).shape == (20, size, size, 3)
    with pytest.raises(FacedataError):
        CropRecipe(part_iou=0.7)
    with pytest.raises(FacedataError):
        CropRecipe(interpolation="cubic")


def test_render_cuts_exact_pixels_and_pads(wider: Manifest) -> None:
    task = wider_tasks(wider)[0]
    image = cv2.imread(task.path)
    records = np.zeros(4, SAMPLE_DTYPE)
    records["crop"] = [[100, 50, 112, 62], [100, 50, 112, 62], [-6, -6, 6, 6], [200, 100, 296, 196]]
    records["mirror"][1] = 1
    out = render(image, records, 12)
    assert out.dtype == np.uint8 and out.shape == (4, 12, 12, 3)
    assert np.array_equal(out[0], image[50:62, 100:112])
    assert np.array_equal(out[1], image[50:62, 100:112][:, ::-1])
    assert not out[2, :6].any() and not out[2, :, :6].any()
    assert np.array_equal(out[2, 6:, 6:], image[:6, :6])
    area = render(image, records[3:], 12, "area")
    expected = cv2.resize(image[100:196, 200:296], (12, 12), interpolation=cv2.INTER_AREA)
    assert np.array_equal(area[0], expected)
    records["crop"][0, 0] = 100.5
    with pytest.raises(ValueError, match="whole pixels"):
        render(image, records, 12)


def test_render_agrees_with_landmark_targets() -> None:
    """A bright dot drawn at each point lands where landmark_targets says, after rotation + mirror."""
    image = np.zeros((200, 240, 3), np.uint8)
    points = np.array([[[90.0, 80.0], [140.0, 84.0], [118.0, 110.0], [96.0, 140.0], [136.0, 142.0]]])
    crops = np.array([[60.0, 40.0, 180.0, 160.0]])
    perm = SCHEMES.get("mtcnn5").flip_permutation
    for angle, mirror in ((0.0, False), (17.0, False), (-23.0, True), (5.0, True)):
        records = np.zeros(1, SAMPLE_DTYPE)
        records["crop"], records["angle"], records["mirror"] = crops, angle, mirror
        flip = records["mirror"] != 0
        targets = landmark_targets(points, crops, records["angle"], flip, perm)[0]
        for k, (x, y) in enumerate(points[0]):
            single = image.copy()
            cv2.circle(single, (int(x), int(y)), 2, (255, 255, 255), -1)  # centred on pixel centre x + 0.5
            out = render(single, records, 120)[0, :, :, 0].astype(np.float64)
            ys, xs = np.nonzero(out > 0)
            weight = out[ys, xs]
            centre = np.array([(xs + 0.5) @ weight, (ys + 0.5) @ weight]) / weight.sum() / 120
            expected = landmark_targets(points + 0.5, crops, records["angle"], flip, perm)[0]
            k_out = int(np.flatnonzero(perm == k)[0]) if mirror else k
            assert np.allclose(centre, expected[k_out], atol=0.15 / 120), (angle, mirror, k)
        assert ((targets >= 0) & (targets <= 1)).all()


def test_landmark_samples_on_cuhk(cuhk: Manifest) -> None:
    recipe = LandmarkRecipe()
    tasks = list(image_tasks(cuhk, ORIGIN_LANDMARKS, min_face=recipe.min_face))
    assert len(tasks) == len(cuhk.images) and tasks[0].points.shape == (1, 5, 2)
    records = np.concatenate([plan_landmarks(t, recipe, seed=5) for t in tasks])
    assert len(records) > 5 * len(tasks)
    assert (records["label"] == LABEL_LANDMARK).all() and (records["origin"] == ORIGIN_LANDMARKS).all()
    targets = records["landmarks"].reshape(-1, 5, 2)
    assert ((targets >= 0) & (targets <= 1)).all()
    assert (np.abs(records["angle"]) <= 5).all() and np.abs(records["angle"]).max() > 1
    assert 0.35 < records["mirror"].mean() < 0.65
    # the scheme's swap keeps the subject's left eye / mouth corner on the image left after mirroring
    assert (targets[:, 0, 0] < targets[:, 1, 0]).all() and (targets[:, 3, 0] < targets[:, 4, 0]).all()
    by_image = {t.image_index: t for t in tasks}
    crops = records["crop"].astype(np.float64)
    boxes = np.stack([by_image[int(i)].boxes[0] for i in records["image_index"]])
    assert (iou_pairs(crops, boxes) > 0.65).all()
    again = np.concatenate([plan_landmarks(t, recipe, seed=5) for t in tasks])
    other = np.concatenate([plan_landmarks(t, recipe, seed=6) for t in tasks])
    assert again.tobytes() == records.tobytes() and other.tobytes() != records.tobytes()
    fixed = replace(recipe, mirror=False, max_rotation=0)
    still = np.concatenate([plan_landmarks(t, fixed, 5) for t in tasks])
    assert not still["mirror"].any() and not still["angle"].any()
    image = cv2.imread(tasks[0].path)
    mine = records[records["image_index"] == 0]
    assert render(image, mine, 12).shape == (len(mine), 12, 12, 3)


def test_mirror_swaps_left_and_right_points() -> None:
    """Synthetic face: after mirroring, the point named left eye is the mirrored right eye."""
    points = np.array([[[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]]])
    crop = np.array([[0.0, 0.0, 100.0, 100.0]])
    perm = SCHEMES.get("mtcnn5").flip_permutation
    plain = landmark_targets(points, crop, np.zeros(1), np.zeros(1, bool), perm)[0]
    flipped = landmark_targets(points, crop, np.zeros(1), np.ones(1, bool), perm)[0]
    assert flipped[0, 0] < flipped[1, 0] and flipped[3, 0] < flipped[4, 0]
    assert np.allclose(flipped[0], [1 - plain[1, 0], plain[1, 1]])
    assert np.allclose(flipped[2], [1 - plain[2, 0], plain[2, 1]])
    task = ImageTask(0, "face", "", 100, 100, ORIGIN_LANDMARKS, np.array([[10, 10, 90, 90]], np.float32),
                     np.zeros(1, np.int32), np.ones(1, bool), points.astype(np.float32))
    records = plan_landmarks(task, LandmarkRecipe(shifts_per_face=40, max_rotation=0), seed=0)
    assert records["mirror"].any() and not records["mirror"].all()
    t = records["landmarks"].reshape(-1, 5, 2)
    assert (t[:, 0, 0] < t[:, 1, 0]).all()


def _fake_image_records(rng: np.random.Generator, counts: dict[int, int]) -> np.ndarray:
    labels = np.concatenate([np.full(n, label, np.int8) for label, n in counts.items()])
    records = np.zeros(len(labels), SAMPLE_DTYPE)
    records["label"] = rng.permutation(labels)
    return records


def test_mixing_follows_ratio_without_repeats() -> None:
    rng = np.random.default_rng(0)
    images = [(f"img{i}", _fake_image_records(rng, {0: 60, 1: 10, -1: 14, -2: 25})) for i in range(300)]
    counts = {0: 18000, 1: 3000, -1: 4200, -2: 7500}
    plan = mixing_plan(counts, {0: 3, 1: 1, -1: 1, -2: 2})
    assert plan.shortages == [] and plan.keep[1] == 1.0
    kept = [select(r, name, 11, plan) for name, r in images]
    assert [k.tobytes() for k in kept] == [select(r, name, 11, plan).tobytes() for name, r in images]
    got = np.concatenate(kept)["label"]
    for label, factor in ((0, 3), (1, 1), (-1, 1), (-2, 2)):
        n = int((got == label).sum())
        assert abs(n - factor * 3000) < 4 * np.sqrt(factor * 3000) + 1, (label, n)
    # a subset of each image's records, in order, never duplicated
    for (_, records), chosen in zip(images, kept, strict=True):
        assert len(chosen) <= len(records)
    other = np.concatenate([select(r, name, 12, plan) for name, r in images])
    assert len(other) != len(got) or other.tobytes() != np.concatenate(kept).tobytes()


def test_mixing_reports_shortage_and_repeats_only_when_allowed() -> None:
    counts = {0: 9000, 1: 2000, -1: 1500, -2: 1234}
    plan = mixing_plan(counts, None)
    assert any(s.startswith("landmark: 1,234 available, 4,000 wanted") for s in plan.shortages)
    assert any(s.startswith("part: 1,500 available, 2,000 wanted") for s in plan.shortages)
    assert plan.keep[-2] == 1.0 and plan.repeat[-2] == 1.0
    records = np.zeros(1234, SAMPLE_DTYPE)
    records["label"] = LABEL_LANDMARK
    assert len(select(records, "x", 0, plan)) == 1234
    repeat = mixing_plan(counts, None, allow_repeat=True)
    assert repeat.repeat[-2] == pytest.approx(4000 / 1234)
    records["face_index"] = np.arange(1234)
    out = select(records, "x", 0, repeat)
    assert abs(len(out) - 4000) < 150
    copies = np.bincount(out["face_index"], minlength=1234)
    assert set(copies.tolist()) <= {3, 4}
    with pytest.raises(FacedataError):
        mixing_plan({0: 10}, None)


def _with_ignore(manifest: Manifest, ignore: np.ndarray) -> Manifest:
    return Manifest(manifest.images, manifest.faces.assign(ignore=ignore), manifest.provenance)


def test_ignore_column_makes_faces_ignore_regions_everywhere(wider: Manifest) -> None:
    """A face kept as an ignore region by a filter is never sampled, whatever its size, and no negative
    overlaps it; without the column the same faces are usable (the rule works either way)."""
    plain = wider_tasks(wider)
    large = [int(np.flatnonzero(t.usable)[0]) for t in plain]  # one large valid face per image
    ignore = np.zeros(len(wider.faces), bool)
    ignore[[int(t.face_index[k]) for t, k in zip(plain, large, strict=True)]] = True
    flagged_tasks = wider_tasks(_with_ignore(wider, ignore))
    recipe = CropRecipe(negatives_per_image=300, negative_max_tries=3000)
    for before, after, k in zip(plain, flagged_tasks, large, strict=True):
        assert before.usable[k] and not after.usable[k]
        assert (after.usable == before.usable & ~ignore[after.face_index]).all()
        records = plan_crops(after, recipe, seed=1)
        assert int(after.face_index[k]) not in records["face_index"].tolist()
        neg = records["crop"][records["label"] == LABEL_NEGATIVE]
        assert (coverage_matrix(neg, after.boxes[[k]]) == 0).all()
    # a missing value in the column counts as not ignored
    column = wider.faces.assign(ignore=pd.array([None] * len(wider.faces), dtype="boolean"))["ignore"]
    unknown = wider_tasks(_with_ignore(wider, column))
    assert all((u.usable == p.usable).all() for u, p in zip(unknown, plain, strict=True))


def test_one_usable_rule_for_filter_stats_and_samplers(wider: Manifest) -> None:
    """drop_invalid, stats' invalid_or_degenerate and the samplers' usable mask are the same rule."""
    from facedata.faces import flagged_rows, usable_rows
    from facedata.filters import DropInvalid
    from facedata.stats import compute_stats

    faces = wider.faces.copy()
    faces.loc[faces.index[:3], "x2"] = faces.loc[faces.index[:3], "x1"]  # degenerate, column not updated
    manifest = Manifest(wider.images, faces, wider.provenance)
    flagged = flagged_rows(faces)
    assert flagged[:3].all()
    assert compute_stats(manifest)["flags"]["invalid_or_degenerate"] == int(flagged.sum())
    assert len(DropInvalid().apply(manifest).faces) == int((~flagged).sum())
    usable = np.concatenate([t.usable for t in wider_tasks(manifest)])
    order = np.concatenate([t.face_index for t in wider_tasks(manifest)])
    assert (usable == usable_rows(faces, CropRecipe().min_face)[order]).all()
