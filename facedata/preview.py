"""`facedata preview`: a contact sheet of random samples per label, targets drawn back on the crops.

The point is to *see* that labels fit pixels: for positives and parts the face box implied by the box
offsets (gt = crop + offset x side, i.e. offset + (0, 0, 1, 1) in crop units) is drawn on the crop, for
landmark samples the 5 (or K) points, for top-down crops the keypoints (and the COCO skeleton). Crops are
upscaled with nearest neighbour so 12 px stays legible.

Points and their mask: a point with coordinates is a filled dot when present (pfld mask 1, top-down
visibility 2) and a hollow ring when it is labelled but not present (top-down visibility 1: hidden). A masked
pfld point has no coordinates at all (NaN: a fused scheme's slot without a source, or absent in the
annotation), so it cannot be drawn where it would be; the cell caption counts them ("30 masked").

PFLD crops also show their Euler angles as the head's three axes, projected orthographically from the centre
of the present points: R = Rx(-pitch) Ry(yaw) Rz(roll) maps the head frame to camera axes (x image-right,
y down, z away from the camera; the 3DDFA convention of facedata.schema), and the drawn axes are the head's
x (cyan, towards the face's image-right at zero pose), up = -y (green) and facing direction = -z (blue,
out of the face towards the viewer). A positive yaw turns the face, and so the blue axis, towards
image-left; a positive pitch tilts the blue axis up; a positive roll turns the green axis clockwise.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from facedata.errors import FacedataError
from facedata.imageio import check_image_suffix, write_image
from facedata.samples import LABEL_LANDMARK, LABEL_NAMES, LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE
from facedata.storage import ShardedDataset

LABEL_ROWS = (LABEL_POSITIVE, LABEL_PART, LABEL_NEGATIVE, LABEL_LANDMARK)
_BOX_COLOUR = {LABEL_POSITIVE: (0, 220, 0), LABEL_PART: (0, 200, 255)}
_POINT_COLOUR = (0, 0, 255)
_AXIS_COLOURS = ((255, 255, 0), (0, 255, 0), (255, 0, 0))  # BGR: head x (cyan), up (green), facing (blue)
# COCO person skeleton (categories[0]["skeleton"], 1-based there; spec landmark-formats.md §5.1), 0-based here
COCO17_SKELETON = [(a - 1, b - 1) for a, b in (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10), (9, 11),
    (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))]
COCO17_POINTS = 17
_HEADER = 26
_PAD = 4
_CHUNK = 1 << 16


def _labels(dataset: ShardedDataset) -> np.ndarray:
    """Every sample's label, read chunk by chunk (pixels are discarded as they come)."""
    out = np.empty(len(dataset), np.int8)
    for start in range(0, len(dataset), _CHUNK):
        _, records = dataset.read_range(start, start + _CHUNK)
        out[start : start + len(records)] = records["label"]
    return out


