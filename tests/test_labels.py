"""The label oracle re-derives planned labels exactly and catches tampered records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_samplers import cuhk_manifest, wider_manifest

from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.oracle import DetectionRules, verify_labels
from facedata.samplers import (
    CropRecipe,
    LandmarkRecipe,
    image_tasks,
    label_boxes,
    offsets_for,
    plan_crops,
    plan_landmarks,
)
from facedata.samples import (
    LABEL_LANDMARK,
    LABEL_NEGATIVE,
    LABEL_PART,
    LABEL_POSITIVE,
    NO_FACE,
    ORIGIN_DETECTIONS,
    ORIGIN_LANDMARKS,
    SAMPLE_DTYPE,
)


@pytest.fixture(scope="module")
def manifests(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Manifest]:
    """Both manifests after a real Parquet round trip, as `verify --labels` reads them."""
    folder = tmp_path_factory.mktemp("manifests")
    wider_manifest(realdata).write(folder / "wider.parquet")
    cuhk_manifest(realdata, limit=40).write(folder / "cuhk.parquet")
    return Manifest.read(folder / "wider.parquet"), Manifest.read(folder / "cuhk.parquet")


@pytest.fixture(scope="module")
def planned(manifests: tuple[Manifest, Manifest]) -> np.ndarray:
    det, lmk = manifests
    crops = [plan_crops(t, CropRecipe(), 4) for t in image_tasks(det, ORIGIN_DETECTIONS, ignore_under=20)]
    marks = [plan_landmarks(t, LandmarkRecipe(), 4) for t in image_tasks(lmk, ORIGIN_LANDMARKS, ignore_under=20)]
    return np.concatenate(crops + marks)


def _first(
    records: np.ndarray, label: int, origin: int = ORIGIN_DETECTIONS, where: np.ndarray | None = None
) -> int:
    mask = (records["label"] == label) & (records["origin"] == origin)
    if where is not None:
        mask &= where
    return int(np.flatnonzero(mask)[0])


def test_planned_records_verify_clean(planned: np.ndarray, manifests: tuple[Manifest, Manifest]) -> None:
    report = verify_labels(planned, *manifests)
    assert report.ok, report.summary()
    assert report.checked == len(planned)
    for label in (LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_PART, LABEL_LANDMARK):
        assert report.by_label[label] == int((planned["label"] == label).sum()) > 0
    # chunked input (as a streaming reader gives it) is the same
    chunks = np.array_split(planned, 7)
    assert verify_labels(iter(chunks), *manifests).ok


def test_tampered_records_are_reported(planned: np.ndarray, manifests: tuple[Manifest, Manifest]) -> None:
    det, _ = manifests
    records = planned.copy()
    pos = _first(records, LABEL_POSITIVE)
    records["label"][pos] = LABEL_NEGATIVE  # flipped label
    part = _first(records, LABEL_PART)
    records["bbox"][part, 2] += 0.01  # perturbed offset
    near = np.abs(planned["landmarks"][:, 0] - (1 - planned["landmarks"][:, 2])) > 0.01
    mark = _first(records, LABEL_LANDMARK, ORIGIN_LANDMARKS, near)
    records["mirror"][mark] ^= 1  # flipped mirror flag
    second_pos = _first(records, LABEL_POSITIVE, where=np.arange(len(records)) > pos)
    records["mirror"][second_pos] ^= 1  # a mirrored positive needs mirrored offsets
    report = verify_labels(np.array_split(records, 3), *manifests, max_listed=10)
    assert not report.ok
    listed = {(m.index, m.field) for m in report.listed}
    assert (pos, "label") in listed and (pos, "bbox") in listed  # a negative with IoU >= 0.65 and offsets
    assert (part, "bbox") in listed
    assert (mark, "landmarks") in listed
    assert (second_pos, "bbox") in listed
    assert report.samples_with_mismatch == 4
    assert "sample" in report.summary()


def test_face_and_index_errors(planned: np.ndarray, manifests: tuple[Manifest, Manifest]) -> None:
    det, lmk = manifests
    records = planned.copy()
    tasks = list(image_tasks(det, ORIGIN_DETECTIONS, ignore_under=20))
    pos = _first(records, LABEL_POSITIVE)
    task = tasks[int(records["image_index"][pos])]
    records["face_index"][pos] = task.face_index[~task.usable][0]  # a tiny face: ignore region
    other = _first(records, LABEL_PART)
    records["image_index"][other] = len(det.images) + 3
    mark = _first(records, LABEL_LANDMARK, ORIGIN_LANDMARKS)
    records["crop"][mark] += [60, 0, 60, 0]
    report = verify_labels(records, det, lmk)
    fields = {m.index: m.field for m in report.listed}
    assert fields[pos] == "face_index" and fields[other] == "image_index"
    assert "crop" in {m.field for m in report.listed if m.index == mark}
    with pytest.raises(FacedataError, match="landmark manifest"):
        verify_labels(records, det, None)


def test_stricter_thresholds_flag_samples(planned: np.ndarray, manifests: tuple[Manifest, Manifest]) -> None:
    report = verify_labels(planned, *manifests, detection_rules=DetectionRules(positive_iou=0.8))
    assert report.by_field.get("label", 0) > 0
    assert set(report.by_field) == {"label"}


def test_labelled_detections_verify(manifests: tuple[Manifest, Manifest]) -> None:
    """Arbitrary boxes labelled with label_boxes + offsets_for (the hard-example path) pass verification."""
    det, _ = manifests
    recipe = CropRecipe()
    rng = np.random.default_rng(0)
    parts = []
    for task in image_tasks(det, ORIGIN_DETECTIONS, ignore_under=20):
        centres = task.boxes[rng.integers(0, len(task.boxes), 400)]
        side = np.maximum(centres[:, 2] - centres[:, 0], centres[:, 3] - centres[:, 1])
        side = np.rint(side * rng.uniform(0.7, 1.5, len(side))) + 20
        cx = (centres[:, 0] + centres[:, 2]) / 2 + rng.normal(0, 8, len(side))
        cy = (centres[:, 1] + centres[:, 3]) / 2 + rng.normal(0, 8, len(side))
        x1, y1 = np.rint(cx - side / 2), np.rint(cy - side / 2)
        boxes = np.stack([x1, y1, x1 + side, y1 + side], 1)
        labels, best = label_boxes(boxes, task.boxes, task.usable, recipe)
        keep = labels != -128
        out = np.zeros(int(keep.sum()), SAMPLE_DTYPE)
        out["label"], out["image_index"], out["crop"] = labels[keep], task.image_index, boxes[keep]
        out["face_index"] = NO_FACE
        faced = best[keep] >= 0
        out["face_index"][faced] = task.face_index[best[keep][faced]]
        out["bbox"][faced] = offsets_for(boxes[keep][faced], task.boxes[best[keep][faced]])
        parts.append(out)
    records = np.concatenate(parts)
    assert {0, 1, -1} <= set(records["label"].tolist())
    report = verify_labels(records, det, None, detection_rules=DetectionRules(pad_border=True))
    assert report.ok, report.summary()


def test_verify_agrees_when_tasks_used_a_smaller_ignore_under(manifests: tuple[Manifest, Manifest]) -> None:
    """The recipe's ignore_under decides sampling and ignore regions, not the one image_tasks was given."""
    det, _ = manifests
    tasks = list(image_tasks(det, ORIGIN_DETECTIONS, ignore_under=5))
    sides = [np.minimum(t.boxes[:, 2] - t.boxes[:, 0], t.boxes[:, 3] - t.boxes[:, 1]) for t in tasks]
    assert any((t.usable & (side < 20)).any() for t, side in zip(tasks, sides, strict=True))
    records = np.concatenate([plan_crops(t, CropRecipe(), 9) for t in tasks])
    report = verify_labels(records, det, None)
    assert report.ok, report.summary()
    small = CropRecipe(ignore_under=5)
    records = np.concatenate([plan_crops(t, small, 9) for t in tasks])
    assert verify_labels(records, det, None, detection_rules=DetectionRules.from_recipes(small)).ok
    assert not verify_labels(records, det, None).ok  # tiny-face positives are ignore regions at 20 px
