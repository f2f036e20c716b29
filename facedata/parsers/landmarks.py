"""Helpers shared by the landmark corpora (WFLW, LaPa, iBUG `.pts`): boxes derived from points, point lines,
and the folder corpora where one annotation file describes one face of one image.

A face without an annotated box gets the extent of its points (x1 y1 x2 y2 = min x, min y, max x, max y)
as its box, flagged `box_source` = "derived" in the manifest: training crops are then cut around the
points, the way PFLD crops WFLW faces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError, Rejects
from facedata.manifest import Manifest, ManifestBuilder, make_provenance
from facedata.parsers.base import (
    IMAGE_EXTENSIONS,
    ParseOptions,
    check_images_and_faces,
    image_id_for,
    infer_split,
    to_numbers,
)

POINT_FIELDS = ("x", "y")


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
        builder.add_image(image_id, face.rel_image, width=checked.width[0], height=checked.height[0])
        image_ids.append(image_id)
        kept.append(face)
    if kept:
        builder.add_faces(
            np.asarray(image_ids, dtype=object),
            points_extent(np.stack([f.points for f in kept])),
            scheme=scheme,
            points=np.stack([f.points for f in kept]),
            derived_box=True,
        )
    roots = {root: str(Path(options.images or folder).resolve())}
    return builder.build(
        make_provenance(fmt, list(files), roots, folder=str(folder.resolve()), records=len(files),
                        rejects=len(options.rejects), **extra)
    )
