"""RetinaFace `label.txt`: `# rel_path` per image, then one `x y w h` line per face, with the 5 points when
the manifest has mtcnn5 points: `px py flag` per point, flag 0.0 visible / 1.0 hidden (the WIDER landmark
annotation's code), `-1 -1 -1` where absent (every point of a face without points). An image without faces
is its `#` line alone.
"""

from __future__ import annotations

from pathlib import Path

from facedata.exports.base import (
    CONTENTS,
    HIDDEN,
    MTCNN5,
    faces_by_image,
    number,
    point_fields,
    register,
    text_file,
)
from facedata.manifest import Manifest

ABSENT = "-1 -1 -1"
FLAGS = {1: "1.0", 2: "0.0"}  # manifest visibility code -> RetinaFace flag


def _face_line(face, with_points: bool) -> str:
    w, h = float(face.x2) - float(face.x1), float(face.y2) - float(face.y1)
    fields = [number(face.x1), number(face.y1), number(w), number(h)]
    if with_points:
        fields += point_fields(face, ABSENT, lambda x, y, code: f"{number(x)} {number(y)} {FLAGS[code]}")
    return " ".join(fields)


class RetinaFaceExport:
    name = "retinaface"
    description = "RetinaFace label.txt ('# path', then x y w h [+ 5 points with flags, -1 where absent])"
    holds = frozenset({MTCNN5, HIDDEN})
    needs_sizes = False
    single_file = True

    def write(self, manifest: Manifest, out: Path) -> None:
        with_points = bool(CONTENTS[MTCNN5](manifest).any())
        groups = faces_by_image(manifest)
        with text_file(out) as fh:
            for image in manifest.images.itertuples(index=False):
                fh.write(f"# {image.rel_path}\n")
                group = groups.get(image.image_id)
                for face in () if group is None else group.itertuples():
                    fh.write(_face_line(face, with_points) + "\n")


register(RetinaFaceExport())
