"""`verify --labels`: re-derive every sample's label and targets from the manifests and its provenance.

The rules are re-implemented from the documented conventions (facedata.oracle.geometry); nothing is
imported from facedata.samplers or facedata.detect. Checked, by label:
- every sample: whole-pixel crop with positive size, inside the image (mined crops with `pad_border`:
  overlapping it); detection crops are square; a known label and origin; image_index in the manifest;
- negative (0): IoU < negative_iou with every face of the image (ignore regions included), each ignore
  region covered at most `ignore_cover`; bbox and landmarks 0; face_index -1 or a face of that image;
- positive (1) / part (-1): face_index a usable face of the image; IoU with it gives the label; bbox the
  offsets (mirrored for mirrored samples); landmarks 0;
- mined samples (rnet/onet): crop side >= min_size, a positive/part's face is the best-IoU face of the
  image, at most max_negatives_per_image negatives per image;
- landmark (-2): a usable face with every point, IoU > min_iou, |angle| <= max_rotation, mirrored only
  when the recipe mirrors, targets equal the projected points and lie in [0, 1]; bbox 0.
Detection samples have angle 0. Float targets are compared with an absolute tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from facedata.console import in_class_order, labels_text
from facedata.errors import FacedataError
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest
from facedata.oracle.geometry import box_offsets, ignore_cover, iou, landmark_targets, usable
from facedata.samples import (
    LABEL_LANDMARK,
    LABEL_NAMES,
    LABEL_NEGATIVE,
    LABEL_PART,
    LABEL_POSITIVE,
    NO_FACE,
    ORIGIN_DETECTIONS,
    ORIGIN_LANDMARKS,
)
from facedata.schema import VISIBILITY_ABSENT

CHUNK = 1 << 16
IGNORE_COLUMN = "ignore"  # optional bool face column: a face kept as an ignore region (e.g. by a filter)


def recorded_rules(cls: type, values: Mapping[str, Any] | Any | None) -> Any:
    """`cls` from the matching keys of a recorded recipe (a dict, or an object with to_dict())."""
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        values = values.to_dict()
    if "min_face" in values and "ignore_under" not in values:  # recorded before the rule had its name: larger side
        values = {**values, "ignore_under": values["min_face"], "face_side": "larger"}
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def _check_side(face_side: str) -> None:
    if face_side not in ("shorter", "larger"):
        raise ValueError(f"unknown face_side {face_side!r}")


@dataclass(frozen=True)
class DetectionRules:
    """The thresholds detection samples were labelled with (a build's crop recipe, plus its mining recipe
    for rnet/onet)."""

    negative_iou: float = 0.3
    part_iou: float = 0.4
    positive_iou: float = 0.65
    ignore_cover: float = 0.0
    ignore_under: float = 20.0
    face_side: str = "shorter"
    plus_one_iou: bool = False
    mined: bool = False
    min_size: float = 0.0
    max_negatives_per_image: int | None = None
    pad_border: bool = False

    def __post_init__(self) -> None:
        _check_side(self.face_side)

    @classmethod
    def from_recipes(cls, crop: Mapping[str, Any] | Any | None, mining: Mapping[str, Any] | Any | None = None
                     ) -> DetectionRules:
        rules = recorded_rules(cls, crop)
        if mining is None:
            return rules
        mined = recorded_rules(cls, mining)
        return DetectionRules(
            rules.negative_iou, rules.part_iou, rules.positive_iou, rules.ignore_cover, rules.ignore_under,
            rules.face_side, rules.plus_one_iou, True, mined.min_size, mined.max_negatives_per_image, mined.pad_border,
        )

    def label_of(self, overlap: np.ndarray) -> np.ndarray:
        """Label a face-cut crop by its IoU with its face: positive, part, or 127 (neither)."""
        return np.where(overlap >= self.positive_iou, LABEL_POSITIVE,
                        np.where(overlap >= self.part_iou, LABEL_PART, 127))


@dataclass(frozen=True)
class LandmarkRules:
    min_iou: float = 0.65
    max_rotation: float = 5.0
    ignore_under: float = 20.0
    face_side: str = "shorter"
    scheme: str = "mtcnn5"
    mirror: bool = True
    plus_one_iou: bool = False

    def __post_init__(self) -> None:
        _check_side(self.face_side)

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any] | Any | None) -> LandmarkRules:
        """The recipe's `draws: reference` keeps shifts on IoU with x2 - x1 + 1 widths (the reference's)."""
        rules = recorded_rules(cls, recipe)
        if recipe is not None and not isinstance(recipe, Mapping):
            recipe = recipe.to_dict()
        if recipe is not None and recipe.get("draws") == "reference":
            rules = replace(rules, plus_one_iou=True)
        return rules


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
        labels = labels_text(self.by_label)
        head = f"checked {self.checked:,} samples ({labels}): {self.samples_with_mismatch:,} with mismatches"
        if self.ok:
            return head
        by_field = ", ".join(f"{k} {v:,}" for k, v in sorted(self.by_field.items()))
        return "\n".join([f"{head} ({by_field})", *(f"  {m}" for m in self.listed)])

    def to_dict(self) -> dict[str, Any]:
        """The verdict for `verify --json`: counts per label (by name, in class order) and field, the listed."""
        return {"ok": self.ok, "checked": self.checked, "samples_with_mismatch": self.samples_with_mismatch,
                "mismatches": self.mismatches, "by_label": dict(in_class_order(self.by_label)),
                "by_field": dict(sorted(self.by_field.items())), "listed": [str(m) for m in self.listed]}


@dataclass(frozen=True, eq=False)
class FaceTable:
    """One manifest's images and faces as arrays (faces grouped by image), read the documented way."""

    boxes: np.ndarray  # (F, 4) float32, faces-table order
    flagged: np.ndarray  # (F,) invalid or kept as an ignore region
    image_of_face: np.ndarray  # (F,) image row of each face
    order: np.ndarray  # face rows sorted by image
    starts: np.ndarray  # faces of image i: order[starts[i]:starts[i + 1]]
    points: np.ndarray | None  # (F, K, 2) float64, NaN where absent; None without points
    codes: np.ndarray | None  # (F, K) visibility as annotated (0 absent, 1 hidden, 2 visible; 2 if not given)
    widths: np.ndarray  # (I,) float64, NaN when unknown
    heights: np.ndarray

    @classmethod
    def of(cls, manifest: Manifest) -> FaceTable:
        images, faces = manifest.images, manifest.faces
        row_of = {image_id: row for row, image_id in enumerate(images["image_id"].tolist())}
        image_of_face = np.array([row_of.get(i, -1) for i in faces["image_id"].tolist()], np.int64)
        if (image_of_face < 0).any():
            raise FacedataError("manifest has faces of images that are not in its images table")
        flagged = faces["invalid"].fillna(True).to_numpy(bool)
        if IGNORE_COLUMN in faces:
            flagged = flagged | faces[IGNORE_COLUMN].fillna(False).to_numpy(bool)
        order = np.argsort(image_of_face, kind="stable")
        points = _points(faces)
        return cls(
            boxes=faces[["x1", "y1", "x2", "y2"]].to_numpy(np.float32).reshape(-1, 4),
            flagged=flagged, image_of_face=image_of_face, order=order,
            starts=np.searchsorted(image_of_face[order], np.arange(len(images) + 1)),
            points=points, codes=None if points is None else _codes(faces, points),
            widths=images["width"].to_numpy(np.float64, na_value=np.nan),
            heights=images["height"].to_numpy(np.float64, na_value=np.nan),
        )

    def faces_of(self, image: int) -> np.ndarray:
        return self.order[self.starts[image] : self.starts[image + 1]]


