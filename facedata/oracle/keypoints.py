"""The oracle for the landmark stages `build pfld` and `build topdown` (labels and pixels).

Written again from the documented conventions (facedata/samplers/pfld.py, facedata/samplers/topdown.py module
docs, the schema's head-pose convention), sharing no code with the samplers or stages.

pfld (one landmark sample per record, rows of the build's inputs concatenated in order):
- the face is usable (not invalid / ignored, positive box) with at least `min_points` present points;
- the crop is a whole-pixel square; |angle| <= max_rotation; mirrored only when the recipe mirrors; the crop
  centre within jitter x side (+1 px rounding) of the base square's centre (centre of the points' extent or of
  the annotated box), its side round(base side x s) for s in [scale_low, scale_high] or 1 (the un-augmented
  crop, +-1 px), `scale` = side / round(base side);
- landmarks = the manifest points rotated about the crop centre, normalised, mirrored through the scheme's
  flip pairs (oracle.geometry.landmark_targets), NaN exactly where the point is absent, present ones in
  [0, 1]; mask = present;
- euler of an annotated face (pose_source "annotated", finite angles): R = Rx(-pitch) Ry(yaw) Rz(roll) in camera
  axes (x right, y down, z forward); a crop rotated +a degrees counter-clockwise as displayed maps
  (x, y) -> (x cos a + y sin a, -x sin a + y cos a), i.e. Rz(-a) in those axes, so the crop's pose is
  Rz(-a) R decomposed in the same order (scipy's intrinsic "XYZ"; yaw in [-90, 90]), the un-rotated crop
  keeping the manifest's angles as they are; a mirror then negates yaw and roll. Compared modulo 360 deg.
  Estimated poses (pose_source 2) are only checked to be NaN (a masked model point) or finite with pitch and
  roll in [-180, 180] and yaw in [-90, 90]; pose_source 0 must be NaN (no solvePnP re-run here);
- attributes (WFLW order) 1 where the manifest's flag is > 0, has_attributes when all six are known, corpus
  the index of the image's source in index.json's `pfld_corpora`, weight the face's (1 when unset).
  `ear` is not checked (a derived ratio of the stored landmarks).

topdown (mmpose 0.x `_xywh2cs` / `get_affine_transform`):
- the person/face is usable, its box non-degenerate, it has a labelled point unless `keep_unlabelled`;
- box = the manifest's; centre and scale from the box clipped to [0, width - 1] x [0, height - 1] (the
  annotation as is when clipping leaves it empty): centre of the box, the box widened or heightened to the
  input's aspect ratio, scale = (w, h) / 200 x padding;
- affine = the similarity with no rotation that maps the centre to the middle of the stored crop
  (stored = ceil(input x margin)) at the input's zoom input_w / (200 x scale_w);
- keypoints = that affine applied to the manifest points (NaN where absent); visible = the manifest's codes
  (2 visible, 1 labelled but hidden, 0 absent); mirror 0.
Pixels: the stored crop re-read through the record's own affine (dst pixel index -> source pixel index by
the inverse, bilinear, zero outside), within the detection crops' tolerance (cv2.warpAffine has no area
filter, so `--interpolation area` builds re-cut the same way). pfld crops follow the detection crops' rule
(oracle.pixels.recut). Measured on real builds (every sample): COCO mini topdown 68 crops mean <= 0.25,
max 5 (linear and area); pfld on AFLW2000-3D / 300-W mean <= 0.16, max 4.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from facedata.errors import FacedataError
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest
from facedata.oracle.geometry import landmark_targets, usable
from facedata.oracle.labels import Checks, FaceTable, face_check, recorded_rules
from facedata.oracle.pixels import (
    TOLERANCE,
    ArraySource,
    PixelReport,
    PixelResult,
    Tolerance,
    all_records,
    compare_pixels,
    decode_source,
    pick_samples,
    sample_bilinear,
)
from facedata.samples import LABEL_LANDMARK, ORIGIN_DETECTIONS, ORIGIN_LANDMARKS

ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")  # WFLW order (spec 8)
POSE_NONE, POSE_ANNOTATED, POSE_ESTIMATED = 0, 1, 2
PIXEL_STD = 200.0  # mmpose's scale unit
ANGLE_ATOL = 1e-3  # degrees (float32 storage, asin near +-90)
POINT_ATOL = 1e-2  # topdown keypoints, stored-crop pixels (the build solves its affine in float32)


@dataclass(frozen=True)
class PfldRules:
    scheme: str
    size: int = 112
    expand: float = 1.2
    box: str = "landmarks"
    max_rotation: float = 30.0
    jitter: float = 0.1
    scale_low: float = 0.9
    scale_high: float = 1.25
    mirror: bool = True
    min_points: int = 2

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any]) -> PfldRules:
        """The rules from index.json's `pfld_recipe`."""
        return recorded_rules(cls, recipe)


