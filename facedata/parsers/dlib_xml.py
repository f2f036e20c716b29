"""dlib imglab XML (`training.xml`, `testing_with_face_landmarks.xml`, ...): face boxes, optionally with 68 `part`s
(ibug68 order, names `00`..`67`), and `ignore` boxes -> ignore regions (the manifest's `ignore` column).

Grammar (dlib/data_io/image_dataset_metadata.cpp): `<dataset>` [`<name>`, `<comment>`] `<images>`, then per image
`<image file='rel/path.jpg' [width= height=]>` holding `<box top= left= width= height= [ignore='1'] ...>` elements,
each with an optional `<label>` and `<part name= x= y=/>` children. Paths are relative to the XML's folder (pass it
as `--images`). A box is stored as x1 = left, y1 = top, x2 = left + width, y2 = top + height (dlib's inclusive
right = left + width - 1 is our exclusive edge); parts are 0-based pixels, as dlib reads them. A box with parts must
have all 68, named 0..67 (a 5-point dlib file would otherwise pass as contour points); in a file where some boxes have
parts, a box without any gets its 68 points absent (NaN, visible 0). A file without parts gives boxes only.
Other box attributes (difficult, truncated, occluded, pose, angle, age, gender, detection_score, label) have no
manifest column: their counts are in provenance["box_attributes_not_stored"]. The XML is read with expat (no DTD or
external entity is fetched).

Bad input: malformed XML or a root other than `<dataset>` stops the file (a FacedataError naming the line). A bad
item drops its whole image (an unlabelled face in a kept image would be cut as background), named by XML line and
attribute: an `<image>` without `file`, an absolute or `..` path, a box attribute missing or not an integer, an
`ignore` value other than 0/1, a part without name/x/y, a non-numeric coordinate, a part name outside 0..67 or
given twice, a box with parts but not 68; a missing image, one resolving outside the root, or (probing) a face
beyond the image tolerance, or (probing) an image whose size is not the `<image>`'s declared width x height.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from facedata.errors import InputError, Rejects
from facedata.manifest import Manifest, ManifestBuilder
from facedata.parsers.base import (
    MAX_MAGNITUDE,
    CheckedImages,
    ParseOptions,
    check_images_and_faces,
    check_rel_path,
    image_id_for,
    infer_split,
    is_number,
    parse_xml,
    provenance,
    register,
)
from facedata.parsers.landmarks import point_names
from facedata.schema import VISIBILITY_ABSENT, VISIBILITY_VISIBLE

SCHEME = "ibug68"
POINTS = 68
SOURCE = "dlib_faces"
ROOT = "dlib"
BOX_FIELDS = ("top", "left", "width", "height")
NOT_STORED = ("difficult", "truncated", "occluded", "pose", "angle", "age", "gender", "detection_score", "label")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass
class XmlBox:
    line: int
    box: tuple[float, float, float, float]  # x1 y1 x2 y2
    ignore: bool
    parts: dict[int, tuple[float, float]] = field(default_factory=dict)


@dataclass
class XmlImage:
    line: int
    rel: str | None  # None = rejected
    boxes: list[XmlBox] = field(default_factory=list)
    size: tuple[str, str] = ("", "")  # the declared width and height attributes ("" = not given)


class _Reader:
    """expat handlers building XmlImage records; a bad item marks its image rejected (rel = None)."""

    def __init__(self, path: Path, rejects: Rejects) -> None:
        self.path, self.rejects = path, rejects
        self.parser = expat.ParserCreate()
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.text
        self.stack: list[str] = []
        self.images: list[XmlImage] = []
        self.meta: dict[str, str] = {}
        self.not_stored: Counter[str] = Counter()

    def reject(self, field_name: str, reason: str, kind: str) -> None:
        image = self.images[-1]
        where = f" (image {image.rel!r} dropped)" if image.rel is not None else ""
        self.rejects.reject(self.path, self.parser.CurrentLineNumber, field_name, reason + where, kind=kind)
        image.rel = None

    def start(self, name: str, attrs: dict[str, str]) -> None:
        line = self.parser.CurrentLineNumber
        parent = self.stack[-1] if self.stack else None
        self.stack.append(name)
        if parent is None and name != "dataset":
            raise InputError(self.path, line, "xml", f"root element must be <dataset> (dlib imglab), got <{name}>")
        if name == "image" and parent == "images":
            self._image(line, attrs)
        elif name == "box" and parent == "image" and self.images[-1].rel is not None:
            self._box(line, attrs)
        elif name == "part" and parent == "box" and self.images[-1].rel is not None and self.images[-1].boxes:
            self._part(attrs)
        if name == "box" and parent == "image":
            self.not_stored.update(a for a in attrs if a in NOT_STORED)
        elif name == "label" and parent == "box":
            self.not_stored["label"] += 1

    def end(self, name: str) -> None:
        self.stack.pop()

    def text(self, data: str) -> None:
        if len(self.stack) == 2 and self.stack[1] in ("name", "comment"):
            self.meta[self.stack[1]] = self.meta.get(self.stack[1], "") + data

    def _image(self, line: int, attrs: dict[str, str]) -> None:
        self.images.append(XmlImage(line, None))
        if "file" not in attrs:
            self.rejects.reject(self.path, line, "file", "<image> without a file attribute", kind="missing field")
            return
        self.images[-1].rel = check_rel_path(attrs["file"], self.rejects, self.path, line)
        self.images[-1].size = (attrs.get("width", "").strip(), attrs.get("height", "").strip())

    def _box(self, line: int, attrs: dict[str, str]) -> None:
        values = []
        for name in BOX_FIELDS:
            raw = attrs.get(name)
            if raw is None or not _INTEGER.fullmatch(raw.strip()) or not is_number(raw):
                got = "missing" if raw is None else repr(raw)
                return self.reject(name, f"<box> {name}: expected an integer of at most {MAX_MAGNITUDE:g} in "
                                   f"magnitude, got {got}", "bad number")
            values.append(int(raw))
        ignore = attrs.get("ignore", "0").strip()
        if ignore not in ("0", "1"):
            return self.reject("ignore", f"<box> ignore: expected 0 or 1, got {ignore!r}", "bad attribute")
        top, left, width, height = values
        self.images[-1].boxes.append(XmlBox(line, (left, top, left + width, top + height), ignore == "1"))
        return None

    def _part(self, attrs: dict[str, str]) -> None:
        parts = self.images[-1].boxes[-1].parts
        missing = [a for a in ("name", "x", "y") if a not in attrs]
        if missing:
            return self.reject(missing[0], f"<part> without {missing[0]}", "missing field")
        name = attrs["name"].strip()
        if not name.isdigit() or int(name) >= POINTS or int(name) in parts:
            why = "given twice" if name.isdigit() and int(name) in parts else f"expected 0..{POINTS - 1} ({SCHEME})"
            return self.reject("name", f"<part> name {name!r}: {why}", "bad part")
        xy = []
        for axis in "xy":
            if not is_number(attrs[axis]):
                return self.reject(axis, f"<part> {name} {axis}: expected a finite number, got {attrs[axis]!r}",
                                   "bad number")
            xy.append(float(attrs[axis]))
        parts[int(name)] = (xy[0], xy[1])
        return None

    def read(self) -> None:
        parse_xml(self.parser, self.path)
        for image in self.images:
            for box in image.boxes:
                if box.parts and len(box.parts) != POINTS and image.rel is not None:
                    self.rejects.reject(self.path, box.line, "part", f"a box with parts needs all {POINTS} "
                                        f"({SCHEME}), got {len(box.parts)} (image {image.rel!r} dropped)",
                                        kind="wrong point count")
                    image.rel = None


def _faces(images: list[XmlImage]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """(owner, boxes, ignore, lines, points (N, 68, 2) NaN = absent, whether any box has parts) of the images."""
    boxes = [(i, box) for i, image in enumerate(images) for box in image.boxes]
    points = np.full((len(boxes), POINTS, 2), np.nan)
    for row, (_, box) in enumerate(boxes):
        for index, xy in box.parts.items():
            points[row, index] = xy
    return (
        np.array([i for i, _ in boxes], np.int64),
        np.array([b.box for _, b in boxes], np.float64).reshape(-1, 4),
        np.array([b.ignore for _, b in boxes], bool),
        np.array([b.line for _, b in boxes], np.int64),
        points,
        any(b.parts for _, b in boxes),
    )


def _check_declared_sizes(
    path: Path, images: list[XmlImage], checked: CheckedImages, owner: np.ndarray, rejects: Rejects
) -> None:
    """Drop (in `checked`) each probed image whose size differs from the XML's width/height: a resized or wrong
    image file, whose boxes would not fit it."""
    for i, image in enumerate(images):
        probed = (checked.width[i], checked.height[i])
        if not checked.keep_image[i] or probed[0] is None or not all(image.size):
            continue
        if image.size != (str(probed[0]), str(probed[1])):
            rejects.reject(path, image.line, "width", f"the XML declares {image.size[0]}x{image.size[1]}, the image "
                           f"file {image.rel!r} is {probed[0]}x{probed[1]} (image dropped)", kind="size mismatch")
            checked.keep_image[i] = False
    checked.keep_face &= checked.keep_image[owner]


class DlibXml:
    name = "dlib_xml"
    description = "dlib imglab XML (training.xml, *_with_face_landmarks.xml): boxes, optional 68 parts (ibug68), ignore"

    def sniff(self, path: Path, head: bytes) -> bool:
        return b"<dataset>" in head and b"<images>" in head

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        reader = _Reader(path, options.rejects)
        reader.read()
        images = [image for image in reader.images if image.rel is not None]
        owner, boxes, ignore, lines, points, has_parts = _faces(images)
        checked = check_images_and_faces(
            path, options, [(image.rel, image.line) for image in images], owner, boxes,  # type: ignore[misc]
            same=np.column_stack([boxes, ignore, points.reshape(len(boxes), 2 * POINTS)]), lines=lines,
            points=points if has_parts else None, point_names=point_names(POINTS) if has_parts else (),
        )
        _check_declared_sizes(path, images, checked, owner, options.rejects)
        builder = ManifestBuilder(SOURCE, infer_split(path, options.split), ROOT)
        for i, image in enumerate(images):
            if checked.keep_image[i]:
                builder.add_image(image_id_for(image.rel), image.rel, width=checked.width[i],  # type: ignore[arg-type]
                                  height=checked.height[i])
        keep = checked.keep_face
        kept_points = points[keep] if has_parts else None
        builder.add_faces(
            np.array([image_id_for(images[i].rel) for i in owner[keep]], dtype=object),  # type: ignore[arg-type]
            boxes[keep], scheme=SCHEME if has_parts else None, points=kept_points, source_lines=lines[keep],
            ignore=ignore[keep],
            visible=None if kept_points is None else np.where(np.isnan(kept_points[..., 0]), VISIBILITY_ABSENT,
                                                              VISIBILITY_VISIBLE),
        )
        return builder.build(provenance(
            self.name, path, ROOT, options, dataset_name=reader.meta.get("name", "").strip(),
            comment=reader.meta.get("comment", "").strip(), boxes=len(boxes), ignore_boxes=int(ignore.sum()),
            duplicates=checked.repeats, box_attributes_not_stored=dict(sorted(reader.not_stored.items())),
        ))


register(DlibXml())
