"""AFLW2000-3D (3DDFA, Zhu et al. CVPR 2016): a folder of `imageNNNNN.mat` fits beside `imageNNNNN.jpg` -> `ibug68`
with head pose. Ingested by passing the folder (`facedata ingest AFLW2000 -o ...`); the image root is the folder.

Each `.mat` (landmark-formats spec, section 3.3): the 68 points are the first two rows (x, y; 0-based pixels of the
450x450 image) of `pt3d_68` (3x68, fitted by 3DDFA; row 2 is depth, not stored); the pose is `Pose_Para` 1x7
`[pitch, yaw, roll, tdx, tdy, tdz, scale]` in radians, stored in degrees with facedata.schema's sign convention
(3DDFA's own, checked on the real samples by the tests). `pt2d` (2x21) is the original AFLW 21-point annotation with
-1 for missing points: a different scheme, not read (never as 68 points). One face per image, its box derived from
the points.

Bad input, per file (the face is skipped, the file named): an empty or unreadable `.mat`, a missing `pt3d_68` or
`Pose_Para`, either of another shape or not numeric or finite, angles beyond +-pi; a missing image or one resolving
outside the folder; with probing, points beyond the image tolerance.
"""

from __future__ import annotations

import re
from pathlib import Path

from facedata.errors import Rejects
from facedata.manifest import Manifest
from facedata.parsers.base import ParseOptions, register
from facedata.parsers.landmarks import (
    POSE_PARA,
    FileFace,
    FolderFormat,
    find_image,
    folder_manifest,
    mat_files,
    mat_folder_matches,
    read_fit,
)

SCHEME = "ibug68"
POINTS = 68
SOURCE = ROOT = "aflw2000_3d"
POINTS_KEY = "pt3d_68"
NAME = re.compile(r"image\d+")  # image00002 ... image04375


def read_face(folder: Path, root: Path, file: Path, rejects: Rejects) -> FileFace | None:
    """The face of one `.mat` (points, pose, image beside it), or None after rejecting the file."""
    fit = read_fit(file, POINTS_KEY, (3, POINTS), rejects)
    if fit is None:
        return None
    rel_dir = file.parent.relative_to(folder).as_posix().removeprefix(".")
    return FileFace(file, find_image(root, [rel_dir], file.stem), fit[0][:2].T, pose=fit[1])


class Aflw2000(FolderFormat):
    name = "aflw2000_3d"
    description = (
        "AFLW2000-3D folder (pass the folder): image*.mat (pt3d_68 rows x y, Pose_Para) with the .jpg images; "
        "model-fitted ibug68 points + pose in degrees"
    )

    def sniff_folder(self, path: Path) -> bool:
        return mat_folder_matches(path, NAME, lambda names: {POINTS_KEY, POSE_PARA} <= names)

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        files, others = mat_files(path, NAME)
        root = Path(options.images or path)
        faces = [face for file in files if (face := read_face(path, root, file, options.rejects)) is not None]
        return folder_manifest(path, options, faces, fmt=self.name, source=SOURCE, root=ROOT, scheme=SCHEME,
                               files=files, other_mat_files=others,
                               pose_unit="degrees (Pose_Para radians converted)")


register(Aflw2000())
