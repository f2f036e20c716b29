"""`verify --labels`: re-derive every sample's targets from the manifests and its stored provenance.

For each record (image_index, face_index, origin, crop, mirror, angle) the IoU class, box offsets and
landmark targets are recomputed with the samplers' own helpers (facedata.samplers.geometry / iou), so a
correct build has 0 mismatches. Rules checked, by label:
- negative (0): max IoU with every face of the image < negative_iou and ignore regions covered at most
  `ignore_cover`; bbox and landmarks 0.
- positive (1) / part (-1): face_index is a usable face of that image; classify(IoU(crop, face)) equals
  the label; bbox equals offsets_for(crop, face, mirror); landmarks 0.
- landmark (-2, landmark manifest only): face_index is a usable face with all points; IoU(crop, face) >
  min_iou; landmarks equal landmark_targets(...) and lie in [0, 1]; bbox 0; |angle| <= max_rotation.
Non-landmark samples must have angle 0. Float targets are compared with an absolute tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.samplers.crops import CropRecipe, classify
from facedata.samplers.geometry import landmark_targets, offsets_for
from facedata.samplers.iou import coverage_matrix, iou_matrix, iou_pairs
from facedata.samplers.landmarks import LandmarkRecipe
from facedata.samplers.tasks import FaceArrays, face_arrays
from facedata.samples import (
    LABEL_LANDMARK,
    LABEL_NAMES,
    LABEL_NEGATIVE,
    LABEL_PART,
    LABEL_POSITIVE,
    ORIGIN_DETECTIONS,
    ORIGIN_LANDMARKS,
)

CHUNK = 1 << 16


@dataclass(frozen=True)
class Mismatch:
    index: int  # sample index in dataset order
    field: str
    label: int
    message: str

    def __str__(self) -> str:
        name = LABEL_NAMES.get(self.label, self.label)
        return f"sample {self.index} ({name}): {self.field}: {self.message}"


@dataclass
class LabelReport:
    checked: int = 0
    samples_with_mismatch: int = 0
    mismatches: int = 0  # (sample, field) pairs
    by_field: dict[str, int] = field(default_factory=dict)
    by_label: dict[int, int] = field(default_factory=dict)  # samples checked per label
    listed: list[Mismatch] = field(default_factory=list)  # the first `max_listed`, by sample index

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def summary(self) -> str:
        labels = ", ".join(f"{LABEL_NAMES.get(k, k)} {v:,}" for k, v in sorted(self.by_label.items()))
        head = f"checked {self.checked:,} samples ({labels}): {self.samples_with_mismatch:,} with mismatches"
        if self.ok:
            return head
        fields = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_field.items()))
        return "\n".join([f"{head} ({fields})", *(f"  {m}" for m in self.listed)])


class _Checks:
    """Accumulates per-field bad masks of one chunk, then folds them into the report."""

    def __init__(self, records: np.ndarray, start: int) -> None:
        self.records, self.start = records, start
        self.items: list[tuple[str, np.ndarray, np.ndarray, Callable[[int], str]]] = []

    def add(self, name: str, rows: np.ndarray, bad: np.ndarray, describe: Callable[[int], str]) -> None:
        """`bad` flags positions `rows` of the chunk; describe(k) explains the k-th of them."""
        if bad.any():
            self.items.append((name, rows, bad, describe))

    def fold(self, report: LabelReport, max_listed: int) -> None:
        any_bad = np.zeros(len(self.records), bool)
        found: list[Mismatch] = []
        for name, rows, bad, describe in self.items:
            where = np.flatnonzero(bad)
            any_bad[rows[where]] = True
            report.mismatches += len(where)
            report.by_field[name] = report.by_field.get(name, 0) + len(where)
            for k in where[: max(0, max_listed - len(report.listed))].tolist():
                row = int(rows[k])
                found.append(Mismatch(self.start + row, name, int(self.records["label"][row]), describe(k)))
        report.samples_with_mismatch += int(any_bad.sum())
        found.sort(key=lambda m: (m.index, m.field))
        report.listed.extend(found[: max(0, max_listed - len(report.listed))])


def _record_chunks(dataset: Any) -> Iterator[np.ndarray]:
    """Record arrays from an array, an iterable of arrays / (pixels, records) pairs, or a reader with
    __len__ and read_range(start, stop)."""

    def records_of(item: Any) -> np.ndarray:
        if isinstance(item, tuple):
            item = next(x for x in item if isinstance(x, np.ndarray) and x.dtype.names)
        return np.asarray(item)

    if isinstance(dataset, np.ndarray):
        for start in range(0, len(dataset), CHUNK):
            yield dataset[start : start + CHUNK]
    elif hasattr(dataset, "read_range"):
        total = len(dataset)
        for start in range(0, total, CHUNK):
            yield records_of(dataset.read_range(start, min(total, start + CHUNK)))
    else:
        for item in dataset:
            yield records_of(item)


def _zero_check(checks: _Checks, rows: np.ndarray, name: str) -> None:
    values = checks.records[name][rows].reshape(len(rows), -1)
    bad = (values != 0).any(axis=1)
    checks.add(name, rows, bad, lambda k: f"expected zeros, found {values[k].tolist()}")


def _close_check(checks: _Checks, rows: np.ndarray, name: str, expected: np.ndarray, atol: float) -> None:
    found = checks.records[name][rows].reshape(len(rows), -1).astype(np.float64)
    exp = np.asarray(expected, np.float64).reshape(len(rows), -1)
    bad = ~(np.abs(found - exp) <= atol).all(axis=1)
    checks.add(
        name, rows, bad, lambda k: f"expected {exp[k].round(6).tolist()}, found {found[k].round(6).tolist()}"
    )


def _face_check(
    checks: _Checks, rows: np.ndarray, faces: FaceArrays, usable: np.ndarray
) -> np.ndarray:
    """Flag records whose face_index is not a usable face of their image; returns the good mask."""
    r = checks.records
    face = r["face_index"][rows].astype(np.int64)
    image = r["image_index"][rows].astype(np.int64)
    known = (face >= 0) & (face < len(faces.boxes))
    safe = np.where(known, face, 0)
    belongs = known & (faces.image_of_face[safe] == image)
    good = belongs & usable[safe]
    checks.add(
        "face_index", rows, ~good,
        lambda k: f"face row {face[k]} is not a face of image {image[k]}" if not belongs[k]
        else f"face row {face[k]} is an ignore region (invalid, degenerate or too small)",
    )
    return good


def _check_detection_records(
    checks: _Checks, rows: np.ndarray, faces: FaceArrays, recipe: CropRecipe, atol: float
) -> None:
    r = checks.records
    labels = r["label"][rows].astype(np.int64)
    crops = r["crop"][rows].astype(np.float64)
    angles = r["angle"][rows]
    checks.add("angle", rows, angles != 0, lambda k: f"expected 0 for a {LABEL_NAMES[int(labels[k])]}, "
               f"found {float(angles[k])}")
    _zero_check(checks, rows, "landmarks")

    neg = labels == LABEL_NEGATIVE
    neg_rows = rows[neg]
    if len(neg_rows):
        _zero_check(checks, neg_rows, "bbox")
        best_iou = np.zeros(len(neg_rows))
        cover = np.zeros(len(neg_rows))
        neg_crops = crops[neg]
        images = r["image_index"][neg_rows].astype(np.int64)
        order = np.argsort(images, kind="stable")
        unique, starts = np.unique(images[order], return_index=True)
        for image, sel in zip(unique.tolist(), np.split(order, starts[1:]), strict=True):
            face_rows = faces.faces_of(image)
            if len(face_rows) == 0:
                continue
            boxes, usable = faces.boxes[face_rows], faces.usable[face_rows]
            best_iou[sel] = iou_matrix(neg_crops[sel], boxes, plus_one=recipe.plus_one_iou).max(axis=1)
            if (~usable).any():
                cover[sel] = coverage_matrix(neg_crops[sel], boxes[~usable]).max(axis=1)
        bad = (best_iou >= recipe.negative_iou) | (cover > recipe.ignore_cover)
        checks.add(
            "label", neg_rows, bad,
            lambda k: f"negative has IoU {best_iou[k]:.4f} with a face (limit {recipe.negative_iou})"
            if best_iou[k] >= recipe.negative_iou
            else f"negative covers {cover[k]:.3f} of an ignore region (limit {recipe.ignore_cover})",
        )

    face_label = (labels == LABEL_POSITIVE) | (labels == LABEL_PART)
    pos_rows = rows[face_label]
    if len(pos_rows):
        good = _face_check(checks, pos_rows, faces, faces.usable)
        pos_rows = pos_rows[good]
        face = r["face_index"][pos_rows].astype(np.int64)
        pos_crops = r["crop"][pos_rows].astype(np.float64)
        gt = faces.boxes[face]
        iou = iou_pairs(pos_crops, gt, plus_one=recipe.plus_one_iou)
        expected = classify(iou, recipe)
        found = r["label"][pos_rows]
        checks.add(
            "label", pos_rows, expected != found,
            lambda k: f"IoU {iou[k]:.4f} with its face gives label {int(expected[k])}, found {int(found[k])}",
        )
        _close_check(checks, pos_rows, "bbox", offsets_for(pos_crops, gt, r["mirror"][pos_rows] != 0), atol)


def _check_landmark_records(
    checks: _Checks, rows: np.ndarray, faces: FaceArrays, recipe: LandmarkRecipe, atol: float
) -> None:
    r = checks.records
    labels = r["label"][rows]
    checks.add("label", rows, labels != LABEL_LANDMARK,
               lambda k: f"landmark-manifest sample must have label -2, found {int(labels[k])}")
    _zero_check(checks, rows, "bbox")
    angles = r["angle"][rows].astype(np.float64)
    checks.add("angle", rows, ~(np.abs(angles) <= recipe.max_rotation),
               lambda k: f"|angle| {angles[k]:.3f} exceeds max_rotation {recipe.max_rotation}")
    if faces.points is None:
        checks.add("face_index", rows, np.ones(len(rows), bool), lambda k: "landmark manifest has no points")
        return
    larger = np.maximum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])
    usable = faces.usable & (larger >= recipe.min_face) & np.isfinite(faces.points).all(axis=(1, 2))
    good = _face_check(checks, rows, faces, usable)
    rows = rows[good]
    face = r["face_index"][rows].astype(np.int64)
    crops = r["crop"][rows].astype(np.float64)
    iou = iou_pairs(crops, faces.boxes[face], plus_one=recipe.plus_one_iou)
    checks.add("crop", rows, ~(iou > recipe.min_iou),
               lambda k: f"IoU {iou[k]:.4f} with its face, need > {recipe.min_iou}")
    if faces.points.shape[1] != len(recipe.flip_permutation):
        raise FacedataError(f"landmark manifest has {faces.points.shape[1]} points, scheme {recipe.scheme!r} "
                            f"has {len(recipe.flip_permutation)}")
    expected = landmark_targets(faces.points[face], crops, r["angle"][rows], r["mirror"][rows] != 0,
                                recipe.flip_permutation).reshape(len(rows), -1)
    _close_check(checks, rows, "landmarks", expected, atol)
    stored = r["landmarks"][rows]
    outside = ~((stored >= 0) & (stored <= 1)).all(axis=1)
    checks.add("landmarks", rows, outside, lambda k: f"target outside [0, 1]: {stored[k].tolist()}")


def _check_chunk(
    checks: _Checks,
    manifests: dict[int, Manifest | None],
    faces: dict[int, FaceArrays | None],
    crop_recipe: CropRecipe,
    landmark_recipe: LandmarkRecipe,
    atol: float,
) -> None:
    records = checks.records
    rows = np.arange(len(records))
    labels, origins = records["label"].astype(np.int64), records["origin"].astype(np.int64)
    known_label = np.isin(labels, list(LABEL_NAMES))
    checks.add("label", rows, ~known_label, lambda k: f"unknown label {labels[k]}")
    for origin, name in ((ORIGIN_DETECTIONS, "detection"), (ORIGIN_LANDMARKS, "landmark")):
        if (origins == origin).any() and manifests[origin] is None:
            raise FacedataError(f"the dataset has {name} samples but no {name} manifest was given")
    bad_origin = ~np.isin(origins, [ORIGIN_DETECTIONS, ORIGIN_LANDMARKS]) | (
        (origins == ORIGIN_DETECTIONS) & (labels == LABEL_LANDMARK)
    )
    checks.add("origin", rows, bad_origin, lambda k: f"origin {origins[k]} with label {labels[k]} is invalid")
    valid = known_label & ~bad_origin
    image = records["image_index"].astype(np.int64)
    for origin, manifest in manifests.items():
        if manifest is None:
            continue
        n_images = len(manifest.images)
        out = valid & (origins == origin) & ((image < 0) | (image >= n_images))
        checks.add("image_index", rows, out, lambda k, n=n_images: f"image row {image[k]} not in 0..{n - 1}")
        valid &= ~out
    det = rows[valid & (origins == ORIGIN_DETECTIONS)]
    lmk = rows[valid & (origins == ORIGIN_LANDMARKS)]
    if len(det):
        _check_detection_records(checks, det, faces[ORIGIN_DETECTIONS], crop_recipe, atol)
    if len(lmk):
        _check_landmark_records(checks, lmk, faces[ORIGIN_LANDMARKS], landmark_recipe, atol)


def verify_labels(
    dataset: np.ndarray | Iterable[Any] | Any,
    det_manifest: Manifest | None,
    lmk_manifest: Manifest | None = None,
    *,
    crop_recipe: CropRecipe | None = None,
    landmark_recipe: LandmarkRecipe | None = None,
    max_listed: int = 20,
    atol: float = 1e-6,
) -> LabelReport:
    """Recompute every sample's label and targets; count and list mismatches (see module docstring).

    `dataset`: a record array, an iterable of record arrays (or (pixels, records) pairs), or a reader
    with __len__ and read_range(start, stop). The recipes must carry the build's thresholds.
    """
    crop_recipe = crop_recipe or CropRecipe()
    landmark_recipe = landmark_recipe or LandmarkRecipe()
    manifests = {ORIGIN_DETECTIONS: det_manifest, ORIGIN_LANDMARKS: lmk_manifest}
    min_face = {ORIGIN_DETECTIONS: crop_recipe.min_face, ORIGIN_LANDMARKS: landmark_recipe.min_face}
    faces = {o: None if m is None else face_arrays(m, min_face[o]) for o, m in manifests.items()}
    report = LabelReport()
    start = 0
    for records in _record_chunks(dataset):
        labels = records["label"].astype(np.int64)
        for label in np.unique(labels).tolist():
            report.by_label[label] = report.by_label.get(label, 0) + int((labels == label).sum())
        checks = _Checks(records, start)
        _check_chunk(checks, manifests, faces, crop_recipe, landmark_recipe, atol)
        checks.fold(report, max_listed)
        report.checked += len(records)
        start += len(records)
    return report
