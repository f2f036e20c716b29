"""Top-down keypoint crops (HRNet, Lite-HRNet, SimpleBaseline): one person or face per sample.

The crop follows mmpose 0.x (`_xywh2cs` in kpt_2d_sview_rgb_img_top_down_dataset.py and
`get_affine_transform` in post_processing/post_transforms.py, see ../shared/specs/landmark-formats.md §9):
the box centre, the box widened or heightened to the input's aspect ratio, a scale in units of 200 px
(`PIXEL_STD`) times the padding 1.25, and a similarity warp that puts the centre at (w/2, h/2) of the
input. facedata stores a larger crop, `margin` times the input on each axis around the same centre and at
the same zoom, so that read-time rotation and scale augmentation (facedata.readers.heatmaps) cut real
pixels instead of the black border a tight crop would give. Each record keeps the 2x3 affine from the
image to the stored crop, so predictions map back to the image.

No random draw happens at build time (the train-time centre jitter of mmpose 0.x is not applied: read-time
augmentation covers it), so the samples are a pure function of the manifest: worker-invariant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from facedata.errors import FacedataError
from facedata.samplers.tasks import ImageTask
from facedata.samples import LABEL_LANDMARK, ORIGIN_DETECTIONS

PIXEL_STD = 200.0  # mmpose's scale unit: scale = box side / 200
PADDING = 1.25  # mmpose's box padding (_xywh2cs, GetBBoxCenterScale)
# Per-image counters of the stage (summary section "topdown").
COUNTERS = ("persons", "samples", "ignored", "no_points", "degenerate")


@dataclass(frozen=True)
class TopDownRecipe:
    """What a top-down build cuts: `input` = (w, h) of the network input, `margin` >= 1 the stored crop's
    size relative to it, `scheme` the keypoint scheme (its flip permutation is used at read time)."""

    input: tuple[int, int] = (192, 256)
    margin: float = 1.25
    padding: float = PADDING
    keep_unlabelled: bool = False
    scheme: str = ""
    num_points: int = 0
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        if min(self.input) < 1:
            raise FacedataError(f"--input {self.input[0]}x{self.input[1]}: both sides must be >= 1 px")
        if not 1.0 <= self.margin <= 4.0:
            raise FacedataError(f"--margin {self.margin:g}: must be within [1, 4]")

    @property
    def stored(self) -> tuple[int, int]:
        """(w, h) of the stored crop: the input times the margin, rounded up to whole pixels."""
        return math.ceil(self.input[0] * self.margin - 1e-9), math.ceil(self.input[1] * self.margin - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input": list(self.input), "stored": list(self.stored), "pixel_std": PIXEL_STD}


def topdown_dtype(num_points: int) -> np.dtype:
    """One record per crop; `affine` maps image pixels to stored-crop pixels (x' = A @ [x, y, 1])."""
    return np.dtype([
        ("label", "i1"),  # always LABEL_LANDMARK (the build's label counts)
        ("origin", "i1"),
        ("mirror", "i1"),  # 0: mirroring happens at read time
        ("reserved", "i1"),
        ("image_index", "<i4"),  # row of the image in the keypoint manifest
        ("face_index", "<i4"),  # row of the person (face) in its faces table
        ("box", "<f4", (4,)),  # annotated box x1 y1 x2 y2, image pixels (as annotated, not clipped)
        ("center", "<f4", (2,)),  # crop centre, image pixels
        ("scale", "<f4", (2,)),  # mmpose scale (w, h) / 200 with padding, without the margin
        ("affine", "<f8", (2, 3)),  # image -> stored crop
        ("keypoints", "<f4", (num_points, 2)),  # in stored-crop pixels; NaN where absent
        ("visible", "i1", (num_points,)),  # the manifest's code: 2 visible, 1 labelled but hidden, 0 absent
    ])


def box_to_center_scale(box: np.ndarray, input_size: tuple[int, int], padding: float = PADDING
                        ) -> tuple[np.ndarray, np.ndarray]:
    """mmpose `_xywh2cs` without jitter (on the sanitised box): centre of x1 y1 x2 y2, the box grown to the
    input's aspect ratio, scale = size / 200 * padding."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    aspect = input_size[0] / input_size[1]
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    center = np.array([x1 + 0.5 * (x2 - x1), y1 + 0.5 * (y2 - y1)])
    return center, np.array([w, h]) / PIXEL_STD * padding


def sanitised_box(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """mmpose's box clean-up (`_load_coco_keypoint_annotation_kernel`): x1, y1 >= 0 and x2 <= width - 1,
    y2 <= height - 1; a box still degenerate after it is left as is (its centre is the annotation's)."""
    x1, y1 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x2, y2 = min(width - 1.0, float(box[2])), min(height - 1.0, float(box[3]))
    return np.array([x1, y1, x2, y2]) if x2 > x1 and y2 > y1 else np.asarray(box, np.float64)


def affine_transform(center: np.ndarray, scale_w: float, rotation: float, output: tuple[int, int]) -> np.ndarray:
    """The 2x3 similarity that maps `center` to (w/2, h/2) of `output` = (w, h), a source width of
    scale_w * 200 px to w px, with the source direction "up" rotated by `rotation` degrees (mmpose's `r`).

    Built from three point pairs like mmpose's get_affine_transform (src centre, a point half a width
    above it rotated by the angle, and a third point at 90 degrees), solved by cv2.getAffineTransform.
    """
    src_w, dst_w, dst_h = scale_w * PIXEL_STD, float(output[0]), float(output[1])
    theta = math.radians(rotation)
    src_dir = np.array([math.sin(theta), -math.cos(theta)]) * (src_w * 0.5)  # (0, -w/2) rotated by theta
    dst_dir = np.array([0.0, -dst_w * 0.5])
    src0, dst0 = np.asarray(center, np.float64), np.array([dst_w * 0.5, dst_h * 0.5])
    src = np.stack([src0, src0 + src_dir, src0 + _perpendicular(src_dir)]).astype(np.float32)
    dst = np.stack([dst0, dst0 + dst_dir, dst0 + _perpendicular(dst_dir)]).astype(np.float32)
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def _perpendicular(v: np.ndarray) -> np.ndarray:
    """`v` turned by 90 degrees (the third point of the three-point construction)."""
    return np.array([-v[1], v[0]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 matrix (NaN stays NaN)."""
    pts = np.asarray(points, np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, np.float64))


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer after inner, as one 2x3 matrix."""
    full = np.vstack([inner, [0.0, 0.0, 1.0]])
    return np.asarray(outer, np.float64) @ full


def plan_topdown(task: ImageTask, recipe: TopDownRecipe) -> tuple[np.ndarray, list[int]]:
    """One record per usable person/face of the image, and the image's COUNTERS.

    Unusable annotations (crowd or filtered: the manifest's `ignore`; invalid) are never used; persons
    without a labelled point are skipped unless `keep_unlabelled`; degenerate boxes are skipped. All counted.
    """
    k = recipe.num_points
    points = task.points if task.points is not None else np.full((len(task.boxes), k, 2), np.nan, np.float32)
    labelled = ~np.isnan(points).any(axis=2) if len(points) else np.zeros((0, k), bool)
    has_points = labelled.any(axis=1) if k else np.zeros(len(task.boxes), bool)
    codes = np.where(labelled, 2, 0) if task.visible is None else np.where(labelled, task.visible, 0)
    boxes = task.boxes.astype(np.float64)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    keep = task.usable & ~degenerate & (has_points | recipe.keep_unlabelled)
    out = np.zeros(int(keep.sum()), topdown_dtype(k))
    stored = recipe.stored
    for row, i in enumerate(np.flatnonzero(keep)):
        center, scale = box_to_center_scale(sanitised_box(boxes[i], task.width, task.height), recipe.input,
                                            recipe.padding)
        # the stored crop: same centre and zoom as the input crop, `stored` instead of `input` pixels
        matrix = affine_transform(center, scale[0] * stored[0] / recipe.input[0], 0.0, stored)
        rec = out[row]
        rec["label"], rec["origin"] = LABEL_LANDMARK, ORIGIN_DETECTIONS
        rec["image_index"], rec["face_index"] = task.image_index, task.face_index[i]
        rec["box"], rec["center"], rec["scale"], rec["affine"] = boxes[i], center, scale, matrix
        rec["keypoints"] = apply_affine(matrix, points[i])
        rec["visible"] = codes[i]
    unusable = ~task.usable
    counters = [len(task.boxes), len(out), int(unusable.sum()),
                int((task.usable & ~degenerate & ~has_points).sum()) if not recipe.keep_unlabelled else 0,
                int((task.usable & degenerate).sum())]
    return out, counters


def render_topdown(image: np.ndarray, records: np.ndarray, recipe: TopDownRecipe) -> np.ndarray:
    """(n, h, w, 3) stored crops, warped with each record's affine (bilinear, zero outside the image)."""
    w, h = recipe.stored
    flags = cv2.INTER_LINEAR if recipe.interpolation == "linear" else cv2.INTER_AREA
    out = np.zeros((len(records), h, w, 3), np.uint8)
    for i, rec in enumerate(records):
        out[i] = cv2.warpAffine(image, rec["affine"], (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(0, 0, 0))
    return out


def manifest_scheme(manifest: Any, option: str = "--keypoints") -> str:
    """The one keypoint scheme of a manifest's faces with points (mixed schemes are refused: fuse first)."""
    faces = manifest.faces
    if "scheme" not in faces or "points" not in faces:
        raise FacedataError(f"{option}: the manifest has no keypoints (no scheme/points columns)")
    names = sorted(set(faces["scheme"].dropna().tolist()))
    if not names:
        raise FacedataError(f"{option}: no face of the manifest has keypoints")
    if len(names) > 1:
        raise FacedataError(f"{option}: the manifest mixes landmark schemes {names}: fuse them to one first "
                            "(facedata fuse --to SCHEME)")
    return names[0]
