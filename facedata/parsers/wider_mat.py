"""WIDER Face `wider_face_{train,val}.mat` (MATLAB v5, read by facedata.parsers.matfile — no pickle).

Keys: event_list (E), file_list (E cells of names without .jpg), face_bbx_list (x y w h per face)
and one *_label_list per attribute. The result is identical to the bbx_gt.txt of the same split
(same image ids, order, boxes and attributes; only `source_line` is null here because a .mat has no
lines). A malformed cell rejects that image, named by event and file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.errors import InputError
from facedata.manifest import Manifest
from facedata.parsers.base import ParseOptions, check_rel_path, finite_values, register
from facedata.parsers.matfile import load_mat, mat_variables
from facedata.parsers.wider_txt import (
    WIDER_COLUMNS,
    WiderImage,
    drop_images_with_bad_faces,
    validate_attributes,
    wider_manifest,
    xywh_to_xyxy,
)
from facedata.schema import WIDER_ATTRIBUTES

LABEL_KEYS = {name: f"{name}_label_list" for name in WIDER_ATTRIBUTES}


def cell_text(cell: np.ndarray) -> str:
    """A MATLAB char cell (array(['name'])) as str."""
    value = np.asarray(cell).ravel()
    return str(value[0]) if value.size else ""


def events_and_files(path: Path, data: dict[str, np.ndarray]) -> list[tuple[int, str, list[str]]]:
    """(event index, event name, file names) per event, validating that the two lists line up."""
    events = data["event_list"].ravel()
    files = data["file_list"].ravel()
    if len(events) != len(files):
        raise InputError(path, None, "file_list", f"{len(files)} file lists for {len(events)} events")
    return [
        (e, cell_text(events[e]), [cell_text(c) for c in np.asarray(files[e]).ravel()])
        for e in range(len(events))
    ]


def event_cells(variable: np.ndarray, e: int) -> np.ndarray:
    """The cells of event e of a per-event list; none when the list is shorter (each image is then rejected)."""
    events = np.asarray(variable).ravel()
    return np.asarray(events[e]).ravel() if e < len(events) else np.empty(0, object)


def _regular_event(
    boxes_of: np.ndarray, labels_of: dict[str, np.ndarray], files: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """For an event whose cells are all well formed: (per-image face counts, (N, 10) values), else None."""
    if len(boxes_of) != files or any(len(v) != files for v in labels_of.values()):
        return None
    if not all(isinstance(c, np.ndarray) for cells in (boxes_of, *labels_of.values()) for c in cells):
        return None
    shapes = [c.shape for c in boxes_of]
    if not all(len(shape) == 2 and shape[1] == 4 for shape in shapes):
        return None
    sizes = [shape[0] for shape in shapes]
    if any([c.size for c in cells] != sizes for cells in labels_of.values()):
        return None
    if files == 0:
        return np.zeros(0, np.int64), np.empty((0, len(WIDER_COLUMNS)))
    columns = [np.concatenate(list(boxes_of))]
    columns += [_concat_labels(labels_of[a]) for a in WIDER_ATTRIBUTES]
    if any(c.dtype.kind not in "iuf" for c in columns):
        return None
    return np.asarray(sizes, np.int64), np.column_stack([c.astype(np.float64) for c in columns])


def _concat_labels(cells: np.ndarray) -> np.ndarray:
    """Concatenate N x 1 label cells (the .mat layout) in one call; other layouts cell by cell."""
    try:
        return np.concatenate(list(cells)).ravel()
    except ValueError:
        return np.concatenate([np.ravel(c) for c in cells])


def _label_fits(labels: np.ndarray | None, count: int) -> bool:
    return labels is not None and labels.size == count and labels.dtype.kind in "iuf"


class WiderMat:
    name = "wider_mat"
    description = "WIDER Face wider_face_{train,val}.mat (event_list, file_list, face_bbx_list, *_label_list)"

    def sniff(self, path: Path, head: bytes) -> bool:
        return {"face_bbx_list", "file_list", "event_list"} <= mat_variables(path, head)

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        keys = ["event_list", "file_list", "face_bbx_list", *LABEL_KEYS.values()]
        data = load_mat(path, keys)
        rejects = options.rejects
        images: list[WiderImage] = []
        seen: set[str] = set()
        counts: list[np.ndarray] = []
        blocks: list[np.ndarray] = []

        def add(event: str, name: str) -> bool:
            rel = check_rel_path(f"{event}/{name}.jpg", rejects, path, None)
            if rel is None:
                return False
            if rel in seen:
                rejects.reject(path, None, "file_list", f"{event}/{name}: duplicate image")
                return False
            seen.add(rel)
            images.append(WiderImage(rel, None))
            return True

        for e, event, files in events_and_files(path, data):
            boxes_of = event_cells(data["face_bbx_list"], e)
            labels_of = {name: event_cells(data[key], e) for name, key in LABEL_KEYS.items()}
            regular = _regular_event(boxes_of, labels_of, len(files))
            if regular is not None:
                sizes, values = regular
                keep = np.fromiter((add(event, name) for name in files), bool, len(files))
                counts.append(sizes[keep])
                blocks.append(values[np.repeat(keep, sizes)])
                continue
            # irregular event: check image by image so each bad cell is named
            for f, name in enumerate(files):
                where = f"{event}/{name}"
                boxes = np.asarray(boxes_of[f]) if f < len(boxes_of) else np.empty(0)
                if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.dtype.kind not in "iuf":
                    rejects.reject(
                        path, None, "face_bbx_list", f"{where}: expected an N x 4 numeric box array"
                    )
                    continue
                labels = [
                    np.asarray(labels_of[a][f]) if f < len(labels_of[a]) else None for a in WIDER_ATTRIBUTES
                ]
                bad = next(
                    (
                        a
                        for a, v in zip(WIDER_ATTRIBUTES, labels, strict=True)
                        if not _label_fits(v, len(boxes))
                    ),
                    None,
                )
                if bad is not None:
                    rejects.reject(
                        path, None, LABEL_KEYS[bad], f"{where}: expected {len(boxes)} numeric labels"
                    )
                    continue
                if add(event, name):
                    counts.append(np.array([len(boxes)], np.int64))
                    blocks.append(
                        np.column_stack(
                            [boxes.astype(np.float64)] + [np.ravel(v).astype(np.float64) for v in labels]
                        )
                    )
        owner = np.repeat(np.arange(len(images)), np.concatenate(counts) if counts else np.zeros(0, np.int64))
        values = np.concatenate(blocks) if blocks else np.empty((0, len(WIDER_COLUMNS)))
        ok = finite_values(values).all(axis=1)
        validate_attributes(
            path, values, None, ok, rejects, lambda i: f"image {images[owner[i]].rel_path!r} dropped"
        )
        images, owner_kept, keep = drop_images_with_bad_faces(images, owner, ok)
        good = values[keep]
        return wider_manifest(
            self.name, path, options, images, owner_kept, xywh_to_xyxy(good), good[:, 4:], None, len(values)
        )


register(WiderMat())
