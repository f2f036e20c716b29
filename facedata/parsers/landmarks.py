"""Helpers shared by the landmark corpora (WFLW, LaPa, iBUG `.pts`, 300W-LP, AFLW2000-3D): boxes derived from
points, point lines, per-face `.mat` files with their 3DDFA pose, and the folder corpora where one annotation file
describes one face of one image.

A face without an annotated box gets the extent of its points (x1 y1 x2 y2 = min x, min y, max x, max y)
as its box, flagged `box_source` = "derived" in the manifest: training crops are then cut around the
points, the way PFLD crops WFLW faces.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError, InputError, Rejects
from facedata.manifest import Manifest, ManifestBuilder, make_provenance
from facedata.parsers.base import (
    IMAGE_EXTENSIONS,
    ParseOptions,
    check_images_and_faces,
    finite_values,
    image_id_for,
    infer_split,
    to_numbers,
)
from facedata.parsers.matfile import MAT_MAGIC, load_mat, mat_variables

POINT_FIELDS = ("x", "y")
SNIFF_MAT_FILES = 20  # .mat files a folder sniff tries before it gives up (each is walked by matfile, then listed)


def points_extent(points: np.ndarray) -> np.ndarray:
    """(N, K, 2) points -> (N, 4) boxes x1 y1 x2 y2 spanning the present (finite) points."""
    return np.column_stack([np.nanmin(points, axis=1), np.nanmax(points, axis=1)])


def point_names(count: int) -> list[str]:
    """x0 y0 x1 y1 ... : the field names of `count` interleaved points (0-based, as the spec numbers them)."""
    return [f"{axis}{i}" for i in range(count) for axis in "xy"]


def parse_point_lines(
    path: Path, texts: Sequence[str], lines: Sequence[int], rejects: Rejects
) -> np.ndarray | None:
    """One `x y` point per line -> (K, 2), or None after rejecting the first bad line (one face per file:
    a face with a broken point is skipped whole)."""
    rows = [text.split() for text in texts]
    for row, line in zip(rows, lines, strict=True):
        if len(row) != 2:
            rejects.reject(path, line, "fields", f"expected 2 fields (x y), got {len(row)}", kind="wrong field count")
            return None
    values, ok = to_numbers(path, rows, lines, POINT_FIELDS, rejects)
    return values if ok.all() else None


def find_image(root: Path, folders: Sequence[str], stem: str) -> str:
    """Relative path of the image named `stem` in the first of `folders` (under root) holding one; if none
    does, the .jpg path in the first folder (then reported as a missing image)."""
    for folder in folders:
        for ext in IMAGE_EXTENSIONS:
            rel = f"{folder}/{stem}{ext}" if folder else f"{stem}{ext}"
            if (root / rel).is_file():
                return rel
    return f"{folders[0]}/{stem}.jpg" if folders[0] else f"{stem}.jpg"


def _reject_second(rejects: Rejects, face: FileFace, earlier: FileFace) -> None:
    """A second file for the same image: the same points are the same face (reported, kept once, like a
    repeated line); other points contradict the first file and the second is skipped."""
    where = f"{face.rel_image!r} is annotated by {earlier.file} too"
    if np.array_equal(face.points, earlier.points):
        rejects.reject(face.file, None, "face", f"duplicate face: {where}, with the same points; kept once",
                       kind="duplicate face", fatal=False)
    else:
        rejects.reject(face.file, None, "image", f"{where}, with other points; this file is skipped",
                       kind="duplicate image")


def _poses(faces: Sequence[FileFace]) -> np.ndarray | None:
    """(N, 3) yaw pitch roll of the faces (NaN where not annotated), or None when no face has a pose."""
    if all(f.pose is None for f in faces):
        return None
    return np.stack([np.full(3, np.nan) if f.pose is None else f.pose for f in faces])


# 3DDFA `Pose_Para` (300W-LP, AFLW2000-3D): 1x7 [pitch, yaw, roll, tdx, tdy, tdz, scale], angles in radians, signs as
# facedata.schema documents (checked on the real samples, landmark-formats spec section 3.4).
POSE_PARA = "Pose_Para"
POSE_PARA_SHAPE = (1, 7)


def read_mat(path: Path, shapes: dict[str, tuple[int, int]], rejects: Rejects) -> dict[str, np.ndarray] | None:
    """The named variables of a MATLAB v5 file as float64 arrays, each of its expected shape with finite values;
    None after rejecting the file (empty, unreadable, a variable missing, of another shape or not numeric)."""
    try:
        data = load_mat(path, list(shapes))
    except InputError as exc:
        rejects.reject(exc.file, exc.line, exc.field, exc.message, kind="unreadable file")
        return None
    out = {}
    for key, shape in shapes.items():
        value = np.asarray(data[key])
        if value.shape != shape or value.dtype.kind not in "iuf":
            rejects.reject(path, None, key, f"expected a {shape[0]}x{shape[1]} numeric array, got "
                           f"{'x'.join(map(str, value.shape)) or 'a scalar'} of {value.dtype}", kind="wrong shape")
            return None
        value = value.astype(np.float64)
        if not finite_values(value).all():
            rejects.reject(path, None, key, f"expected finite numbers, got {value[~finite_values(value)][0]}",
                           kind="bad number")
            return None
        out[key] = value
    return out


def pose_degrees(path: Path, pose_para: np.ndarray, rejects: Rejects) -> np.ndarray | None:
    """3DDFA Pose_Para (1x7, radians) -> (yaw, pitch, roll) in degrees; None after rejecting an angle beyond pi
    (degrees written where radians belong)."""
    pitch, yaw, roll = pose_para[0, :3]
    worst = float(np.abs(pose_para[0, :3]).max())
    if worst > np.pi:
        rejects.reject(path, None, POSE_PARA, f"angles [pitch yaw roll] must be radians within +-pi, got "
                       f"{worst:g}", kind="bad pose")
        return None
    return np.degrees([yaw, pitch, roll])


def read_fit(
    path: Path, points_key: str, shape: tuple[int, int], rejects: Rejects
) -> tuple[np.ndarray, np.ndarray] | None:
    """(the `points_key` array, (yaw, pitch, roll) in degrees) of a 3DDFA fit `.mat`; None after rejecting it."""
    data = read_mat(path, {points_key: shape, POSE_PARA: POSE_PARA_SHAPE}, rejects)
    pose = None if data is None else pose_degrees(path, data[POSE_PARA], rejects)
    return None if data is None or pose is None else (data[points_key], pose)


def mat_files(folder: Path, name: re.Pattern[str]) -> tuple[list[Path], int]:
    """The `.mat` files below a folder of fits whose stem matches the corpus' naming, sorted, and how many other
    `.mat` files were passed over (e.g. model files in a release's `Code/` folder); none matching is an error."""
    every = sorted(folder.rglob("*.mat"))
    files = [path for path in every if name.fullmatch(path.stem)]
    if not files:
        raise FacedataError(f"{folder}: no .mat files named like {name.pattern}")
    return files, len(every) - len(files)


def mat_folder_matches(folder: Path, name: re.Pattern[str], accepts: Callable[[set[str]], bool]) -> bool:
    """Whether one of the first SNIFF_MAT_FILES `.mat` files below `folder` whose stem matches `name` has variables
    that `accepts` takes: sniffs a folder of fits by content, not by name alone, and a truncated file (whose header
    lists only its first variables) does not hide the folder's format; the parser then names that file."""
    paths = (p for p in folder.rglob("*.mat") if name.fullmatch(p.stem))
    for path in itertools.islice(paths, SNIFF_MAT_FILES):
        with open(path, "rb") as fh:
            if accepts(mat_variables(path, fh.read(len(MAT_MAGIC)))):
                return True
    return False


class FolderFormat:
    """Base of the folder corpora (`sniff_folder` recognises one): never sniffed as a single file."""

    def sniff(self, path: Path, head: bytes) -> bool:
        return False


def read_faces(
    folder: Path,
    options: ParseOptions,
    files: Sequence[Path],
    read: Callable[[Path, Rejects], np.ndarray | None],
    image_folders: Callable[[Path], Sequence[str]],
) -> list[FileFace]:
    """The face of each annotation file `read` accepts, with its image: the file's name in the first of
    `image_folders(file's folder relative to the corpus folder)` holding it, under the image root."""
    if not files:
        raise FacedataError(f"{folder}: no annotation files")
    root = Path(options.images or folder)
    faces = []
    for file in files:
        points = read(file, options.rejects)
        if points is not None:
            faces.append(FileFace(file, find_image(root, image_folders(file.parent.relative_to(folder)), file.stem),
                                  points))
    return faces


@dataclass
class FileFace:
    """One face read from its own annotation file."""

    file: Path
    rel_image: str
    points: np.ndarray  # (K, 2), 0-based
    pose: np.ndarray | None = None  # (3,) yaw pitch roll in degrees (facedata.schema), None = not annotated
    tags: dict[str, Any] | None = None  # per-image tags (e.g. 300W-LP `flipped`)


def folder_manifest(
    folder: Path,
    options: ParseOptions,
    faces: Sequence[FileFace],
    *,
    fmt: str,
    source: str,
    root: str,
    scheme: str,
    files: Sequence[Path],
    **extra: Any,
) -> Manifest:
    """Check each face's image (errors name the face's own annotation file) and build the manifest: one image
    and one face with a derived box per file, in file order. Provenance lists every annotation file read."""
    builder = ManifestBuilder(source, infer_split(folder, options.split), root)
    image_ids: list[str] = []
    kept: list[FileFace] = []
    first: dict[str, FileFace] = {}
    for face in faces:
        image_id = image_id_for(face.rel_image)
        if image_id in first:
            _reject_second(options.rejects, face, first[image_id])
            continue
        box = points_extent(face.points[None])
        checked = check_images_and_faces(
            face.file,
            options,
            [(face.rel_image, None)],
            np.zeros(1, np.int64),
            box,
            same=box,
            lines=None,
            points=face.points[None],
            point_names=point_names(len(face.points)),
            derived_box=True,
        )
        first[image_id] = face
        if not checked.keep_image[0]:
            continue
        builder.add_image(image_id, face.rel_image, width=checked.width[0], height=checked.height[0], tags=face.tags)
        image_ids.append(image_id)
        kept.append(face)
    if kept:
        builder.add_faces(
            np.asarray(image_ids, dtype=object),
            points_extent(np.stack([f.points for f in kept])),
            scheme=scheme,
            points=np.stack([f.points for f in kept]),
            head_pose=_poses(kept),
            derived_box=True,
        )
    roots = {root: str(Path(options.images or folder).resolve())}
    return builder.build(
        make_provenance(fmt, list(files), roots, folder=str(folder.resolve()), records=len(files),
                        rejects=len(options.rejects), **extra)
    )