@dataclass(frozen=True)
class TopDownRules:
    input: tuple[int, int] = (192, 256)
    margin: float = 1.25
    padding: float = 1.25
    keep_unlabelled: bool = False
    num_points: int = 0

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any]) -> TopDownRules:
        """The rules from index.json's `topdown_recipe` (its `input` is a JSON list)."""
        rules = recorded_rules(cls, recipe)
        return replace(rules, input=tuple(rules.input))

    @property
    def stored(self) -> tuple[int, int]:
        return tuple(math.ceil(v * self.margin - 1e-9) for v in self.input)  # type: ignore[return-value]


def _close_nan(checks: Checks, rows: np.ndarray, name: str, expected: np.ndarray, atol: float) -> None:
    """Flag rows whose field differs from `expected` by more than atol, or is NaN where it is not (and back)."""
    found = checks.records[name][rows].reshape(len(rows), -1).astype(np.float64)
    exp = np.asarray(expected, np.float64).reshape(len(rows), -1)
    same_nan = np.isnan(found) == np.isnan(exp)
    near = np.where(np.isnan(exp), True, np.abs(found - exp) <= atol)
    checks.add(name, rows, ~(same_nan & near).all(axis=1),
               lambda k: f"expected {exp[k].round(5).tolist()}, found {found[k].round(5).tolist()}")


def _fixed(checks: Checks, rows: np.ndarray, name: str, value: int) -> None:
    found = checks.records[name][rows]
    checks.add(name, rows, found != value, lambda k: f"expected {value}, found {int(found[k])}")


