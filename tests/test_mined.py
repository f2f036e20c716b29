"""Labelling of mined detections (RNet/ONet hard examples) against the manifest's faces."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.errors import FacedataError
from facedata.manifest import ManifestBuilder
from facedata.oracle import DetectionRules, verify_labels
from facedata.samplers.iou import iou_matrix
from facedata.samplers.mined import MiningCounts, MiningRecipe, label_detections
from facedata.samplers.render import render
from facedata.samplers.tasks import ImageTask, image_tasks
from facedata.samples import LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE, NO_FACE, ORIGIN_DETECTIONS

W, H = 400, 300
# face 0, face 1 usable; face 2 invalid (ignore region); face 3 tiny (ignore region)
FACES = np.array(
    [[100, 100, 160, 160], [250, 50, 330, 130], [20, 200, 80, 260], [350, 250, 360, 260]], np.float32
)
INVALID = np.array([False, False, True, False])


def _manifest(tmp_path):
    b = ManifestBuilder("test", "train", "images")
    b.add_image("img0", "img0.jpg", width=W, height=H)
    b.add_faces("img0", FACES, invalid=INVALID)
    return b.build({"roots": {"images": str(tmp_path)}})


def _rules(recipe: MiningRecipe) -> DetectionRules:
    """The oracle's rules for samples labelled with `recipe` (as a build records them)."""
    return DetectionRules.from_recipes(recipe.crop_recipe(), recipe)


def _task(tmp_path) -> ImageTask:
    return next(image_tasks(_manifest(tmp_path), ORIGIN_DETECTIONS, ignore_under=20))


def _negatives(n: int, rng: np.random.Generator) -> np.ndarray:
    """n boxes in the empty top-left corner region (no face near)."""
    x = rng.uniform(0, 50, n)
    y = rng.uniform(0, 40, n)
    s = rng.uniform(25, 45, n)
    return np.stack([x, y, x + s, y + s], axis=1)


def test_classes_offsets_and_verify(tmp_path):
    task = _task(tmp_path)
    assert task.usable.tolist() == [True, True, False, False]
    dets = np.array(
        [
            [101, 99, 161, 159],  # positive for face 0
            [250, 50, 330, 130],  # positive for face 1 (exact)
            [115, 115, 175, 175],  # IoU ≈ 0.39 with face 0: between part and negative → dropped
            [110, 110, 170, 170],  # IoU ≈ 0.53 with face 0 → part
            [5, 5, 40, 40],  # negative
            [22, 198, 82, 258],  # on the invalid face: dropped, not negative
            [300, 200, 365, 265],  # IoU ~0 with every face but covers the tiny face: not a negative
            [100, 100, 110, 110],  # side 10 < 20: dropped
            [-10, 5, 30, 45],  # crosses the border: skipped
            [5.2, 5.1, 40.2, 40.1],  # rounds to the same square as the negative above: duplicate
        ]
    )
    recipe = MiningRecipe(size=24)
    records, counts = label_detections(dets, task, recipe, seed=0)
    assert records["label"].tolist() == [LABEL_POSITIVE, LABEL_POSITIVE, LABEL_PART, LABEL_NEGATIVE]
    assert records["face_index"].tolist() == [0, 1, 0, NO_FACE]
    assert counts == MiningCounts(
        detections=10,
        small=1,
        border=1,
        duplicates=1,
        positives=2,
        parts=1,
        negatives=1,
        negatives_kept=1,
        dropped=3,
    )
    crop = records["crop"][0]
    side = crop[2] - crop[0]
    assert side == crop[3] - crop[1] and np.array_equal(crop, np.round(crop))
    np.testing.assert_allclose(records["bbox"][0], (FACES[0] - crop) / side, atol=1e-6)
    assert (records["bbox"][3] == 0).all() and (records["landmarks"] == 0).all()
    assert (records["image_index"] == 0).all() and (records["origin"] == ORIGIN_DETECTIONS).all()

    report = verify_labels(records, _manifest(tmp_path), detection_rules=_rules(recipe))
    assert report.checked == 4 and report.mismatches == 0, report
    pixels = render(np.zeros((H, W, 3), np.uint8), records, recipe.size)
    assert pixels.shape == (4, 24, 24, 3)


