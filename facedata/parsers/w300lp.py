"""300W-LP (3DDFA, Zhu et al. CVPR 2016): a folder of per-image `.mat` fits and/or `landmarks/*_pts.mat` -> `ibug68`
with head pose. Ingested by passing the folder (`facedata ingest 300W_LP -o ...`); the image root is the folder.

Only `.mat` files named like 300W-LP's (`<SUBSET>_<orig-name>_<k>[_pts].mat`) are read; others (model files of
the release's `Code/` folder) are passed over and counted in provenance["other_mat_files"]. Two forms, read together
when both are present (landmark-formats spec, section 3):
- `<SUBSET>/<name>.mat` beside `<SUBSET>/<name>.jpg`: `pt2d` 2x68 (row 0 x, row 1 y) and `Pose_Para` 1x7
  `[pitch, yaw, roll, tdx, tdy, tdz, scale]` in radians, stored in degrees (facedata.schema's convention, which is
  3DDFA's own: positive yaw = face turned towards image-left; checked on the real samples by the tests).
- `landmarks/<SUBSET>/<name>_pts.mat`: `pts_2d` 68x2 (the transpose of pt2d), no pose; its image is
  `<SUBSET>/<name>.jpg` (a leading `landmarks/` folder is dropped). Where an image has both, the points are
  `pts_2d` (what mmpose and PFPLD train on) and the pose comes from the image's own `.mat`.
All 68-point labels are model-fitted (3DDFA), not the original 300W annotation. One face per image, its box derived
from the points. Points are taken as 0-based pixel coordinates, as every public loader reads them.

`<SUBSET>_Flip/` images (horizontal mirrors of `<SUBSET>/`) are tagged `flipped`; where the original is in the same
folder, the mirror is checked: its pose must be the original's with yaw and roll negated (pitch kept, within
FLIP_TOLERANCE_DEG) and its points the original's mirrored and re-indexed by the ibug68 flip permutation (median
residual under FLIP_RESIDUAL of the eye distance after a horizontal shift; without the permutation real faces give
0.5-0.7). A rotated copy `<name>_k` (k > 0) whose `pt2d` is identical to `<name>_0`'s while its pose differs carries
stale points (a defect reported in copies of 300W-LP, cleardusk/3DDFA#192) and is rejected.

Bad input, per file (the face is skipped, the file named): an empty or unreadable `.mat`, a missing variable, a
variable of another shape or not numeric or finite, angles beyond +-pi (degrees written as radians); a missing image
or one resolving outside the folder; with probing, points beyond the image tolerance; a failed mirror check.
"""

from __future__ import annotations

import re
from collections.abc import KeysView, Sequence
from pathlib import Path

import numpy as np

from facedata.errors import Rejects
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest
from facedata.parsers.base import ParseOptions, image_id_for, register
from facedata.parsers.landmarks import (
    POSE_PARA,
    FileFace,
    FolderFormat,
    find_image,
    folder_manifest,
    mat_files,
    mat_folder_matches,
    read_fit,
    read_mat,
)

SCHEME = "ibug68"
POINTS = 68
SOURCE = ROOT = "300w_lp"
LANDMARK_SHAPES = {"pts_2d": (POINTS, 2)}
LANDMARK_SUFFIX = "_pts"
FLIP_SUFFIX = "_Flip"
FLIP_TOLERANCE_DEG = 5.0  # a refit of the mirror may move the angles a little; a sign error moves them by 2 x angle
FLIP_RESIDUAL = 0.2  # of the outer-eye-corner distance (the spec's mirror-permutation check)
NAME = re.compile(r".+_\d+(_pts)?")  # <SUBSET>_<orig-name>_<k>[_pts]
_ROTATED = re.compile(r"^(?P<face>.+)_(?P<k>\d+)$")  # <SUBSET>_<orig-name>_<k>: k = profiling (rotation) step


def _image_folder(rel_dir: Path) -> str:
    """The folder of a `.mat`'s image, relative to the corpus folder: `landmarks/<SUBSET>` -> `<SUBSET>`."""
    parts = rel_dir.parts[1:] if rel_dir.parts[:1] == ("landmarks",) else rel_dir.parts
    return "/".join(parts)


def _original(rel_image: str) -> str | None:
    """The image id of the unflipped original of a `<SUBSET>_Flip/` image, or None if it is not a mirror."""
    parts = image_id_for(rel_image).split("/")
    flips = [i for i, part in enumerate(parts[:-1]) if part.endswith(FLIP_SUFFIX)]
    if not flips:
        return None
    parts[flips[-1]] = parts[flips[-1]].removesuffix(FLIP_SUFFIX)
    return "/".join(parts)


