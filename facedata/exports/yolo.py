"""YOLO-face txt, one file per image at its rel_path with `.txt` (yolov5-face layout): `0 cx cy w h`
normalised by the image size, then, when the manifest has mtcnn5 points, `px py` per point normalised the
same way, `-1 -1` where absent. An image without faces gets an empty file (a pure negative).
"""

from __future__ import annotations

from pathlib import Path

from facedata.exports.base import (
    CONTENTS,
    MTCNN5,
    N_POINTS,
    SIZES,
    faces_by_image,
    mtcnn5_points,
    output_rel_path,
    register,
    text_file,
)
from facedata.manifest import Manifest

CLASS_ID = "0"


def _fraction(value: float, size: int) -> str:
    return format(float(value) / size, ".8g")


def _face_line(face, width: int, height: int, with_points: bool) -> str:
    x1, y1, x2, y2 = float(face.x1), float(face.y1), float(face.x2), float(face.y2)
    fields = [CLASS_ID, _fraction((x1 + x2) / 2, width), _fraction((y1 + y2) / 2, height),
              _fraction(x2 - x1, width), _fraction(y2 - y1, height)]
    if with_points:
        points = mtcnn5_points(face)
        for i in range(N_POINTS):
            if points is None or not points[1][i]:
                fields += ["-1", "-1"]
            else:
                fields += [_fraction(points[0][i][0], width), _fraction(points[0][i][1], height)]
    return " ".join(fields)


class YoloExport:
    name = "yolo"
    description = "YOLO-face txt per image (rel_path.txt: 0 cx cy w h [+ 5 points], normalised; needs sizes)"
    holds = frozenset({MTCNN5, SIZES})
    needs_sizes = True
    single_file = False

    def write(self, manifest: Manifest, out: Path) -> None:
        with_points = bool(CONTENTS[MTCNN5](manifest).any())
        groups = faces_by_image(manifest)
        for image in manifest.images.itertuples(index=False):
            target = out / output_rel_path(image.rel_path, ".txt")
            target.parent.mkdir(parents=True, exist_ok=True)
            group = groups.get(image.image_id)
            lines = [] if group is None else [
                _face_line(face, int(image.width), int(image.height), with_points) for face in group.itertuples()
            ]
            with text_file(target) as fh:
                fh.write("".join(line + "\n" for line in lines))


register(YoloExport())