def annotated_euler(pose: np.ndarray, angle: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(N, 3) pitch, yaw, roll (degrees) of an annotated head pose after the crop's rotation and mirror."""
    pose = np.asarray(pose, np.float64).reshape(-1, 3)
    angle = np.asarray(angle, np.float64).reshape(-1)
    head = Rotation.from_euler("XYZ", np.stack([-pose[:, 0], pose[:, 1], pose[:, 2]], axis=1), degrees=True)
    turned = (Rotation.from_euler("Z", -angle[:, None], degrees=True) * head).as_euler("XYZ", degrees=True)
    out = np.where((angle == 0)[:, None], pose, np.stack([-turned[:, 0], turned[:, 1], turned[:, 2]], axis=1))
    flip = np.asarray(mirror, bool).reshape(-1)
    out[flip, 1:] = -out[flip, 1:]
    return out


def _wrapped_close(found: np.ndarray, expected: np.ndarray, atol: float) -> np.ndarray:
    d = (found - expected + 180.0) % 360.0 - 180.0
    return (np.abs(d) <= atol).all(axis=1)


class PfldOracle:
    """Label checks of a pfld build against its inputs (concatenated in the build's order)."""

    def __init__(self, manifest: Manifest, rules: PfldRules, corpora: list[str]) -> None:
        self.rules, self.table = rules, FaceTable.of(manifest)
        if self.table.points is None:
            raise FacedataError("the pfld build's landmark manifest has no points")
        self.scheme = SCHEMES.get(rules.scheme)
        if self.table.points.shape[1] != self.scheme.num_points:
            raise FacedataError(f"the landmark manifest has {self.table.points.shape[1]} points, the pfld build's "
                                f"scheme {rules.scheme!r} has {self.scheme.num_points}")
        faces, images = manifest.faces, manifest.images
        self.pose = faces[["pitch", "yaw", "roll"]].to_numpy(np.float64, na_value=np.nan)
        self.annotated = (faces["pose_source"] == "annotated").to_numpy(bool) & np.isfinite(self.pose).all(axis=1)
        self.attributes = np.stack([faces[a].to_numpy(np.float64, na_value=np.nan) if a in faces
                                    else np.full(len(faces), np.nan) for a in ATTRIBUTES], axis=1)
        self.weight = faces["weight"].to_numpy(np.float64, na_value=np.nan) if "weight" in faces \
            else np.full(len(faces), np.nan)
        sources = images["source"].tolist()
        self.corpus = np.array([corpora.index(s) if s in corpora else -1 for s in sources], np.int64)
        present = np.isfinite(self.table.points).all(axis=2)
        self.sampled = usable(self.table.boxes, self.table.flagged, 0.0) & (present.sum(axis=1) >= rules.min_points)

    def check(self, checks: Checks) -> None:
        r = checks.records
        rows = np.arange(len(r))
        _fixed(checks, rows, "label", LABEL_LANDMARK)
        _fixed(checks, rows, "origin", ORIGIN_LANDMARKS)
        good = face_check(checks, rows, self.table, self.sampled,
                        f"invalid, ignored, degenerate or fewer than {self.rules.min_points} points")
        rows = rows[good]
        face = r["face_index"][rows].astype(np.int64)
        rows, face = self._crops(checks, rows, face)
        crops, angle, mirror = r["crop"][rows].astype(np.float64), r["angle"][rows], r["mirror"][rows] != 0
        points = landmark_targets(self.table.points[face], crops, angle, mirror, self.scheme.flip_pairs)
        _close_nan(checks, rows, "landmarks", points, 1e-5)
        mask = r["mask"][rows]
        present = np.isfinite(points).all(axis=2)
        checks.add("mask", rows, (mask != present).any(axis=1),
                   lambda k: f"expected {present[k].astype(int).tolist()}, found {mask[k].tolist()}")
        stored = r["landmarks"][rows].reshape(len(rows), -1, 2)
        outside = (np.isfinite(stored).all(axis=2) & ((stored < 0) | (stored > 1)).any(axis=2)).any(axis=1)
        checks.add("landmarks", rows, outside, lambda k: "a present point lies outside [0, 1]")
        self._euler(checks, rows, face, angle, mirror)
        self._face_fields(checks, rows, face)

    def _base(self, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) centre and (N,) side of the faces' un-augmented squares."""
        if self.rules.box == "annotated":
            low, high = self.table.boxes[face, :2].astype(np.float64), self.table.boxes[face, 2:].astype(np.float64)
        else:
            pts = self.table.points[face]
            low, high = np.nanmin(pts, axis=1), np.nanmax(pts, axis=1)
        return (low + high) / 2, (high - low).max(axis=1) * self.rules.expand

    def _crops(self, checks: Checks, rows: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, rules = checks.records, self.rules
        crop = r["crop"][rows].astype(np.float64)
        side = crop[:, 2] - crop[:, 0]
        shape_ok = (np.rint(crop) == crop).all(axis=1) & (side > 0) & (side == crop[:, 3] - crop[:, 1])
        checks.add("crop", rows, ~shape_ok, lambda k: f"crop {crop[k].tolist()} is not a whole-pixel square")
        centre, base = self._base(face)
        unit = np.maximum(1, np.rint(base))
        offset = np.abs((crop[:, :2] + crop[:, 2:]) / 2 - centre).max(axis=1)
        sized = ((side >= np.rint(base * rules.scale_low) - 1) & (side <= np.rint(base * rules.scale_high) + 1)) \
            | (np.abs(side - unit) <= 1)
        placed = offset <= rules.jitter * base + 1
        checks.add("crop", rows, shape_ok & ~(sized & placed),
                   lambda k: f"crop {crop[k].tolist()} is not a square of side round({base[k]:.2f} x "
                   f"[{rules.scale_low}, {rules.scale_high}]) within {rules.jitter} x side of ({centre[k, 0]:.2f}, "
                   f"{centre[k, 1]:.2f})")
        scale = r["scale"][rows].astype(np.float64)
        checks.add("scale", rows, ~(np.abs(scale - side / unit) <= 1e-5 * np.maximum(1, side / unit)),
                   lambda k: f"expected {side[k] / unit[k]:.6f} (side / round(base side)), found {scale[k]:.6f}")
        angle = r["angle"][rows].astype(np.float64)
        checks.add("angle", rows, ~(np.abs(angle) <= rules.max_rotation),
                   lambda k: f"|angle| {angle[k]:.3f} exceeds max_rotation {rules.max_rotation}")
        if not rules.mirror:
            checks.add("mirror", rows, r["mirror"][rows] != 0, lambda k: "mirrored, but the recipe does not mirror")
        return rows[shape_ok], face[shape_ok]

    def _euler(self, checks: Checks, rows: np.ndarray, face: np.ndarray, angle: np.ndarray, mirror: np.ndarray
               ) -> None:
        r = checks.records
        source = r["pose_source"][rows].astype(np.int64)
        found = r["euler"][rows].astype(np.float64)
        annotated = self.annotated[face]
        bad_source = np.where(annotated, source != POSE_ANNOTATED, ~np.isin(source, [POSE_NONE, POSE_ESTIMATED]))
        checks.add("pose_source", rows, bad_source,
                   lambda k: f"found {source[k]}, expected {POSE_ANNOTATED} (annotated)" if annotated[k]
                   else f"found {source[k]} for a face without an annotated pose (expected 0 or 2)")
        a = np.flatnonzero(annotated)
        if len(a):
            exp = annotated_euler(self.pose[face[a]], angle[a], mirror[a])
            got = found[a]
            checks.add("euler", rows[a], ~_wrapped_close(got, exp, ANGLE_ATOL),
                       lambda k: f"expected {exp[k].round(4).tolist()} (annotated pose through the crop's rotation "
                       f"and mirror), found {got[k].round(4).tolist()}")
        e = np.flatnonzero(~annotated)
        if len(e):
            got, src = found[e], source[e]
            nan = np.isnan(got).all(axis=1)
            in_range = (np.abs(got[:, [0, 2]]) <= 180).all(axis=1) & (np.abs(got[:, 1]) <= 90)
            ok = np.where(src == POSE_NONE, nan, nan | in_range)
            checks.add("euler", rows[e], ~ok, lambda k: f"{got[k].round(4).tolist()} with pose_source {src[k]}: "
                       "expected NaN, or finite with |pitch|, |roll| <= 180 and |yaw| <= 90 when estimated")

    def _face_fields(self, checks: Checks, rows: np.ndarray, face: np.ndarray) -> None:
        flags = np.nan_to_num(self.attributes[face], nan=-1.0)
        checks.close(rows, "attributes", np.where(flags > 0, 1, 0), 0)
        checks.close(rows, "has_attributes", (flags >= 0).all(axis=1).astype(np.int64), 0)
        checks.close(rows, "weight", np.nan_to_num(self.weight[face], nan=1.0).astype(np.float32), 0)
        image = checks.records["image_index"][rows].astype(np.int64)
        checks.close(rows, "corpus", self.corpus[image], 0)


def _clipped(box: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """mmpose's box clean-up: x1, y1 >= 0, x2 <= width - 1, y2 <= height - 1; kept as annotated when empty."""
    out = np.stack([np.maximum(box[:, 0], 0), np.maximum(box[:, 1], 0), np.minimum(box[:, 2], width - 1),
                    np.minimum(box[:, 3], height - 1)], axis=1)
    empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1]) | ~np.isfinite(out).all(axis=1)
    return np.where(empty[:, None], box, out)


def center_scale(box: np.ndarray, input_size: tuple[int, int], padding: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) centre and (N, 2) mmpose scale of boxes x1 y1 x2 y2 (already clipped)."""
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    aspect = input_size[0] / input_size[1]
    w2 = np.where(w < aspect * h, h * aspect, w)
    h2 = np.where(w > aspect * h, w / aspect, h)
    centre = np.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], axis=1)
    return centre, np.stack([w2, h2], axis=1) / PIXEL_STD * padding


def crop_affine(centre: np.ndarray, scale: np.ndarray, rules: TopDownRules) -> np.ndarray:
    """(N, 2, 3) image -> stored crop: zoom input_w / (200 scale_w), centre to the stored crop's middle."""
    zoom = rules.input[0] / (PIXEL_STD * scale[:, 0])
    sw, sh = rules.stored
    out = np.zeros((len(centre), 2, 3))
    out[:, 0, 0] = out[:, 1, 1] = zoom
    out[:, 0, 2] = sw / 2 - zoom * centre[:, 0]
    out[:, 1, 2] = sh / 2 - zoom * centre[:, 1]
    return out


class TopDownOracle:
    def __init__(self, manifest: Manifest, rules: TopDownRules) -> None:
        self.rules, self.table = rules, FaceTable.of(manifest)
        k = rules.num_points
        self.points = self.table.points if self.table.points is not None else np.full((len(self.table.boxes), k, 2),
                                                                                      np.nan)
        if self.points.shape[1] != k:
            raise FacedataError(f"the keypoint manifest has {self.points.shape[1]} points, the build {k}")
        labelled = np.isfinite(self.points).all(axis=2).any(axis=1)
        self.sampled = usable(self.table.boxes, self.table.flagged, 0.0) & (labelled | rules.keep_unlabelled)

    def check(self, checks: Checks) -> None:
        r, rules = checks.records, self.rules
        rows = np.arange(len(r))
        _fixed(checks, rows, "label", LABEL_LANDMARK)
        _fixed(checks, rows, "origin", ORIGIN_DETECTIONS)
        _fixed(checks, rows, "mirror", 0)
        why = "crowd, ignored, invalid, degenerate" + ("" if rules.keep_unlabelled else " or without a labelled point")
        rows = rows[face_check(checks, rows, self.table, self.sampled, why)]
        face = r["face_index"][rows].astype(np.int64)
        image = r["image_index"][rows].astype(np.int64)
        box = self.table.boxes[face].astype(np.float64)
        checks.close(rows, "box", box.astype(np.float32), 0)
        centre, scale = center_scale(_clipped(box, self.table.widths[image], self.table.heights[image]),
                                     rules.input, rules.padding)
        checks.close(rows, "center", centre, 1e-3)
        checks.close(rows, "scale", scale, 1e-5)
        affine = crop_affine(centre, scale, rules)
        found = r["affine"][rows].astype(np.float64)
        # compare where the two maps send the crop's own corners' preimages: pixels, not coefficients
        zoom = affine[:, 0, 0]
        sw, sh = rules.stored
        corners = np.array([[0, 0], [sw, 0], [0, sh], [sw, sh]], np.float64)
        pre = (corners[None] - affine[:, None, :, 2]) / zoom[:, None, None]
        moved = np.abs(np.einsum("nij,nkj->nki", found[:, :, :2], pre) + found[:, None, :, 2] - corners[None])
        far = ~(moved.max(axis=(1, 2)) <= POINT_ATOL)
        checks.add("affine", rows, far, lambda k: f"expected {affine[k].round(5).tolist()}, found "
                   f"{found[k].round(5).tolist()} (corners moved {moved[k].max():.3f} px)")
        points = self.points[face]
        mapped = np.einsum("nij,nkj->nki", affine[:, :, :2], points) + affine[:, None, :, 2]
        _close_nan(checks, rows, "keypoints", mapped, POINT_ATOL)
        codes = self.table.codes if self.table.codes is not None else np.zeros(self.points.shape[:2], np.int64)
        checks.close(rows, "visible", codes[face], 0)


def warp_through(image: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) uint8: stored-crop pixel index (i, j) shows the source at the inverse affine of (i, j)."""
    a = np.vstack([np.asarray(affine, np.float64), [0, 0, 1]])
    inv = np.linalg.inv(a)
    jj, ii = np.meshgrid(np.arange(size[1], dtype=np.float64), np.arange(size[0], dtype=np.float64), indexing="ij")
    sx = inv[0, 0] * ii + inv[0, 1] * jj + inv[0, 2]
    sy = inv[1, 0] * ii + inv[1, 1] * jj + inv[1, 2]
    return np.clip(np.rint(sample_bilinear(image, sx, sy)), 0, 255).astype(np.uint8)


def verify_topdown_pixels(dataset: Any, manifest: Manifest, *, n: int, seed: int = 0,
                          roots: dict[str, str] | None = None, tolerance: Tolerance = TOLERANCE) -> PixelReport:
    """Re-cut `n` topdown samples through their stored affine and compare (dataset: a reader or a
    (pixels, records) pair)."""
    if isinstance(dataset, tuple):
        dataset = ArraySource(*dataset)
    report = PixelReport(tolerance)
    if len(dataset) == 0:
        return report
    paths = manifest.image_paths(roots).tolist()
    sizes = manifest.images[["width", "height"]].to_numpy(np.float64, na_value=np.nan)
    indices = pick_samples(all_records(dataset), n, seed)
    pixels, records = dataset.read(indices)
    decoded: tuple[int, Any] = (-1, None)
    for k in np.argsort(records["image_index"], kind="stable").tolist():
        rec = records[k]
        image_index = int(rec["image_index"])
        path = paths[image_index] if 0 <= image_index < len(paths) else f"<image {image_index}>"
        if decoded[0] != image_index:
            decoded = (image_index, decode_source(path, sizes, image_index))
        image = decoded[1]
        result = dict(index=int(indices[k]), label=int(rec["label"]), origin=int(rec["origin"]), mirror=False,
                      angle=0.0, path=path)
        affine = rec["affine"].astype(np.float64)
        if isinstance(image, str) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-12:
            problem = image if isinstance(image, str) else f"affine {affine.tolist()} is not invertible"
            report.results.append(PixelResult(**result, mean_diff=float("inf"), max_diff=255, problem=problem))
            continue
        mine = warp_through(image, affine, (pixels.shape[2], pixels.shape[1]))
        report.results.append(PixelResult(**result, **compare_pixels(pixels[k], mine, tolerance)))
    report.results.sort(key=lambda r: r.index)
    return report


def concat_manifests(manifests: Iterable[Manifest]) -> Manifest:
    """The manifests' images and faces tables one after the other (a pfld build's row numbering)."""
    import pandas as pd

    parts = list(manifests)
    roots: dict[str, str] = {}
    for m in parts:
        roots.update(m.provenance.get("roots", {}))
    return Manifest(pd.concat([m.images for m in parts], ignore_index=True),
                    pd.concat([m.faces for m in parts], ignore_index=True), {"roots": roots})
