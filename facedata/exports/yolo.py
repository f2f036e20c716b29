"""YOLO-face txt, one file per image at its rel_path with `.txt` (yolov5-face layout): `0 cx cy w h`
normalised by the image size, then, when the manifest has mtcnn5 points, `px py` per point normalised the
same way, `-1 -1` where absent. An image without faces gets an empty file (a pure negative).
"""

from __future__ import annotations

from pathlib import Path

from facedata.exports.base import (
    CONTENTS,
    MTCNN5,
    SIZES,
    point_fields,
    register,
    write_per_image,
)
from facedata.manifest import Manifest

CLASS_ID = "0"
ABSENT = "-1 -1"


def _fraction(value: float, size: int) -> str:
    return format(float(value) / size, ".8g")


def _face_line(face, width: int, height: int, with_points: bool) -> str:
    x1, y1, x2, y2 = float(face.x1), float(face.y1), float(face.x2), float(face.y2)
    fields = [CLASS_ID, _fraction((x1 + x2) / 2, width), _fraction((y1 + y2) / 2, height),
              _fraction(x2 - x1, width), _fraction(y2 - y1, height)]
    if with_points:
        fields += point_fields(face, ABSENT, lambda x, y, _: f"{_fraction(x, width)} {_fraction(y, height)}")
    return " ".join(fields)


class YoloExport:
    name = "yolo"
    description = "YOLO-face txt per image (rel_path.txt: 0 cx cy w h [+ 5 points], normalised; needs sizes)"
    holds = frozenset({MTCNN5, SIZES})
    partly: dict = {}
    needs_sizes = True
    single_file = False
    suffix = ".txt"

    def write(self, manifest: Manifest, out: Path) -> None:
        with_points = bool(CONTENTS[MTCNN5](manifest).any())

        def render(image, faces: list) -> str:
            width, height = int(image.width), int(image.height)
            return "".join(_face_line(face, width, height, with_points) + "\n" for face in faces)

        write_per_image(manifest, out, self.suffix, render)


register(YoloExport())