def draw_topdown(pixels: np.ndarray, record: np.void, cell: int) -> np.ndarray:
    """A top-down crop fitted into cell x cell (aspect kept, black bars) with its labelled keypoints and, for
    coco17 (17 points), the COCO skeleton between labelled points."""
    h, w = pixels.shape[:2]
    zoom = cell / max(h, w)
    img = np.zeros((cell, cell, 3), np.uint8)
    small = cv2.resize(pixels, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=cv2.INTER_AREA)
    img[: small.shape[0], : small.shape[1]] = small
    points = np.asarray(record["keypoints"], np.float64) * zoom
    visible = np.asarray(record["visible"])
    shown = (visible > 0) & np.isfinite(points).all(axis=1)
    if len(points) == COCO17_POINTS:
        for a, b in COCO17_SKELETON:
            if shown[a] and shown[b]:
                pa, pb = (tuple(int(round(v)) for v in points[k]) for k in (a, b))
                cv2.line(img, pa, pb, (0, 200, 255), 1, cv2.LINE_AA)
    draw_points(img, points[shown], visible[shown] != 1, max(2, cell // 60))  # v = 1: labelled but hidden
    return img


def draw_points(img: np.ndarray, points: np.ndarray, filled: np.ndarray, radius: int) -> None:
    """Dots at the points with coordinates: filled where present, hollow rings where masked or hidden."""
    for (x, y), full in zip(points, filled, strict=True):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(img, (int(round(x)), int(round(y))), radius, _POINT_COLOUR, -1 if full else 1, cv2.LINE_AA)


def head_axes(euler: np.ndarray) -> np.ndarray:
    """(3, 2) image directions (x right, y down) of the head's x, up and facing axes for pitch, yaw, roll in
    degrees (the module doc's convention); orthographic, so a length below 1 means the axis leaves the image."""
    p, y, r = np.radians(np.asarray(euler, np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])  # Rx(-pitch)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rotation = rx @ ry @ rz
    return (rotation @ np.diag([1.0, -1.0, -1.0])).T[:, :2]


def draw_pfld(img: np.ndarray, record: np.void, cell: int) -> None:
    """Points with their mask, the head axes from the present points' centre, and the masked count."""
    points = np.asarray(record["landmarks"], np.float64).reshape(-1, 2) * cell
    present = np.asarray(record["mask"]).astype(bool) & np.isfinite(points).all(axis=1)
    draw_points(img, points, present, max(2, cell // 40))
    euler = np.asarray(record["euler"], np.float64)
    if np.isfinite(euler).all():
        centre = points[present].mean(axis=0) if present.any() else np.array([cell / 2, cell / 2])
        start = tuple(int(round(v)) for v in centre)
        for direction, colour in zip(head_axes(euler), _AXIS_COLOURS, strict=True):
            end = tuple(int(round(v)) for v in centre + direction * (cell / 4))
            cv2.arrowedLine(img, start, end, colour, 1 + cell // 100, cv2.LINE_AA, tipLength=0.2)
    masked = int((~np.isfinite(points).all(axis=1)).sum())
    if masked:
        cv2.putText(img, f"{masked} masked", (2, cell - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                    cv2.LINE_AA)


def draw_sample(pixels: np.ndarray, record: np.void, cell: int) -> np.ndarray:
    """One crop upscaled to cell x cell with its box (pos/part) or points (landmark) drawn on it."""
    if "keypoints" in (record.dtype.names or ()):
        return draw_topdown(pixels, record, cell)
    img = cv2.resize(pixels, (cell, cell), interpolation=cv2.INTER_NEAREST)
    label = int(record["label"])
    if label in _BOX_COLOUR:
        gt = (np.asarray(record["bbox"], np.float64) + (0, 0, 1, 1)) * cell
        x1, y1, x2, y2 = (int(round(v)) for v in gt)
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), _BOX_COLOUR[label], 1, cv2.LINE_AA)
    elif "euler" in (record.dtype.names or ()):
        draw_pfld(img, record, cell)
    elif label == LABEL_LANDMARK:
        points = np.asarray(record["landmarks"], np.float64).reshape(-1, 2) * cell
        draw_points(img, points, np.ones(len(points), bool), max(2, cell // 40))
    return img


def contact_sheet(
    path: str | os.PathLike[str], *, per_label: int = 16, columns: int = 8, cell: int = 96, seed: int = 0
) -> tuple[np.ndarray, dict[int, int]]:
    """(BGR sheet image, samples shown per label): `per_label` random samples of each label present."""
    if per_label < 1 or columns < 1 or cell < 8:
        raise FacedataError("need per_label >= 1, columns >= 1 and cell >= 8")
    dataset = ShardedDataset(path)
    if len(dataset) == 0:
        raise FacedataError(f"{path}: the dataset is empty")
    labels = _labels(dataset)
    rng = np.random.default_rng(seed)
    width = columns * (cell + _PAD) + _PAD
    blocks: list[np.ndarray] = []
    shown: dict[int, int] = {}
    for label in LABEL_ROWS:
        where = np.flatnonzero(labels == label)
        if len(where) == 0:
            continue
        chosen = np.sort(rng.choice(where, size=min(per_label, len(where)), replace=False))
        pixels, records = dataset.read(chosen)
        shown[label] = len(chosen)
        rows = -(-len(chosen) // columns)
        block = np.full((_HEADER + rows * (cell + _PAD), width, 3), 40, np.uint8)
        title = f"{LABEL_NAMES[label]} (label {label}): {len(chosen)} of {len(where):,}"
        cv2.putText(block, title, (_PAD, _HEADER - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                    cv2.LINE_AA)
        for k in range(len(chosen)):
            r, c = divmod(k, columns)
            y, x = _HEADER + r * (cell + _PAD), _PAD + c * (cell + _PAD)
            block[y : y + cell, x : x + cell] = draw_sample(pixels[k], records[k], cell)
        blocks.append(block)
    dataset.close()
    return np.concatenate(blocks, axis=0), shown


def write_preview(
    path: str | os.PathLike[str], out_png: str | os.PathLike[str], **options: int
) -> dict[int, int]:
    """Write the contact sheet (PNG or JPEG by the suffix, atomically); returns samples shown per label."""
    check_image_suffix(out_png)  # refused before the sheet is drawn
    sheet, shown = contact_sheet(path, **options)
    write_image(out_png, sheet)
    return shown
