"""Per-image work units for the samplers: plain arrays cut from a manifest, small and picklable.

Which faces are usable (may be sampled) is facedata.samplers.faces' rule; all other faces stay in the
task as ignore regions: no negative may overlap them.

pandas and the manifest schema are imported only where a manifest is read: build workers unpickle task
tables without them (see facedata.buildworker).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facedata.errors import FacedataError
from facedata.faces import face_boxes, usable_rows
from facedata.samples import ORIGIN_DETECTIONS, ORIGIN_LANDMARKS

if TYPE_CHECKING:
    import pandas as pd

    from facedata.manifest import Manifest


@dataclass(frozen=True, eq=False)
class ImageTask:
    image_index: int  # row in the manifest images table
    image_id: str
    path: str  # absolute image path
    width: int
    height: int
    origin: int  # ORIGIN_DETECTIONS or ORIGIN_LANDMARKS
    boxes: np.ndarray  # (N, 4) float32, all faces of the image
    face_index: np.ndarray  # (N,) int32 rows in the faces table
    usable: np.ndarray  # (N,) bool
    points: np.ndarray | None  # (N, K, 2) float32, NaN where a point is absent; None without points
    visible: np.ndarray | None = None  # (N, K) int8 manifest codes 0 absent / 1 hidden / 2 visible; None: 2 if present


@dataclass(frozen=True, eq=False)
class FaceArrays:
    """All faces of a manifest as arrays, grouped by image (shared by image_tasks and verify_labels)."""

    boxes: np.ndarray  # (F, 4) float32, faces-table order
    usable: np.ndarray  # (F,) bool
    image_of_face: np.ndarray  # (F,) int64 image row of each face
    order: np.ndarray  # face rows sorted by image (stable)
    starts: np.ndarray  # (n_images + 1,) faces of image i are order[starts[i]:starts[i + 1]]
    points: np.ndarray | None  # (F, K, 2) float32 or None
    visible: np.ndarray | None  # (F, K) int8 visibility codes (0 where points is NaN) or None

    def faces_of(self, image_index: int) -> np.ndarray:
        return self.order[self.starts[image_index] : self.starts[image_index + 1]]


def face_arrays(manifest: Manifest, ignore_under: float, face_side: str = "shorter") -> FaceArrays:
    import pandas as pd

    faces = manifest.faces
    image_ids = pd.Index(manifest.images["image_id"])
    image_of_face = image_ids.get_indexer(faces["image_id"]).astype(np.int64)
    if (image_of_face < 0).any():
        raise FacedataError("manifest has faces of images that are not in its images table")
    boxes = face_boxes(faces)
    usable = usable_rows(faces, ignore_under, face_side)
    order = np.argsort(image_of_face, kind="stable")
    starts = np.searchsorted(image_of_face[order], np.arange(len(image_ids) + 1))
    return FaceArrays(boxes, usable, image_of_face, order, starts, *_points(faces))


def _points(faces: pd.DataFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(F, K, 2) float32 with NaN for faces without points and for absent (visibility 0) points, and the
    (F, K) int8 visibility codes kept as annotated (COCO's 1 hidden / 2 visible; 2 where a face's points have
    no codes, 0 wherever the point is NaN)."""
    import pandas as pd

    from facedata.schema import VISIBILITY_ABSENT, VISIBILITY_VISIBLE

    if "points" not in faces or len(faces) == 0:
        return None, None
    values = faces["points"].tolist()
    sizes = {len(v) for v in values if v is not None and not (np.isscalar(v) and pd.isna(v))}
    if not sizes:
        return None, None
    if len(sizes) > 1:
        raise FacedataError(
            f"faces have different numbers of landmark values {sorted(sizes)}; fuse schemes first"
        )
    k2 = sizes.pop()
    out = np.full((len(values), k2 // 2, 2), np.nan, np.float32)
    codes = np.zeros((len(values), k2 // 2), np.int8)
    for row, (pts, vis) in enumerate(zip(values, faces["visible"].tolist(), strict=True)):
        if pts is None or (np.isscalar(pts) and pd.isna(pts)):
            continue
        out[row] = np.asarray(pts, np.float32).reshape(-1, 2)
        if vis is not None and not (np.isscalar(vis) and pd.isna(vis)):
            out[row, np.asarray(vis) == VISIBILITY_ABSENT] = np.nan
            codes[row] = vis
        else:
            codes[row] = VISIBILITY_VISIBLE
    codes[np.isnan(out).any(axis=2)] = VISIBILITY_ABSENT
    return out, codes


@dataclass(frozen=True, eq=False)
class TaskTable:
    """Every image of a manifest as plain arrays (a few bytes per face), ImageTasks made on demand.

    What a build sends to each worker: one Python object per image would cost kilobytes each, in the
    parent and in every worker.
    """

    origin: int
    ids: list[str]
    paths: list[str]  # absolute
    widths: np.ndarray
    heights: np.ndarray
    faces: FaceArrays

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> ImageTask:
        rows = self.faces.faces_of(i)
        points, visible = self.faces.points, self.faces.visible
        return ImageTask(
            image_index=i,
            image_id=self.ids[i],
            path=self.paths[i],
            width=int(self.widths[i]),
            height=int(self.heights[i]),
            origin=self.origin,
            boxes=self.faces.boxes[rows],
            face_index=rows.astype(np.int32),
            usable=self.faces.usable[rows],
            points=None if points is None else points[rows],
            visible=None if visible is None else visible[rows],
        )


def task_table(
    manifest: Manifest, origin: int, *, ignore_under: float, face_side: str = "shorter",
    roots: dict[str, str] | None = None,
) -> TaskTable:
    """The TaskTable of a manifest (image_index = row of the images table)."""
    if origin not in (ORIGIN_DETECTIONS, ORIGIN_LANDMARKS):
        raise ValueError(f"unknown origin {origin}")
    images = manifest.images
    unknown = images["width"].isna() | images["height"].isna()
    if unknown.any():
        first = images.loc[unknown, "image_id"].iloc[0]
        raise FacedataError(
            f"{int(unknown.sum())} image(s) have no known size (e.g. {first!r}); "
            "ingest with --images so the manifest records image sizes"
        )
    return TaskTable(
        origin=origin,
        ids=images["image_id"].tolist(),
        paths=[os.path.abspath(p) for p in manifest.image_paths(roots)],
        widths=images["width"].to_numpy(np.int64),
        heights=images["height"].to_numpy(np.int64),
        faces=face_arrays(manifest, ignore_under, face_side),
    )


def image_tasks(
    manifest: Manifest, origin: int, *, ignore_under: float, face_side: str = "shorter",
    roots: dict[str, str] | None = None,
) -> Iterator[ImageTask]:
    """One ImageTask per manifest image, in manifest order (image_index = row)."""
    table = task_table(manifest, origin, ignore_under=ignore_under, face_side=face_side, roots=roots)
    for i in range(len(table)):
        yield table[i]
