"""COCO keypoint JSON -> one face row per annotation: COCO person keypoints (`coco17`), mmpose's COCO-style
re-exports of face sets (WFLW, 300W, 300VW, 300W-LP, LaPa, AFLW, COFW) and, with `--wholebody-face`, the 68
COCO-WholeBody face points (`face_kpts`, `ibug68`).

Fields: `keypoints` [x, y, v] * K in 0-based pixels, v 0 not labelled (x = y = 0 in COCO: stored as NaN with
visible 0), 1 labelled but hidden, 2 visible; `bbox` [x, y, w, h] -> x1 y1 x2 y2 = x, y, x + w, y + h (a
missing bbox, as in mmpose's 300VW export, is derived from the labelled points); `iscrowd` 1 -> an ignore
region (manifest `ignore`); `num_keypoints` 0 -> a person kept without points (null `points` and `scheme`).
Every image of `images` is kept, those without annotations as images without faces. The scheme is `--scheme`,
else the category's keypoint names, else the keypoint count (98 wflw98, 106 lapa106, 19 aflw19, 29 cofw29,
17 with a `person` category coco17); any other count (68: iBUG order or another?) is refused, never guessed.
mmpose's face converters write v = 1 for every point ("labelled"): a face file with no v = 2 anywhere stores
its points as visible (2), the way the text parsers store the same corpora (provenance "visibility").

The JSON is read by the json module with an object hook that reduces each annotation and image to its fields
as soon as it is decoded, appended to flat per-field arrays: segmentation polygons are dropped at once and no
Python object is kept per point (decoding a 64 MB file peaks at 123 MB, a plain json.load at 318 MB; see the
data card for the whole ingest).

Bad input (named by file, annotation id and image id, and field; the annotation or image is skipped): an
image without an integer id, a duplicate image id, a `file_name` that is absolute, climbs out of the root or
gives another entry's image id (the image is skipped with its annotations); an annotation with a non-integer
or duplicate id, of an unknown image id, a `keypoints` array of the wrong length or with a non-number, a
visibility not 0/1/2, a `num_keypoints` that disagrees with the labelled points, an `iscrowd` not 0/1, a bbox
that is not 4 numbers or has a negative size, no bbox and no labelled point; an identical repeated annotation
is kept once and reported; with `--images`, missing images, sizes other than the JSON's, faces outside the image.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError, InputError, Rejects
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest, ManifestBuilder
from facedata.parsers.base import (
    FaceArrays,
    ParseOptions,
    add_all_faces,
    check_images_and_faces,
    check_rel_path,
    finite_values,
    image_id_for,
    image_order,
    infer_split,
    provenance,
    register,
)
from facedata.parsers.landmarks import point_names, points_extent
from facedata.schema import VISIBILITY_VISIBLE

SOURCE = ROOT = "coco"
PERSON = "coco17"
WHOLEBODY_FACE = "ibug68"
WHOLEBODY_FACE_POINTS = 68
# point counts that name one scheme (mmpose's face re-exports carry no keypoint names); 17 needs a person category
SCHEME_BY_COUNT = {98: "wflw98", 106: "lapa106", 19: "aflw19", 29: "cofw29"}
VISIBILITY = (0, 1, 2)


@dataclass
class _Collected:
    """What the object hook keeps of each annotation and image: flat per-field arrays, one entry per record."""

    wholebody: bool
    ann_id: list[Any] = field(default_factory=list)
    image_id: list[Any] = field(default_factory=list)
    iscrowd: list[Any] = field(default_factory=list)
    num_keypoints: list[Any] = field(default_factory=list)
    problem: list[tuple[str, str] | None] = field(default_factory=list)  # (field, reason) of a malformed record
    bbox: array = field(default_factory=lambda: array("d"))  # 4 per annotation, NaN when absent
    kpt_len: list[int] = field(default_factory=list)
    kpts: array = field(default_factory=lambda: array("d"))
    face_valid: list[bool] = field(default_factory=list)
    face_fields: bool = False  # some annotation has `face_kpts` (a COCO-WholeBody file)
    images: list[tuple[Any, Any, Any, Any]] = field(default_factory=list)  # id, file_name, width, height

    def hook(self, pairs: list[tuple[str, Any]]) -> Any:
        record = dict(pairs)
        if "image_id" in record:
            self._annotation(record)
            return None
        if "file_name" in record:
            self.images.append((record.get("id"), record.get("file_name"), record.get("width"), record.get("height")))
            return None
        if "counts" in record and "size" in record:  # RLE segmentation of a crowd
            return None
        return record

    def _annotation(self, record: dict[str, Any]) -> None:
        self.ann_id.append(record.get("id"))
        self.image_id.append(record.get("image_id"))
        crowd = record.get("iscrowd", 0)
        self.iscrowd.append(crowd)
        self.num_keypoints.append(record.get("num_keypoints"))
        problem = None
        valid = bool(record.get("face_valid", False)) if self.wholebody else True
        self.face_fields |= "face_kpts" in record
        self.face_valid.append(valid)
        box_key = "face_box" if self.wholebody and valid else "bbox"  # no valid face: the person's box (_box_key)
        kpt_key = "face_kpts" if self.wholebody else "keypoints"
        box = _numbers(record.get(box_key))
        if record.get(box_key) is not None and (box is None or len(box) != 4):
            problem = (box_key, f"expected 4 numbers [x, y, w, h], got {_short(record.get(box_key))}")
            box = None
        if crowd not in (0, 1) or isinstance(crowd, bool):
            problem = problem or ("iscrowd", f"expected 0 or 1, got {_short(crowd)}")
        self.bbox.extend(box if box is not None else array("d", [np.nan] * 4))
        values = _numbers(record.get(kpt_key)) if valid else array("d")
        if values is None:
            got = _short(record.get(kpt_key))
            problem = problem or (kpt_key, f"expected a list of numbers [x, y, v, ...], got {got}")
            values = array("d")
        self.kpt_len.append(len(values))
        self.kpts.extend(values)
        self.problem.append(problem)


def _numbers(value: Any) -> array | None:
    """A JSON list of numbers as doubles, else None (booleans and strings are not numbers)."""
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        return None
    return array("d", value)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choose_scheme(path: Path, requested: str | None, count: int, categories: list[dict[str, Any]]) -> str:
    """The landmark scheme of a file's K keypoints: `--scheme`, else keypoint names, else an unambiguous count."""
    if requested is not None:
        scheme = SCHEMES.get(requested)
        if count and scheme.num_points != count:
            raise FacedataError(f"--scheme {requested}: has {scheme.num_points} points, the annotations of {path} "
                                f"have {count}")
        return requested
    names = [tuple(c["keypoints"]) for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    for name, scheme in SCHEMES:
        if scheme.point_names in names:
            return name
    persons = any(isinstance(c, dict) and c.get("name") == "person" and c.get("keypoints") for c in categories)
    if count == SCHEMES.get(PERSON).num_points and persons:
        return PERSON
    if count in SCHEME_BY_COUNT:
        return SCHEME_BY_COUNT[count]
    same = [name for name, s in SCHEMES if s.num_points == count]
    could = f"could be {' or '.join(same)} or another {count}-point order" if same else "no scheme is known"
    raise FacedataError(f"{path}: {count} keypoints per annotation without keypoint names: {could}; refusing to "
                        "guess, pass --scheme")


def load(path: Path, wholebody: bool) -> tuple[_Collected, list[dict[str, Any]]]:
    """Decode the file through the collecting hook: (collected records, categories)."""
    collected = _Collected(wholebody)
    try:
        with open(path, encoding="utf-8-sig") as fh:  # text mode: the file is held once, as str, not also as bytes
            document = json.load(fh, object_pairs_hook=collected.hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, getattr(exc, "lineno", None), "file", f"not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list) \
            or not isinstance(document.get("images"), list):
        raise InputError(path, None, "file", "expected a COCO JSON object with 'images' and 'annotations' lists")
    categories = document.get("categories")
    return collected, categories if isinstance(categories, list) else []


@dataclass
class _Images:
    rels: list[str]
    ids: dict[Any, int]  # COCO image id -> index
    rejected: set[Any]  # ids of image entries already reported: their annotations go with them, unreported
    declared: list[tuple[Any, Any]]  # width, height from the JSON


def check_images(path: Path, collected: _Collected, rejects: Rejects) -> _Images:
    """The usable images: integer unique ids, relative file names unique per image."""
    rels: list[str] = []
    ids: dict[Any, int] = {}
    declared: list[tuple[Any, Any]] = []
    owner_of_name: dict[str, Any] = {}
    rejected: set[Any] = set()
    for coco_id, name, width, height in collected.images:
        where = f"image id {coco_id}"
        if not _is_int(coco_id):
            rejects.reject(path, None, "id", f"{where}: expected an integer image id", kind="bad image id")
            continue
        if coco_id in ids:
            rejects.reject(path, None, "id", f"{where}: duplicate image id; this one skipped", kind="duplicate id")
            continue
        rejected.add(coco_id)
        if not isinstance(name, str) or not name.strip():
            rejects.reject(path, None, "file_name", f"{where}: expected a file name, got {_short(name)}",
                           kind="bad path")
            continue
        local = Rejects()  # check_rel_path's reason, re-reported naming the image id and the JSON field
        rel = check_rel_path(name, local, path, None)
        if rel is None:
            rejects.reject(path, None, "file_name", f"{where}: {local.items[0].reason}", kind="bad path")
            continue
        key = image_id_for(rel)
        if key in owner_of_name:
            rejects.reject(path, None, "file_name", f"{where}: {rel!r} is also image id {owner_of_name[key]}; "
                           "this one skipped", kind="duplicate image")
            continue
        rejected.discard(coco_id)
        owner_of_name[key] = coco_id
        ids[coco_id] = len(rels)
        rels.append(rel)
        declared.append((width, height))
    return _Images(rels, ids, rejected - set(ids), declared)


def check_annotations(path: Path, collected: _Collected, images: _Images, rejects: Rejects) -> np.ndarray:
    """Mask of the annotations whose id, image id and structure are right (in file order)."""
    ok = np.zeros(len(collected.ann_id), bool)
    seen: dict[Any, Any] = {}
    for i, (ann, image, problem) in enumerate(zip(collected.ann_id, collected.image_id, collected.problem,
                                                  strict=True)):
        where = f"annotation id {ann} (image id {image})"
        if not _is_int(ann):
            rejects.reject(path, None, "id", f"{where}: expected an integer annotation id", kind="bad annotation id")
        elif ann in seen:
            rejects.reject(path, None, "id", f"{where}: duplicate annotation id (first in image id {seen[ann]}); "
                           "this one skipped", kind="duplicate id")
        elif _is_int(image) and image in images.rejected:  # a list as image_id is not hashable
            seen[ann] = image
        elif not _is_int(image) or image not in images.ids:
            seen[ann] = image
            rejects.reject(path, None, "image_id", f"{where}: no image with this id", kind="unknown image")
        elif problem is not None:
            seen[ann] = image
            rejects.reject(path, None, problem[0], f"{where}: {problem[1]}", kind="bad field")
        else:
            seen[ann] = image
            ok[i] = True
    return ok


@dataclass
class _Faces:
    """Per-annotation arrays, all rows (only those with ok True are used)."""

    boxes: np.ndarray  # (N, 4) x1 y1 x2 y2 (derived where no bbox)
    derived: np.ndarray  # (N,) bool
    points: np.ndarray  # (N, K, 2) NaN where absent
    visible: np.ndarray  # (N, K) int8
    ignore: np.ndarray  # (N,) bool
    with_points: np.ndarray  # (N,) bool: any labelled point


def check_values(path: Path, collected: _Collected, count: int, ok: np.ndarray, rejects: Rejects) -> _Faces:
    """Check keypoints, num_keypoints and boxes column-wise (rejected annotations get ok = False)."""
    values = _keypoint_values(path, collected, count, ok, rejects)
    present = values[..., 2] > 0
    if not collected.wholebody:
        declared = collected.num_keypoints
        for i in np.flatnonzero(ok):
            if declared[i] is not None and declared[i] != int(present[i].sum()):
                _reject(path, collected, i, "num_keypoints", f"says {declared[i]}, {int(present[i].sum())} "
                        "keypoints have v > 0", "wrong point count", rejects)
                ok[i] = False
    points = np.where(present[..., None], values[..., :2], np.nan)
    boxes, derived = _boxes(path, collected, points, ok, rejects)
    visible = np.where(present, VISIBILITY_VISIBLE if collected.wholebody else values[..., 2], 0).astype(np.int8)
    crowd = np.asarray([c == 1 for c in collected.iscrowd], bool)
    valid = np.asarray(collected.face_valid, bool)
    return _Faces(boxes, derived, points, visible, crowd | ~valid, present.any(axis=1))


def _keypoint_values(path: Path, collected: _Collected, count: int, ok: np.ndarray, rejects: Rejects) -> np.ndarray:
    """(N, K, 3) x y v of every annotation (zeros where rejected or without a valid face), lengths and values
    checked: 3K numbers, finite coordinates, v in 0/1/2 (WholeBody faces: any v >= 0, v > 0 = reliable)."""
    lengths = np.asarray(collected.kpt_len, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    valid = np.asarray(collected.face_valid, bool)
    key = "face_kpts" if collected.wholebody else "keypoints"
    for i in np.flatnonzero(ok & (lengths != np.where(valid, 3 * count, 0))):
        _reject(path, collected, i, key, f"expected {3 * count} values ({count} points x y v), got {lengths[i]}",
                "wrong point count", rejects)
        ok[i] = False
    values = np.zeros((len(ok), count, 3))
    take = ok & valid
    if take.any():
        flat = np.frombuffer(collected.kpts, np.float64)
        values[take] = flat[starts[take, None] + np.arange(3 * count)].reshape(-1, count, 3)
    v = values[..., 2]
    bad_v = (~np.isfinite(v) | (v < 0)) if collected.wholebody else ~np.isin(v, VISIBILITY)
    bad_xy = ~finite_values(values[..., :2]).all(axis=2)
    expected = "a number >= 0" if collected.wholebody else "0, 1 or 2"
    for i in np.flatnonzero(ok & (bad_v | bad_xy).any(axis=1)):
        j = int(np.flatnonzero(bad_v[i] | bad_xy[i])[0])
        what = f"visibility {v[i, j]:g}, expected {expected}" if bad_v[i, j] else "a coordinate that is not finite"
        _reject(path, collected, i, key, f"point {j} has {what}", "bad keypoint", rejects)
        ok[i] = False
    return values


def _boxes(
    path: Path, collected: _Collected, points: np.ndarray, ok: np.ndarray, rejects: Rejects
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) x1 y1 x2 y2 from `[x, y, w, h]`, or the extent of the labelled points where there is no box
    (derived mask); a negative size, or neither a box nor a point, is rejected."""
    raw = np.frombuffer(collected.bbox, np.float64).reshape(-1, 4)
    has_box = finite_values(raw).all(axis=1)
    for i in np.flatnonzero(ok & has_box & ((raw[:, 2] < 0) | (raw[:, 3] < 0))):
        _reject(path, collected, i, _box_key(collected, i), f"negative size w = {raw[i, 2]:g}, h = {raw[i, 3]:g}",
                "bad box", rejects)
        ok[i] = False
    for i in np.flatnonzero(ok & ~has_box & ~np.isfinite(points).any(axis=(1, 2))):
        _reject(path, collected, i, _box_key(collected, i), "no box and no labelled keypoint", "bad box", rejects)
        ok[i] = False
    boxes = np.column_stack([raw[:, :2], raw[:, :2] + raw[:, 2:]])
    derived = ~has_box & ok
    if derived.any():
        boxes[derived] = points_extent(points[derived])
    return boxes, ~has_box


def _box_key(collected: _Collected, i: int) -> str:
    """The JSON field a row's box comes from (a WholeBody person without a valid face: the person's bbox)."""
    return "face_box" if collected.wholebody and collected.face_valid[i] else "bbox"


def _reject(path: Path, collected: _Collected, i: int, name: str, reason: str, kind: str, rejects: Rejects) -> None:
    where = f"annotation id {collected.ann_id[i]} (image id {collected.image_id[i]})"
    rejects.reject(path, None, name, f"{where}: {reason}", kind=kind)


class CocoKeypoints:
    name = "coco_keypoints"
    description = (
        "COCO keypoint JSON: person_keypoints_*.json (coco17; iscrowd -> ignore) and COCO-style face re-exports "
        "(mmpose WFLW/300W/LaPa/AFLW/COFW; scheme from --scheme, names or count); --wholebody-face: COCO-WholeBody "
        "face_kpts (ibug68)"
    )
    options = ("scheme", "wholebody_face")

    def sniff(self, path: Path, head: bytes) -> bool:
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        return text.startswith(b"{") and any(k in head for k in (b'"annotations"', b'"images"', b'"categories"'))

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        wholebody = bool(options.format_options.get("wholebody_face"))
        requested = options.format_options.get("scheme")
        if wholebody and requested not in (None, WHOLEBODY_FACE):
            raise FacedataError(f"--scheme {requested}: --wholebody-face reads {WHOLEBODY_FACE} points")
        collected, categories = load(path, wholebody)
        if wholebody and collected.ann_id and not collected.face_fields:
            raise FacedataError(f"--wholebody-face: no annotation of {path} has face_kpts (not COCO-WholeBody)")
        rejects = options.rejects
        images = check_images(path, collected, rejects)
        ok = check_annotations(path, collected, images, rejects)
        if wholebody:
            scheme, count = WHOLEBODY_FACE, WHOLEBODY_FACE_POINTS
        else:
            lengths = np.asarray(collected.kpt_len, np.int64)[ok]
            common = np.bincount(lengths[lengths > 0]).argmax() if (lengths > 0).any() else 0
            scheme = choose_scheme(path, requested, int(common) // 3, categories)
            count = SCHEMES.get(scheme).num_points
        faces = check_values(path, collected, count, ok, rejects)
        labelled_as_1 = scheme != PERSON and not wholebody and bool(ok.any()) \
            and not (faces.visible[ok] == VISIBILITY_VISIBLE).any()
        if labelled_as_1:
            faces.visible[faces.visible > 0] = VISIBILITY_VISIBLE
        return self._build(path, options, collected, images, ok, faces, scheme, labelled_as_1)

    def _build(self, path: Path, options: ParseOptions, collected: _Collected, images: _Images, ok: np.ndarray,
               faces: _Faces, scheme: str, labelled_as_1: bool) -> Manifest:
        rows = np.flatnonzero(ok)
        owner = np.asarray([images.ids[collected.image_id[i]] for i in rows], np.int64)
        k = faces.points.shape[1]
        checked = check_images_and_faces(
            path, options, [(rel, None) for rel in images.rels], owner, faces.boxes[rows],
            same=np.column_stack([faces.boxes[rows], faces.points[rows].reshape(len(rows), 2 * k)]), lines=None,
            points=faces.points[rows], point_names=point_names(k),
        )
        keep_image = checked.keep_image & self._same_size(path, options, images, checked)
        builder = ManifestBuilder(SOURCE, infer_split(path, options.split), ROOT)
        image_ids = []
        for index in np.flatnonzero(keep_image):
            image_ids.append(image_id_for(images.rels[index]))
            builder.add_image(image_ids[-1], images.rels[index], width=checked.width[index],
                              height=checked.height[index])
        kept_faces = checked.keep_face & keep_image[owner]
        kept = image_order(owner, kept_faces)
        f = rows[kept]
        add_all_faces(builder, image_ids, FaceArrays(
            boxes=faces.boxes[f], counts=np.bincount(owner[kept], minlength=len(images.rels))[keep_image],
            points=faces.points[f], visible=faces.visible[f], scheme=scheme, derived_box=faces.derived[f],
            ignore=faces.ignore[f]))
        extra = {"visibility": "labelled-as-1"} if labelled_as_1 else {}
        manifest = builder.build(provenance(
            self.name, path, ROOT, options, records=len(collected.ann_id), duplicates=checked.repeats,
            scheme=scheme, wholebody_face=collected.wholebody, crowd=int(faces.ignore[f].sum()), **extra))
        return _per_face_columns(manifest, faces, f)

    @staticmethod
    def _same_size(path: Path, options: ParseOptions, images: _Images, checked: Any) -> np.ndarray:
        """Images whose probed size is the JSON's width x height (a resized or other file is dropped)."""
        same = np.ones(len(images.rels), bool)
        for index, (width, height) in enumerate(images.declared):
            probed = (checked.width[index], checked.height[index])
            if checked.keep_image[index] and probed[0] is not None and (width, height) != probed \
                    and _is_int(width) and _is_int(height):
                options.rejects.reject(path, None, "width", f"image {images.rels[index]!r}: the JSON says "
                                       f"{width}x{height}, the file is {probed[0]}x{probed[1]}; image dropped",
                                       kind="wrong image size")
                same[index] = False
        return same


def _per_face_columns(manifest: Manifest, faces: _Faces, rows: np.ndarray) -> Manifest:
    """No points for a person without labelled keypoints (the builder takes points for every face of a call)."""
    table = manifest.faces
    if not len(table):
        return manifest
    bare = ~faces.with_points[rows]
    table.loc[bare, ["scheme", "points", "visible"]] = None
    return manifest


register(CocoKeypoints())
