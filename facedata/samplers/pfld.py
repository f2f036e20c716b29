"""PFLD samples: square face crops with augmented variants and their regression targets (no pixels).

Recipe (landmark-formats spec 8.1-8.2, PFLD-pytorch / PFPLD; differences by design are marked *):
- base box: square around the centre of the present points' extent, side `expand` x its larger side
  (PFLD 1.2); `box="annotated"` uses the face box instead (* PFLD parses WFLW's box but never uses it);
  out-of-image parts are zero-padded, the crop is resized to `size` (render: facedata.samplers.render);
- `variants` samples per face (PFLD 10): the un-augmented crop first, then augmented ones: rotation uniform
  in [-max_rotation, max_rotation] degrees about the jittered centre (PFLD-pytorch randint(-30, 30)), centre
  jitter uniform in +-jitter x side, side x uniform [scale_low, scale_high] (* PFLD draws the side from the
  rotated points' extent), mirror with p = 0.5 through the scheme's flip permutation (points and masks);
- an augmented variant with a present point outside [0, 1] is redrawn, at most `max_tries` draws (PFLD
  loops forever); a variant with no fitting draw is dropped; both are counted per image;
- every draw comes from image_rng(seed, "image_id#k", STREAM_PFLD) for the k-th face of the image, so the
  records are the same for any worker count;
- `repeat_by="weight"`: a face gets max(1, rint(weight)) x `variants` samples (the un-augmented crop once),
  as `fuse --weight --repeat` counts copies (a repeat never drops a face).

Euler angles (pitch, yaw, roll in degrees, the manifest's 3DDFA convention, facedata.schema): annotated
poses (pose_source "annotated") are carried through the augmentation exactly: the head rotation R =
Rx(-pitch) Ry(yaw) Rz(roll) (fusion.derived.euler_degrees) is pre-multiplied by the in-plane rotation
(a crop rotated by +a degrees counter-clockwise turns the face by -a about the camera axis: roll - a when
pitch = yaw = 0), and a mirror negates yaw and roll. Other faces get fusion.derived.estimate_pose on the
augmented points (NaN where one of its 14 model points is masked).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.fusion.derived import estimable, estimate_pose, euler_degrees, eye_mouth_ratios
from facedata.fusion.schemes import SCHEMES
from facedata.samplers.crops import INTERPOLATIONS
from facedata.samplers.geometry import landmark_targets
from facedata.samplers.tasks import ImageTask
from facedata.samples import LABEL_LANDMARK, image_rng

STREAM_PFLD = 31  # crop planner 1-3, landmark planner 11, mined negatives 21
BOXES = ("landmarks", "annotated")
REPEAT_BY = (None, "weight")
ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")  # WFLW order, PFLD's loss
POSE_NONE, POSE_ANNOTATED, POSE_ESTIMATED = 0, 1, 2
COUNTERS = ("faces", "faces_skipped", "repeats", "redraws", "variants_dropped")


@dataclass(frozen=True)
class PfldRecipe:
    scheme: str
    size: int = 112
    expand: float = 1.2
    box: str = "landmarks"  # BOXES
    variants: int = 10  # per face, the un-augmented crop included
    max_rotation: float = 30.0
    jitter: float = 0.1
    scale_low: float = 0.9
    scale_high: float = 1.25
    mirror: bool = True
    max_tries: int = 20
    repeat_by: str | None = None  # REPEAT_BY
    min_points: int = 2  # faces with fewer present points are skipped (no extent)
    interpolation: str = "linear"

    def __post_init__(self) -> None:
        scheme = SCHEMES.get(self.scheme)
        if self.size < 8 or self.expand <= 0 or self.variants < 1 or self.max_tries < 1:
            raise FacedataError("need --size >= 8, --expand > 0, --variants >= 1, max_tries >= 1")
        if not 0 <= self.max_rotation <= 180 or self.jitter < 0 or not 0 < self.scale_low <= self.scale_high:
            raise FacedataError("need 0 <= --max-rotation <= 180, --jitter >= 0, 0 < --scale-low <= --scale-high")
        if self.box not in BOXES or self.repeat_by not in REPEAT_BY or self.interpolation not in INTERPOLATIONS:
            raise FacedataError(f"--box must be one of {BOXES}, --repeat-by one of {REPEAT_BY[1:]}")
        if self.mirror and self.variants > 1 and not scheme.flip_pairs:
            raise FacedataError(f"scheme {self.scheme!r} has no flip permutation: pass --no-mirror")

    @property
    def num_points(self) -> int:
        return SCHEMES.get(self.scheme).num_points

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pfld_dtype(n_points: int) -> np.dtype:
    """One PFLD sample: targets, then the provenance fields the detection stages share (samples.py)."""
    return np.dtype([
        ("label", "i1"),  # always LABEL_LANDMARK
        ("origin", "i1"),
        ("mirror", "i1"),
        ("pose_source", "i1"),  # POSE_NONE / POSE_ANNOTATED / POSE_ESTIMATED
        ("image_index", "<i4"),
        ("face_index", "<i4"),
        ("angle", "<f4"),  # rotation in degrees, counter-clockwise (cv2.getRotationMatrix2D)
        ("crop", "<f4", (4,)),  # x1 y1 x2 y2 in image pixels (before rotation / mirror)
        ("scale", "<f4"),  # crop side over the un-augmented crop's side
        ("landmarks", "<f4", (2 * n_points,)),  # x, y in [0, 1] of the crop; NaN where masked
        ("mask", "u1", (n_points,)),  # 1 = point present
        ("euler", "<f4", (3,)),  # pitch, yaw, roll in degrees (schema convention); NaN = unknown
        ("attributes", "i1", (6,)),  # ATTRIBUTES as 0/1 (0 where unknown)
        ("has_attributes", "i1"),  # 1 when the corpus annotates all six
        ("ear", "<f4", (2,)),  # eye aspect ratio, image-left and image-right eye of the crop; NaN = unknown
        ("corpus", "<i2"),  # index into index.json's pfld corpora list
        ("weight", "<f4"),  # the face's fuse --weight
    ])


@dataclass(frozen=True, eq=False)
class PfldFaces:
    """Per-face columns the task tables do not carry, indexed by faces-table row (ImageTask.face_index)."""

    pose: np.ndarray  # (F, 3) float32 pitch, yaw, roll degrees
    annotated: np.ndarray  # (F,) bool: pose_source == "annotated" with finite angles
    attributes: np.ndarray  # (F, 6) int8, -1 unknown
    weight: np.ndarray  # (F,) float32
    corpus: np.ndarray  # (F,) int16


def _rotation(pose: np.ndarray) -> np.ndarray:
    """R = Rx(-pitch) Ry(yaw) Rz(roll) (degrees), the inverse of fusion.derived.euler_degrees."""
    p, y, r = np.radians(pose)
    rx = np.array([[1, 0, 0], [0, np.cos(-p), -np.sin(-p)], [0, np.sin(-p), np.cos(-p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rx @ ry @ rz


def augmented_pose(pose: np.ndarray, angle: float, mirror: bool) -> np.ndarray:
    """pitch, yaw, roll after rotating the crop by `angle` degrees counter-clockwise, then mirroring."""
    if angle == 0:
        out = np.asarray(pose, np.float64).copy()
    else:
        a = np.radians(angle)
        inplane = np.array([[np.cos(a), np.sin(a), 0], [-np.sin(a), np.cos(a), 0], [0, 0, 1]])  # cv2's map
        out = euler_degrees(inplane @ _rotation(pose))
    if mirror:
        out[1:] = -out[1:]
    return out


def base_square(points: np.ndarray, box: np.ndarray, recipe: PfldRecipe) -> tuple[np.ndarray, float]:
    """(centre (2,), side) of the un-augmented crop."""
    if recipe.box == "annotated":
        low, high = box[:2].astype(np.float64), box[2:].astype(np.float64)
    else:
        present = points[np.isfinite(points).all(axis=1)].astype(np.float64)
        low, high = present.min(axis=0), present.max(axis=0)
    return (low + high) / 2, float(max(high - low)) * recipe.expand


def _square(centre: np.ndarray, side: float) -> np.ndarray:
    """A whole-pixel square crop box (render needs whole pixels)."""
    s = max(1, int(round(side)))
    x1, y1 = (int(np.floor(c - s / 2 + 0.5)) for c in centre)
    return np.array([x1, y1, x1 + s, y1 + s], np.float64)


def _draws(rng: np.random.Generator, centre: np.ndarray, side: float, points: np.ndarray, count: int,
           recipe: PfldRecipe) -> tuple[list[tuple[np.ndarray, float, bool]], int, int]:
    """`count` augmented (crop, angle, mirror) variants whose present points stay inside; redraws, dropped."""
    perm = SCHEMES.get(recipe.scheme).flip_permutation
    out: list[tuple[np.ndarray, float, bool]] = []
    redraws = dropped = 0
    for _ in range(count):
        for attempt in range(recipe.max_tries):
            angle = float(rng.uniform(-recipe.max_rotation, recipe.max_rotation))
            shift = rng.uniform(-recipe.jitter, recipe.jitter, 2) * side
            scale = float(rng.uniform(recipe.scale_low, recipe.scale_high))
            mirror = bool(recipe.mirror and rng.random() < 0.5)
            crop = _square(centre + shift, side * scale)
            t = landmark_targets(points[None], crop[None], np.array([angle]), np.array([mirror]), perm)[0]
            present = t[np.isfinite(t).all(axis=1)]
            if ((present >= 0) & (present <= 1)).all():
                out.append((crop, angle, mirror))
                redraws += attempt
                break
        else:
            redraws += recipe.max_tries - 1
            dropped += 1
    return out, redraws, dropped


def plan_pfld(task: ImageTask, recipe: PfldRecipe, faces: PfldFaces, seed: int) -> tuple[np.ndarray, list[int]]:
    """pfld_dtype records of one image's faces (no pixels) and its COUNTERS."""
    scheme = SCHEMES.get(recipe.scheme)
    dtype = pfld_dtype(scheme.num_points)
    counts = dict.fromkeys(COUNTERS, 0)
    parts: list[np.ndarray] = []
    if task.points is None:
        return np.zeros(0, dtype), [0] * len(COUNTERS)
    for k in range(len(task.face_index)):
        points = task.points[k]
        if not task.usable[k] or int(np.isfinite(points).all(axis=1).sum()) < recipe.min_points:
            counts["faces_skipped"] += 1
            continue
        counts["faces"] += 1
        row = int(task.face_index[k])
        rng = image_rng(seed, f"{task.image_id}#{k}", STREAM_PFLD)
        centre, side = base_square(points, task.boxes[k], recipe)
        copies = max(1, int(np.rint(faces.weight[row]))) if recipe.repeat_by == "weight" else 1
        counts["repeats"] += copies - 1
        drawn, redraws, dropped = _draws(rng, centre, side, points, copies * recipe.variants - 1, recipe)
        counts["redraws"] += redraws
        counts["variants_dropped"] += dropped
        variants = [(_square(centre, side), 0.0, False), *drawn]
        parts.append(_records(task, k, row, variants, side, recipe, faces, dtype))
    records = np.concatenate(parts) if parts else np.zeros(0, dtype)
    return records, [counts[name] for name in COUNTERS]