def _read_faces(folder: Path, options: ParseOptions, files: Sequence[Path]) -> tuple[list[FileFace], dict[str, int]]:
    """One face per image: points from `pts_2d` where the image has one, else `pt2d`; pose from the image's `.mat`.
    Returns the faces (in file order of their points file) and how many took their points from each key."""
    root = Path(options.images or folder)
    rejects = options.rejects
    fits: dict[str, tuple[Path, str, np.ndarray, np.ndarray]] = {}  # image id -> (file, image, pt2d, pose)
    landmarks: dict[str, tuple[Path, str, np.ndarray]] = {}  # image id -> (file, image, pts_2d)
    for file in files:
        rel_dir = file.parent.relative_to(folder)
        if file.stem.endswith(LANDMARK_SUFFIX):
            data = read_mat(file, LANDMARK_SHAPES, rejects)
            if data is not None:
                rel = find_image(root, [_image_folder(rel_dir)], file.stem.removesuffix(LANDMARK_SUFFIX))
                landmarks[image_id_for(rel)] = (file, rel, data["pts_2d"])
            continue
        fit = read_fit(file, "pt2d", (2, POINTS), rejects)
        if fit is not None:
            rel = find_image(root, [_image_folder(rel_dir)], file.stem)
            fits[image_id_for(rel)] = (file, rel, fit[0].T, fit[1])
    stale = _stale_points(fits, landmarks.keys(), rejects)
    faces, used = [], {"pts_2d": 0, "pt2d": 0}
    for image_id in sorted((fits.keys() - stale) | landmarks.keys()):
        fit, mark = fits.get(image_id), landmarks.get(image_id)
        file, rel, points = (mark[0], mark[1], mark[2]) if mark else (fit[0], fit[1], fit[2])  # type: ignore[index]
        used["pts_2d" if mark else "pt2d"] += 1
        flipped = _original(rel) is not None
        faces.append(FileFace(file, rel, points, pose=None if fit is None else fit[3],
                              tags={"flipped": True} if flipped else None))
    return _check_mirrors(faces, rejects), used


def _stale_points(
    fits: dict[str, tuple[Path, str, np.ndarray, np.ndarray]], landmarks: KeysView[str], rejects: Rejects
) -> set[str]:
    """Image ids of rotated copies `_k` (k > 0) without `pts_2d` whose pt2d equals the `_0` image's although the
    pose differs."""
    stale = set()
    for image_id, (file, _, points, pose) in fits.items():
        match = _ROTATED.match(image_id)
        if image_id in landmarks or match is None or match["k"] == "0" or f"{match['face']}_0" not in fits:
            continue
        base_file, _, base_points, base_pose = fits[f"{match['face']}_0"]
        if np.array_equal(points, base_points) and np.abs(pose - base_pose).max() > 1.0:
            rejects.reject(file, None, "pt2d", f"identical to {base_file.name}'s although the pose differs by "
                           f"{np.abs(pose - base_pose).max():.1f} deg: the points are not this rotated image's "
                           "(use landmarks/*_pts.mat)", kind="stale points")
            stale.add(image_id)
    return stale


def _check_mirrors(faces: list[FileFace], rejects: Rejects) -> list[FileFace]:
    """The faces without the `_Flip` mirrors that contradict their original in the same folder (pose or points)."""
    by_id = {image_id_for(f.rel_image): f for f in faces}
    scheme = SCHEMES.get(SCHEME)
    kept = []
    for face in faces:
        original = by_id.get(_original(face.rel_image) or "")
        problem = None if original is None else _mirror_problem(face, original, scheme.flip_permutation,
                                                                scheme.interocular)
        if problem is None:
            kept.append(face)
            continue
        field, reason = problem
        rejects.reject(face.file, None, field, f"not the mirror of {original.file.name}: {reason}",  # type: ignore[union-attr]
                       kind="flip mismatch")
    return kept


def _mirror_problem(
    flip: FileFace, original: FileFace, perm: np.ndarray, interocular: tuple[int, int]
) -> tuple[str, str] | None:
    """(field, reason) if `flip` is not `original` mirrored, else None."""
    if flip.pose is not None and original.pose is not None:
        expected = original.pose * np.array([-1.0, 1.0, -1.0])  # yaw pitch roll: a mirror negates yaw and roll
        if np.abs(flip.pose - expected).max() > FLIP_TOLERANCE_DEG:
            got = ", ".join(f"{n} {v:.1f}" for n, v in zip(("yaw", "pitch", "roll"), flip.pose, strict=True))
            want = ", ".join(f"{n} {v:.1f}" for n, v in zip(("yaw", "pitch", "roll"), expected, strict=True))
            return POSE_PARA, f"{got} deg, expected {want} (yaw and roll negated)"
    mirrored = original.points[perm] * np.array([-1.0, 1.0])
    residual = np.linalg.norm(flip.points - mirrored - np.median(flip.points - mirrored, axis=0), axis=1)
    eyes = float(np.linalg.norm(original.points[interocular[0]] - original.points[interocular[1]]))
    if np.median(residual) > FLIP_RESIDUAL * eyes:
        return "points", (f"median residual {np.median(residual):.1f} px after mirroring with the ibug68 permutation "
                          f"(limit {FLIP_RESIDUAL} x eye distance {eyes:.1f} px): points not re-indexed?")
    return None


def _is_300w_lp(names: set[str]) -> bool:
    """A `_pts.mat` (pts_2d) or an image fit (pt2d, Pose_Para; AFLW2000-3D's fits also hold pt3d_68)."""
    return "pts_2d" in names or ({"pt2d", POSE_PARA} <= names and "pt3d_68" not in names)


class W300LP(FolderFormat):
    name = "300w_lp"
    description = (
        "300W-LP folder (pass the folder): <SUBSET>/*.mat (pt2d, Pose_Para) and/or landmarks/*_pts.mat (pts_2d) "
        "with the .jpg images; model-fitted ibug68 points + pose in degrees; _Flip mirrors checked"
    )

    def sniff_folder(self, path: Path) -> bool:
        return mat_folder_matches(path, NAME, _is_300w_lp)

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        files, others = mat_files(path, NAME)
        faces, used = _read_faces(path, options, files)
        return folder_manifest(path, options, faces, fmt=self.name, source=SOURCE, root=ROOT, scheme=SCHEME,
                               files=files, other_mat_files=others, points_from=used,
                               flipped=sum(bool(f.tags) for f in faces),
                               pose_unit="degrees (Pose_Para radians converted)")


register(W300LP())