def test_negative_cap_is_deterministic_and_seeded(tmp_path):
    task = _task(tmp_path)
    dets = np.concatenate([_negatives(200, np.random.default_rng(1)), FACES[:2]])
    recipe = MiningRecipe(max_negatives_per_image=15)
    a, counts = label_detections(dets, task, recipe, seed=3)
    b, _ = label_detections(dets, task, recipe, seed=3)
    c, _ = label_detections(dets, task, recipe, seed=4)
    assert counts.negatives > 15 and counts.negatives_kept == 15 and counts.positives == 2
    assert (a["label"] == LABEL_NEGATIVE).sum() == 15
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()  # another seed keeps other negatives
    # kept samples stay in detection order: the positives (last detections) come last
    assert a["label"][-2:].tolist() == [LABEL_POSITIVE, LABEL_POSITIVE]
    first, _ = label_detections(
        dets, task, MiningRecipe(max_negatives_per_image=15, negative_choice="first"), seed=3
    )
    all_neg, _ = label_detections(dets, task, MiningRecipe(max_negatives_per_image=10**6), seed=3)
    np.testing.assert_array_equal(first["crop"][:15], all_neg["crop"][:15])
    # kept negatives are a subset of all negatives
    neg_all = {tuple(x) for x in all_neg["crop"][all_neg["label"] == 0].tolist()}
    assert {tuple(x) for x in a["crop"][a["label"] == 0].tolist()} <= neg_all


def test_pad_border_keeps_border_boxes(tmp_path):
    task = _task(tmp_path)
    dets = np.array([[-10, 5, 30, 45], [380, 280, 420, 320], [-100, -100, -50, -50], [95, 95, 155, 155]])
    skipped, counts = label_detections(dets, task, MiningRecipe(), seed=0)
    assert len(skipped) == 1 and counts.border == 3
    padded_recipe = MiningRecipe(pad_border=True)
    padded, counts = label_detections(dets, task, padded_recipe, seed=0)
    assert counts.border == 1  # the box wholly outside the image
    assert padded["label"].tolist() == [LABEL_NEGATIVE, LABEL_NEGATIVE, LABEL_POSITIVE]
    pixels = render(np.full((H, W, 3), 255, np.uint8), padded, 24)
    assert (pixels[0, :, :3] == 0).all() and (pixels[0, :, -3:] == 255).all()  # zero padding on the left
    assert verify_labels(padded, _manifest(tmp_path), detection_rules=_rules(padded_recipe)).mismatches == 0
    # without pad_border recorded, the oracle flags the border crops
    assert verify_labels(padded, _manifest(tmp_path), detection_rules=_rules(MiningRecipe())).by_field == {"crop": 2}


def test_negatives_never_touch_ignore_regions(tmp_path):
    task = _task(tmp_path)
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 350, (3000, 2))
    dets = np.concatenate([xy, xy + rng.uniform(20, 80, (3000, 1))], axis=1)
    uncapped = MiningRecipe(max_negatives_per_image=10**6)
    records, counts = label_detections(dets, task, uncapped, seed=0)
    neg = records["crop"][records["label"] == LABEL_NEGATIVE]
    assert len(neg) > 100 and counts.dropped > 0
    ignore = FACES[~task.usable]
    ix = np.minimum(neg[:, None, 2], ignore[None, :, 2]) - np.maximum(neg[:, None, 0], ignore[None, :, 0])
    iy = np.minimum(neg[:, None, 3], ignore[None, :, 3]) - np.maximum(neg[:, None, 1], ignore[None, :, 1])
    assert not ((ix > 0) & (iy > 0)).any()
    assert (iou_matrix(neg, FACES).max(axis=1) < 0.3).all()
    assert verify_labels(records, _manifest(tmp_path), detection_rules=_rules(uncapped)).mismatches == 0
    # the oracle counts negatives per image against the recorded cap
    capped = verify_labels(records, _manifest(tmp_path), detection_rules=_rules(MiningRecipe()))
    assert capped.by_field == {"label": len(neg) - 60}


def test_empty_and_bad_inputs(tmp_path):
    task = _task(tmp_path)
    records, counts = label_detections(np.zeros((0, 4)), task, MiningRecipe(), seed=0)
    assert len(records) == 0 and counts == MiningCounts()
    total = counts + MiningCounts(detections=2, positives=1)
    assert total.detections == 2 and total.samples == 1
    with pytest.raises(FacedataError):
        MiningRecipe(negative_choice="best")
    with pytest.raises(FacedataError):
        MiningRecipe(part_iou=0.9)