def _points(faces: Any) -> np.ndarray | None:
    """(F, K, 2) float64 points with NaN for faces without points and points marked absent."""
    if "points" not in faces:
        return None
    values, visible = faces["points"].tolist(), faces["visible"].tolist()
    sizes = {len(p) for p in values if isinstance(p, list | np.ndarray)}
    if not sizes:
        return None
    if len(sizes) > 1:
        raise FacedataError(f"faces have different numbers of landmark values {sorted(sizes)}")
    out = np.full((len(values), sizes.pop() // 2, 2), np.nan)
    for row, (pts, vis) in enumerate(zip(values, visible, strict=True)):
        if isinstance(pts, list | np.ndarray):
            out[row] = np.asarray(pts, np.float32).reshape(-1, 2)
            if isinstance(vis, list | np.ndarray):
                out[row, np.asarray(vis) == VISIBILITY_ABSENT] = np.nan
    return out


def _codes(faces: Any, points: np.ndarray) -> np.ndarray:
    """(F, K) visibility codes: the annotated ones, 2 for present points of a face without codes, 0 where a
    point is absent (NaN)."""
    codes = np.full(points.shape[:2], 2, np.int64)
    for row, vis in enumerate(faces["visible"].tolist()):
        if isinstance(vis, list | np.ndarray) and len(vis) == points.shape[1]:
            codes[row] = np.asarray(vis, np.int64)
    codes[~np.isfinite(points).all(axis=2)] = 0
    return codes


class Checks:
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

    def zeros(self, rows: np.ndarray, name: str) -> None:
        values = self.records[name][rows].reshape(len(rows), -1)
        self.add(name, rows, (values != 0).any(axis=1), lambda k: f"expected zeros, found {values[k].tolist()}")

    def close(self, rows: np.ndarray, name: str, expected: np.ndarray, atol: float) -> None:
        found = self.records[name][rows].reshape(len(rows), -1).astype(np.float64)
        exp = np.asarray(expected, np.float64).reshape(len(rows), -1)
        self.add(name, rows, ~(np.abs(found - exp) <= atol).all(axis=1),
                 lambda k: f"expected {exp[k].round(6).tolist()}, found {found[k].round(6).tolist()}")


def record_chunks(dataset: Any) -> Iterator[np.ndarray]:
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


def _by_image(images: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(image, positions) for each distinct value of `images`."""
    order = np.argsort(images, kind="stable")
    unique, starts = np.unique(images[order], return_index=True)
    yield from zip(unique.tolist(), np.split(order, starts[1:]), strict=True)


def face_check(checks: Checks, rows: np.ndarray, table: FaceTable, ok: np.ndarray, why: str) -> np.ndarray:
    """Flag rows whose face_index is not a face of their image, or not one `ok` allows (`why` says which
    faces those are); returns the mask of good rows."""
    face = checks.records["face_index"][rows].astype(np.int64)
    image = checks.records["image_index"][rows].astype(np.int64)
    exists = (face >= 0) & (face < len(table.boxes))
    safe = np.where(exists, face, 0)
    belongs = exists & (table.image_of_face[safe] == image)
    good = belongs & ok[safe]
    checks.add("face_index", rows, ~good, lambda k: f"face row {face[k]} is not a face of image {image[k]}"
               if not belongs[k] else f"face row {face[k]} cannot be sampled ({why})")
    return good


class _Oracle:
    def __init__(self, manifests: dict[int, Manifest | None], detection: DetectionRules, landmark: LandmarkRules,
                 atol: float) -> None:
        self.tables = {o: None if m is None else FaceTable.of(m) for o, m in manifests.items()}
        self.det, self.lmk, self.atol = detection, landmark, atol
        det = self.tables[ORIGIN_DETECTIONS]
        self.negatives_seen = None if det is None else np.zeros(len(det.widths), np.int64)

    def check(self, checks: Checks) -> None:
        r = checks.records
        rows = np.arange(len(r))
        labels, origins = r["label"].astype(np.int64), r["origin"].astype(np.int64)
        known = np.isin(labels, list(LABEL_NAMES))
        checks.add("label", rows, ~known, lambda k: f"unknown label {labels[k]}")
        for origin, name in ((ORIGIN_DETECTIONS, "detection"), (ORIGIN_LANDMARKS, "landmark")):
            if (origins == origin).any() and self.tables[origin] is None:
                raise FacedataError(f"the dataset has {name} samples but no {name} manifest was given")
        bad_origin = ~np.isin(origins, [ORIGIN_DETECTIONS, ORIGIN_LANDMARKS]) | (
            (origins == ORIGIN_LANDMARKS) != (labels == LABEL_LANDMARK)
        )
        checks.add("origin", rows, bad_origin & known,
                   lambda k: f"origin {origins[k]} with label {labels[k]} is invalid")
        valid = known & ~bad_origin
        image = r["image_index"].astype(np.int64)
        for origin, table in self.tables.items():
            if table is None:
                continue
            n = len(table.widths)
            out = valid & (origins == origin) & ((image < 0) | (image >= n))
            checks.add("image_index", rows, out, lambda k, n=n: f"image row {image[k]} not in 0..{n - 1}")
            valid &= ~out
        for origin, check in ((ORIGIN_DETECTIONS, self._detections), (ORIGIN_LANDMARKS, self._landmarks)):
            selected = rows[valid & (origins == origin)]
            if len(selected):
                selected = self._crop_geometry(checks, selected, self.tables[origin], origin)
                check(checks, selected, self.tables[origin])

    def _crop_geometry(self, checks: Checks, rows: np.ndarray, table: FaceTable, origin: int) -> np.ndarray:
        """Flag crops that are not whole pixels, empty, outside the image or (detections) not square;
        returns the rows whose crop is usable for the label checks."""
        crop = checks.records["crop"][rows].astype(np.float64)
        w, h = crop[:, 2] - crop[:, 0], crop[:, 3] - crop[:, 1]
        shape_ok = (np.rint(crop) == crop).all(axis=1) & (w > 0) & (h > 0)
        if origin == ORIGIN_DETECTIONS:
            shape_ok &= w == h
        image = checks.records["image_index"][rows].astype(np.int64)
        width, height = table.widths[image], table.heights[image]
        known = np.isfinite(width) & np.isfinite(height)
        if origin == ORIGIN_DETECTIONS and self.det.pad_border:
            placed = (crop[:, 2] > 0) & (crop[:, 3] > 0) & (crop[:, 0] < width) & (crop[:, 1] < height)
        else:
            placed = (crop[:, :2] >= 0).all(axis=1) & (crop[:, 2] <= width) & (crop[:, 3] <= height)
        placed |= ~known
        if origin == ORIGIN_DETECTIONS and self.det.mined:
            placed &= w >= self.det.min_size
        square = " square" if origin == ORIGIN_DETECTIONS else ""
        rule = "overlap" if origin == ORIGIN_DETECTIONS and self.det.pad_border else "lie inside"
        if origin == ORIGIN_DETECTIONS and self.det.mined:
            rule += f" and have a side >= min_size {self.det.min_size}"
        checks.add("crop", rows, ~(shape_ok & placed),
                   lambda k: f"crop {crop[k].tolist()} is not a whole-pixel{square} box of positive size"
                   if not shape_ok[k] else f"crop {crop[k].tolist()} must {rule} the {width[k]:.0f}x"
                   f"{height[k]:.0f} image")
        return rows[shape_ok & placed]

    def _face_check(self, checks: Checks, rows: np.ndarray, table: FaceTable, ok: np.ndarray) -> np.ndarray:
        return face_check(checks, rows, table, ok, "invalid, ignored, degenerate, too small or without every point")

    def _detections(self, checks: Checks, rows: np.ndarray, table: FaceTable) -> None:
        r, rules = checks.records, self.det
        labels = r["label"][rows].astype(np.int64)
        angles = r["angle"][rows]
        checks.add("angle", rows, angles != 0,
                   lambda k: f"expected 0 for a {LABEL_NAMES[int(labels[k])]}, found {float(angles[k])}")
        checks.zeros(rows, "landmarks")
        crops = r["crop"][rows].astype(np.float64)
        can_sample = usable(table.boxes, table.flagged, rules.ignore_under, rules.face_side)
        best = np.zeros(len(rows))  # best IoU with any face of the image
        cover = np.zeros(len(rows))  # largest covered fraction of an ignore region
        for image, sel in _by_image(r["image_index"][rows].astype(np.int64)):
            faces = table.faces_of(image)
            if len(faces):
                best[sel] = iou(crops[sel, None], table.boxes[faces][None], plus_one=rules.plus_one_iou).max(1)
                ignored = faces[~can_sample[faces]]
                if len(ignored):
                    cover[sel] = ignore_cover(crops[sel], table.boxes[ignored]).max(axis=1)
        neg = labels == LABEL_NEGATIVE
        if neg.any():
            self._negatives(checks, rows[neg], table, best[neg], cover[neg])
        face_cut = (labels == LABEL_POSITIVE) | (labels == LABEL_PART)
        if face_cut.any():
            self._face_samples(checks, rows[face_cut], table, can_sample, best[face_cut])

    def _negatives(self, checks: Checks, rows: np.ndarray, table: FaceTable, best: np.ndarray,
                   cover: np.ndarray) -> None:
        rules = self.det
        checks.zeros(rows, "bbox")
        bad = (best >= rules.negative_iou) | (cover > rules.ignore_cover)
        checks.add("label", rows, bad,
                   lambda k: f"negative has IoU {best[k]:.4f} with a face (limit {rules.negative_iou})"
                   if best[k] >= rules.negative_iou
                   else f"negative covers {cover[k]:.3f} of an ignore region (limit {rules.ignore_cover})")
        face = checks.records["face_index"][rows]
        drawn = face != NO_FACE
        if drawn.any():
            self._face_check(checks, rows[drawn], table, np.ones(len(table.boxes), bool))
        if rules.mined and rules.max_negatives_per_image is not None:
            image = checks.records["image_index"][rows].astype(np.int64)
            seen = np.zeros(len(rows), np.int64)
            for one, sel in _by_image(image):
                seen[sel] = self.negatives_seen[one] + np.arange(1, len(sel) + 1)
                self.negatives_seen[one] += len(sel)
            cap = rules.max_negatives_per_image
            checks.add("label", rows, seen > cap,
                       lambda k: f"negative number {seen[k]} of image {image[k]} is over the cap of {cap}")

    def _face_samples(self, checks: Checks, rows: np.ndarray, table: FaceTable, can_sample: np.ndarray,
                      best: np.ndarray) -> None:
        r, rules = checks.records, self.det
        good = self._face_check(checks, rows, table, can_sample)
        rows, best = rows[good], best[good]
        face = r["face_index"][rows].astype(np.int64)
        crops = r["crop"][rows].astype(np.float64)
        overlap = iou(crops, table.boxes[face], plus_one=rules.plus_one_iou)
        expected, found = rules.label_of(overlap), r["label"][rows]
        checks.add("label", rows, expected != found,
                   lambda k: f"IoU {overlap[k]:.4f} with its face does not make a {LABEL_NAMES[int(found[k])]}")
        if rules.mined:
            checks.add("face_index", rows, overlap < best - 1e-9,
                       lambda k: f"IoU {overlap[k]:.4f} with its face, but {best[k]:.4f} with another face")
        checks.close(rows, "bbox", box_offsets(crops, table.boxes[face], r["mirror"][rows] != 0), self.atol)

    def _landmarks(self, checks: Checks, rows: np.ndarray, table: FaceTable) -> None:
        r, rules = checks.records, self.lmk
        checks.zeros(rows, "bbox")
        angles = r["angle"][rows].astype(np.float64)
        checks.add("angle", rows, ~(np.abs(angles) <= rules.max_rotation),
                   lambda k: f"|angle| {angles[k]:.3f} exceeds max_rotation {rules.max_rotation}")
        mirror = r["mirror"][rows] != 0
        if not rules.mirror:
            checks.add("mirror", rows, mirror, lambda k: "mirrored, but the recipe does not mirror")
        if table.points is None:
            checks.add("face_index", rows, np.ones(len(rows), bool), lambda k: "landmark manifest has no points")
            return
        scheme = SCHEMES.get(rules.scheme)
        if table.points.shape[1] != scheme.num_points:
            raise FacedataError(f"landmark manifest has {table.points.shape[1]} points, scheme {scheme.name!r} "
                                f"has {scheme.num_points}")
        complete = np.isfinite(table.points).all(axis=(1, 2))
        can_sample = usable(table.boxes, table.flagged, rules.ignore_under, rules.face_side) & complete
        good = self._face_check(checks, rows, table, can_sample)
        rows = rows[good]
        face = r["face_index"][rows].astype(np.int64)
        crops = r["crop"][rows].astype(np.float64)
        overlap = iou(crops, table.boxes[face], plus_one=rules.plus_one_iou)
        checks.add("crop", rows, ~(overlap > rules.min_iou),
                   lambda k: f"IoU {overlap[k]:.4f} with its face, need > {rules.min_iou}")
        expected = landmark_targets(table.points[face], crops, r["angle"][rows], r["mirror"][rows] != 0,
                                    scheme.flip_pairs)
        checks.close(rows, "landmarks", expected, self.atol)
        stored = r["landmarks"][rows]
        checks.add("landmarks", rows, ~((stored >= 0) & (stored <= 1)).all(axis=1),
                   lambda k: f"target outside [0, 1]: {stored[k].tolist()}")


def verify_labels(
    dataset: np.ndarray | Iterable[Any] | Any,
    det_manifest: Manifest | None,
    lmk_manifest: Manifest | None = None,
    *,
    detection_rules: DetectionRules | None = None,
    landmark_rules: LandmarkRules | None = None,
    max_listed: int = 20,
    atol: float = 1e-6,
) -> LabelReport:
    """Recompute every sample's label and targets; count and list mismatches (see module docstring).

    `dataset`: a record array, an iterable of record arrays (or (pixels, records) pairs), or a reader
    with __len__ and read_range(start, stop). The rules must carry the build's thresholds
    (`rules_from_index` reads them from index.json).
    """
    oracle = _Oracle({ORIGIN_DETECTIONS: det_manifest, ORIGIN_LANDMARKS: lmk_manifest},
                     detection_rules or DetectionRules(), landmark_rules or LandmarkRules(), atol)
    return run_checks(oracle.check, dataset, max_listed)


def run_checks(check: Callable[[Checks], None], dataset: Any, max_listed: int = 20) -> LabelReport:
    """Run a stage oracle's `check` over every record chunk of `dataset` (see verify_labels) and count."""
    report = LabelReport()
    start = 0
    for records in record_chunks(dataset):
        labels = records["label"].astype(np.int64)
        for label in np.unique(labels).tolist():
            report.by_label[label] = report.by_label.get(label, 0) + int((labels == label).sum())
        checks = Checks(records, start)
        check(checks)
        checks.fold(report, max_listed)
        report.checked += len(records)
        start += len(records)
    return report
