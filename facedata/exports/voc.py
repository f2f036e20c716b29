"""Pascal VOC XML, one file per image at its rel_path with `.xml` (the Ultra-Light-Fast detector's input).

Boxes are written in the manifest's frame (xmin = x1, xmax = x2: 0-based, right edge exclusive), not shifted
to VOC's 1-based pixels. Ignore regions are `difficult` objects (VOC's "exclude from evaluation"); the image
size is written when known (0 otherwise, as VOC tools do for unknown sizes).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import pandas as pd

from facedata.exports.base import IGNORE, SIZES, number, register, write_per_image
from facedata.manifest import Manifest


def _element(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _document(image, faces: list) -> str:
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
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class VocExport:
    name = "voc"
    description = "Pascal VOC XML per image (rel_path.xml; ignore regions as difficult)"
    holds = frozenset({IGNORE, SIZES})
    needs_sizes = False
    single_file = False
    suffix = ".xml"

    def write(self, manifest: Manifest, out: Path) -> None:
        write_per_image(manifest, out, self.suffix, _document)


register(VocExport())
