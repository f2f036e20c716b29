"""The WIDER evaluation tool's `wider_{easy,medium,hard}_val.mat` read as a subset selector (not a format).

Each file holds the whole val GT (event_list, file_list, face_bbx_list x y w h) plus `gt_list`: per image the
1-based indices of the faces the difficulty level scores (7,211 / 13,319 / 31,958 faces). A subset face is
identified by its image id (`event/name`) and its box (x1 y1 x2 y2 = x, y, x + w, y + h), so it matches the
manifest of any val form (bbx_gt.txt, .mat, RetinaFace, AITTSMD, labelv2) whatever the face order or the
faces a re-export dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.errors import FacedataError, InputError
from facedata.parsers.matfile import load_mat
from facedata.parsers.wider_mat import events_and_files
from facedata.parsers.wider_txt import xywh_to_xyxy

LEVELS = ("easy", "medium", "hard")


def subset_file(gt_dir: Path, level: str) -> Path:
    """`wider_<level>_val.mat` under the eval tool's ground_truth folder (or its parent)."""
    if level not in LEVELS:
        raise FacedataError(f"--wider-subset must be one of {', '.join(LEVELS)}, got {level!r}")
    name = f"wider_{level}_val.mat"
    for folder in (gt_dir, gt_dir / "ground_truth"):
        if (folder / name).is_file():
            return folder / name
    raise FacedataError(f"--gt-dir {gt_dir}: no {name} there (the WIDER eval tool's ground_truth folder)")


def subset_boxes(path: Path) -> dict[str, np.ndarray]:
    """image id -> (k, 4) x1 y1 x2 y2 of the faces the level keeps."""
    data = load_mat(path, ["event_list", "file_list", "face_bbx_list", "gt_list"])
    boxes, keep = data["face_bbx_list"].ravel(), data["gt_list"].ravel()
    out: dict[str, np.ndarray] = {}
    for e, event, files in events_and_files(path, data):
        event_boxes, event_keep = np.asarray(boxes[e]).ravel(), np.asarray(keep[e]).ravel()
        if len(event_boxes) != len(files) or len(event_keep) != len(files):
            raise InputError(path, None, "gt_list", f"event {event!r}: {len(files)} files, "
                             f"{len(event_boxes)} box lists, {len(event_keep)} gt lists")
        for name, image_boxes, indices in zip(files, event_boxes, event_keep, strict=True):
            xywh = np.asarray(image_boxes, np.float64).reshape(-1, 4)
            rows = np.asarray(indices, np.int64).ravel() - 1
            if rows.size and (rows.min() < 0 or rows.max() >= len(xywh)):
                raise InputError(path, None, "gt_list", f"{event}/{name}: face index outside its {len(xywh)} boxes")
            out[f"{event}/{name}"] = xywh_to_xyxy(xywh[rows]) if rows.size else np.empty((0, 4))
    return out
