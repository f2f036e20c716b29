"""RetinaFace `label.txt`: `# rel_path` per image, then one `x y w h` line per face. When the manifest has mtcnn5
points every face line has the published train file's 20 fields: `x y w h`, then `px py flag` per point, then a
score. The flag is insightface's (`rcnn/dataset/retinaface.py`, insightface issues 664 and 889): 0.0 visible,
1.0 annotated but not visible (manifest code 1, hidden), `-1.0 -1.0 -1.0` absent (every point of a face without
points); the loader treats a point at exactly (-1, -1) as absent whatever its flag. The score (the last field,
which insightface reads as the face's blur) is not in the manifest, so it is written as -1.0, the file's own
"no attribute" value. Without points a face line is `x y w h` (the published val file). An image without faces
is its `#` line alone. `facedata ingest` (retinaface_txt) reads all of it back.
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

ABSENT = "-1.0 -1.0 -1.0"
FLAGS = {1: "1.0", 2: "0.0"}  # manifest visibility code -> RetinaFace flag
NO_SCORE = "-1.0"


def _face_line(face, with_points: bool) -> str:
    w, h = float(face.x2) - float(face.x1), float(face.y2) - float(face.y1)
    fields = [number(face.x1), number(face.y1), number(w), number(h)]
    if with_points:
        fields += point_fields(face, ABSENT, lambda x, y, code: f"{number(x)} {number(y)} {FLAGS[code]}")
        fields.append(NO_SCORE)
    return " ".join(fields)


class RetinaFaceExport:
    name = "retinaface"
    description = "RetinaFace label.txt ('# path', then x y w h [+ 5 points with flags, -1 where absent])"
    holds = frozenset({MTCNN5, HIDDEN})
    partly: dict = {}
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