def _records(task: ImageTask, k: int, row: int, variants: list[tuple[np.ndarray, float, bool]], side: float,
             recipe: PfldRecipe, faces: PfldFaces, dtype: np.dtype) -> np.ndarray:
    scheme = SCHEMES.get(recipe.scheme)
    n = len(variants)
    crops = np.stack([v[0] for v in variants])
    angles = np.array([v[1] for v in variants], np.float64)
    mirror = np.array([v[2] for v in variants], bool)
    targets = landmark_targets(np.repeat(task.points[k][None], n, axis=0), crops, angles, mirror,
                               scheme.flip_permutation)
    mask = np.isfinite(targets).all(axis=2)
    out = np.zeros(n, dtype)
    out["label"] = LABEL_LANDMARK
    out["origin"] = task.origin
    out["mirror"] = mirror
    out["image_index"] = task.image_index
    out["face_index"] = row
    out["angle"] = angles
    out["crop"] = crops
    out["scale"] = (crops[:, 2] - crops[:, 0]) / max(1, int(round(side)))
    out["landmarks"] = targets.reshape(n, -1)
    out["mask"] = mask
    out["euler"], out["pose_source"] = _euler(targets, mask, angles, mirror, row, recipe, faces)
    attributes = faces.attributes[row]
    out["attributes"] = np.where(attributes > 0, 1, 0)
    out["has_attributes"] = int((attributes >= 0).all())
    ratios = eye_mouth_ratios(recipe.scheme, targets.reshape(n, -1))
    out["ear"] = np.stack([ratios["ear_left"], ratios["ear_right"]], axis=1)
    out["corpus"] = faces.corpus[row]
    out["weight"] = faces.weight[row]
    return out


def _euler(targets: np.ndarray, mask: np.ndarray, angles: np.ndarray, mirror: np.ndarray, row: int,
           recipe: PfldRecipe, faces: PfldFaces) -> tuple[np.ndarray, int]:
    """(n, 3) angles of the variants and their pose_source code."""
    if faces.annotated[row]:
        pose = faces.pose[row]
        return np.stack([augmented_pose(pose, a, m) for a, m in zip(angles, mirror, strict=True)]), POSE_ANNOTATED
    if not estimable(recipe.scheme):
        return np.full((len(targets), 3), np.nan), POSE_NONE
    visible = np.where(mask, 2, 0).astype(np.int8)
    pixels = np.where(mask[..., None], targets * recipe.size, np.nan).reshape(len(targets), -1)
    return estimate_pose(recipe.scheme, pixels, visible), POSE_ESTIMATED
