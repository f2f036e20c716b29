"""Pascal VOC XML, one file per image at its rel_path with `.xml` (the Ultra-Light-Fast detector's input).

Boxes are written in the manifest's frame: xmin = x1, ymin = y1, xmax = x2 = x + w, ymax = y2 (0-based,
continuous, right edge exclusive), not shifted to the 1-based pixel indices of the original Pascal VOC files.
This is what the WIDER -> VOC converters the face detectors train on write (Ultra-Light-Fast's
`wider_face_2_voc_add_landmark.py`, libfacedetection's WIDER_FACE_rect/landmark files: xmin = x, xmax = x + w), so
a loader that subtracts 1 as for VOC (Ultra-Light-Fast's `voc_dataset.py`) sees the same boxes as on their own
files. facedata's voc_xml parser reads the values as written, so export and ingest round-trip exactly.

Ignore regions are `difficult` objects (VOC's "exclude from evaluation"; voc_xml reads them back as `ignore`);
the image size is written when known (0 otherwise, as VOC tools do for unknown sizes). When the manifest has
mtcnn5 points, each face carries libfacedetection's landmark fields: `<lm>` x1 y1 .. x5 y5, `<visible>` (the
RetinaFace flag of the 5th point only, as those converters write it: 0 visible, 1 hidden) and `<blur>` (unknown,
-1), then `<has_lm>` (0 for a face without points). What this cannot hold is warned about: a face whose points are
only partly annotated is written without points, and hidden flags of points 1-4 are not written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from facedata.exports.base import (
    CONTENTS,
    HIDDEN,
    IGNORE,
    MTCNN5,
    SIZES,
    mtcnn5_points,
    number,
    register,
    write_per_image,
)
from facedata.manifest import Manifest
from facedata.schema import VISIBILITY_HIDDEN

NO_BLUR = "-1"


def _element(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _complete(face) -> tuple[np.ndarray, np.ndarray] | None:
    """The face's 5 points and codes when all 5 are annotated (the only points this form holds), else None."""
    points = mtcnn5_points(face)
    return points if points is not None and bool((points[1] > 0).all()) else None


def _codes(visible) -> np.ndarray:
    return np.asarray(visible if visible is not None else [], np.int8)


def _partial(manifest: Manifest) -> pd.Series:
    """Faces with some but not all of their 5 points (`<has_lm>` is all or nothing)."""
    some = manifest.faces["visible"].map(lambda v: bool((_codes(v) == 0).any() and (_codes(v) > 0).any()))
    return CONTENTS[MTCNN5](manifest) & some


def _hidden_before_last(manifest: Manifest) -> pd.Series:
    """Faces with a hidden point among points 1-4 (`<visible>` is the 5th point's flag only)."""
    return CONTENTS[HIDDEN](manifest) & manifest.faces["visible"].map(
        lambda v: bool((_codes(v)[:-1] == VISIBILITY_HIDDEN).any()))


def _landmarks(obj: ET.Element, face) -> None:
    points = _complete(face)
    if points is not None:
        lm = ET.SubElement(obj, "lm")
        for k, (x, y) in enumerate(points[0], start=1):
            _element(lm, f"x{k}", number(x))
            _element(lm, f"y{k}", number(y))
        _element(lm, "visible", "1" if points[1][-1] == VISIBILITY_HIDDEN else "0")
        _element(lm, "blur", NO_BLUR)
    _element(obj, "has_lm", "0" if points is None else "1")


def _document(image, faces: list, with_points: bool) -> str:
    root = ET.Element("annotation")
    path = PurePosixPath(image.rel_path)
    _element(root, "folder", "" if path.parent == PurePosixPath(".") else str(path.parent))
    _element(root, "filename", path.name)
    size = ET.SubElement(root, "size")
    known = pd.notna(image.width) and pd.notna(image.height)
    _element(size, "width", str(int(image.width)) if known else "0")
    _element(size, "height", str(int(image.height)) if known else "0")
    _element(size, "depth", "3" if known else "0")
    for face in faces:
        obj = ET.SubElement(root, "object")
        _element(obj, "name", "face")
        _element(obj, "pose", "Unspecified")
        _element(obj, "truncated", "0")
        _element(obj, "difficult", str(int(bool(face.ignore))))
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", face.x1), ("ymin", face.y1), ("xmax", face.x2), ("ymax", face.y2)):
            _element(box, tag, number(value))
        if with_points:
            _landmarks(obj, face)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class VocExport:
    name = "voc"
    description = "Pascal VOC XML per image (rel_path.xml; ignore regions as difficult; mtcnn5 points as <lm>)"
    holds = frozenset({MTCNN5, HIDDEN, IGNORE, SIZES})
    partly = {"mtcnn5 points with some absent": _partial, "hidden points other than the 5th": _hidden_before_last}
    needs_sizes = False
    single_file = False
    suffix = ".xml"

    def write(self, manifest: Manifest, out: Path) -> None:
        with_points = bool(CONTENTS[MTCNN5](manifest).any())
        write_per_image(manifest, out, self.suffix, lambda image, faces: _document(image, faces, with_points))


register(VocExport())
