"""Read-time top-down targets: the network input, Gaussian heatmaps and target weights from stored crops.

One implementation (numpy + cv2) used as is by the numpy, PyTorch and MindSpore readers, so the same
seed gives the same arrays everywhere. It follows mmpose 0.x's train pipeline (landmark-formats.md §9.4,
9.5): random flip (coordinates x -> w - 1 - x and the scheme's flip permutation), half-body (off by
default, coco17 only), random scale (clip(N(1, 0.25), 0.75, 1.25)) and rotation (clip(N(0, 30), -60, 60)
with probability 0.6), one affine warp of the stored crop to the input, then MSRA heatmaps: a 3-sigma
Gaussian window of peak 1 around the joint rounded to the heatmap grid (int(x / stride + 0.5)), target
weight 1 for labelled joints whose window touches the map.

Every draw of a sample comes from (seed, epoch, image_index, face_index): the same for any reader,
worker count or batch order. Pixels outside the stored margin (facedata.samplers.topdown) are black.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from facedata.errors import FacedataError
from facedata.samplers.topdown import PIXEL_STD, affine_transform, apply_affine, compose_affine, invert_affine
from facedata.storage.index import load_index

# Joints of the upper body per scheme, for the half-body transform (mmpose coco.py: upper_body_ids).
UPPER_BODY = {"coco17": tuple(range(11))}
HALF_BODY_PADDING = 1.5  # mmpose TopDownHalfBodyTransform
COLUMNS = ("image", "target", "target_weight", "keypoints", "transform", "flipped", "image_index", "face_index")


@dataclass(frozen=True)
class TopDownTargets:
    """The read-time transform of a top-down dataset; `TopDownTargets.for_dataset(path)` reads its sizes."""

    input: tuple[int, int]  # (w, h) network input
    stored: tuple[int, int]  # (w, h) stored crop
    heatmap: tuple[int, int] = (48, 64)
    sigma: float = 2.0
    flip_permutation: tuple[int, ...] | None = None  # None: never mirror
    upper_body: tuple[int, ...] | None = None  # None: no half-body transform
    augment: bool = True
    seed: int = 0
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    scale_factor: float = 0.25
    rotation_factor: float = 30.0
    rotation_prob: float = 0.6

    @classmethod
    def for_dataset(cls, path: str | os.PathLike[str], *, flip: bool = True, half_body: bool = False,
                    **options: object) -> TopDownTargets:
        """Targets for a `build topdown` directory: input and stored sizes and the scheme from index.json."""
        from facedata.fusion.schemes import SCHEMES

        index = load_index(path)  # a wrong path or a damaged index.json: one line, not a traceback
        recipe = index.get("provenance", index).get("topdown_recipe")
        if recipe is None:
            raise FacedataError(f"{path}: not a top-down dataset (no topdown_recipe in index.json)")
        scheme = recipe["scheme"]
        permutation = None
        if flip:
            perm = SCHEMES.get(scheme).flip_permutation
            if perm is None:
                raise FacedataError(f"scheme {scheme} has no flip permutation: pass flip=False")
            permutation = tuple(int(v) for v in perm)
        upper = None
        if half_body:
            if scheme not in UPPER_BODY:
                raise FacedataError(f"half-body needs upper-body joints; scheme {scheme} has none (only "
                                    f"{', '.join(UPPER_BODY)})")
            upper = UPPER_BODY[scheme]
        return cls(input=tuple(recipe["input"]), stored=tuple(recipe["stored"]), flip_permutation=permutation,
                   upper_body=upper, **options)  # type: ignore[arg-type]

    @property
    def stride(self) -> np.ndarray:
        return np.array(self.input, np.float64) / np.array(self.heatmap, np.float64)

    def __call__(self, pixels: np.ndarray, records: np.ndarray, epoch: int = 0) -> dict[str, np.ndarray]:
        """A batch of stored crops and records -> COLUMNS: input images (uint8 HWC, as stored), heatmaps
        (n, K, h, w) float32, target weights (n, K, 1) float32, keypoints in input pixels (n, K, 2), the 2x3
        image -> input transforms, the flip flags and the sample's image/face index."""
        n, k = len(records), records["keypoints"].shape[1]
        w, h = self.input
        out = {
            "image": np.zeros((n, h, w, 3), np.uint8),
            "target": np.zeros((n, k, self.heatmap[1], self.heatmap[0]), np.float32),
            "target_weight": np.zeros((n, k, 1), np.float32),
            "keypoints": np.zeros((n, k, 2), np.float32),
            "transform": np.zeros((n, 2, 3), np.float64),
            "flipped": np.zeros(n, np.int8),
            "image_index": np.ascontiguousarray(records["image_index"]),
            "face_index": np.ascontiguousarray(records["face_index"]),
        }
        for i, rec in enumerate(records):
            matrix, points, visible, flipped = self.sample_transform(rec, epoch)
            out["image"][i] = cv2.warpAffine(pixels[i], matrix, (w, h), flags=cv2.INTER_LINEAR)
            out["target"][i], out["target_weight"][i, :, 0] = self.heatmaps(points, visible)
            out["keypoints"][i] = points
            out["transform"][i] = compose_affine(matrix, rec["affine"])
            out["flipped"][i] = flipped
        return out

    def draws(self, image_index: int, face_index: int, epoch: int) -> np.ndarray:
        """The six uniform/normal draws of one sample (always all drawn, so options never shift the stream)."""
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, int(image_index) & 0xFFFFFFFF,
                                     int(face_index) & 0xFFFFFFFF])
        return np.array([rng.random(), rng.random(), rng.standard_normal(), rng.standard_normal(), rng.random(),
                         rng.standard_normal()])

    def sample_transform(self, rec: np.void, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(stored crop -> input 2x3, keypoints in input pixels (K, 2), visibility (K,), flipped)."""
        sw, sh = self.stored
        points = np.asarray(rec["keypoints"], np.float64)
        visible = np.asarray(rec["visible"]) > 0
        center = np.array([sw * 0.5, sh * 0.5])
        size = np.array(self.input, np.float64)  # the input window in stored pixels (same zoom)
        pre = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        flipped, rotation = False, 0.0
        if self.augment:
            u_flip, u_half, n_upper, n_scale, u_rot, n_rot = self.draws(rec["image_index"], rec["face_index"], epoch)
            if self.flip_permutation is not None and u_flip < self.flip_prob:
                flipped = True
                pre = np.array([[-1.0, 0.0, sw - 1.0], [0.0, 1.0, 0.0]])  # mmpose: x -> width - 1 - x
                perm = np.asarray(self.flip_permutation)
                points, visible, center = apply_affine(pre, points)[perm], visible[perm], apply_affine(pre, center)
            if self.upper_body is not None and u_half < self.half_body_prob:
                center, size = self._half_body(points, visible, n_upper, center, size)
            size = size * np.clip(n_scale * self.scale_factor + 1, 1 - self.scale_factor, 1 + self.scale_factor)
            if u_rot <= self.rotation_prob:
                rotation = float(np.clip(n_rot * self.rotation_factor, -2 * self.rotation_factor,
                                         2 * self.rotation_factor))
        warp = affine_transform(center, size[0] / PIXEL_STD, rotation, self.input)
        matrix = compose_affine(warp, pre)
        points = apply_affine(warp, points)
        points[~visible] = np.nan
        return matrix, points, visible, flipped

    def _half_body(self, points: np.ndarray, visible: np.ndarray, n_upper: float, center: np.ndarray,
                   size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mmpose 0.x TopDownHalfBodyTransform (its `randn() < 0.5` choice kept): the box of the upper or
        lower body joints, grown to the input's aspect, times 1.5; unchanged with too few joints."""
        if visible.sum() <= self.half_body_min_joints:
            return center, size
        upper_mask = np.zeros(len(points), bool)
        upper_mask[list(self.upper_body or ())] = True
        upper, lower = points[visible & upper_mask], points[visible & ~upper_mask]
        chosen = upper if n_upper < 0.5 and len(upper) > 2 else (lower if len(lower) > 2 else upper)
        if len(chosen) < 2:
            return center, size
        lo, hi = chosen.min(axis=0), chosen.max(axis=0)
        w, h = hi - lo
        aspect = self.input[0] / self.input[1]
        if w > aspect * h:
            h = w / aspect
        elif w < aspect * h:
            w = h * aspect
        return chosen.mean(axis=0), np.array([w, h]) * HALF_BODY_PADDING

    def heatmaps(self, points: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, h, w) MSRA Gaussian heatmaps of keypoints in input pixels and (K,) target weights."""
        hw, hh = self.heatmap
        half = int(3 * self.sigma)
        maps = np.zeros((len(points), hh, hw), np.float32)
        weight = np.zeros(len(points), np.float32)
        xs, ys = np.arange(hw), np.arange(hh)
        for j, (p, v) in enumerate(zip(points, visible, strict=True)):
            if not v or not np.isfinite(p).all():
                continue
            mu = (p / self.stride + 0.5).astype(np.int64)  # mmpose: int(x / stride + 0.5)
            if mu[0] - half >= hw or mu[1] - half >= hh or mu[0] + half < 0 or mu[1] + half < 0:
                continue  # the window misses the map: weight 0
            gx = np.where(np.abs(xs - mu[0]) <= half, np.exp(-((xs - mu[0]) ** 2) / (2 * self.sigma ** 2)), 0.0)
            gy = np.where(np.abs(ys - mu[1]) <= half, np.exp(-((ys - mu[1]) ** 2) / (2 * self.sigma ** 2)), 0.0)
            maps[j] = np.outer(gy, gx)
            weight[j] = 1.0
        return maps, weight


def decode_heatmaps(heatmaps: np.ndarray, image_to_input: np.ndarray, input_size: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (n, K, h, w) -> (keypoints (n, K, 2) in image pixels, peak values (n, K)).

    The argmax, shifted a quarter pixel toward the higher neighbour where it is not on the map's border
    (mmpose's `get_max_preds` + post-processing), scaled by the stride to input pixels and mapped back
    through the inverse of `image_to_input` (n, 2, 3) (the readers' `transform` column, or for unaugmented
    inputs `compose_affine(eval_input_transform(...), record["affine"])`). Peaks <= 0 give NaN.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(axis=2)
    peak = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    px, py = idx % w, idx // w
    coords = np.stack([px, py], axis=-1).astype(np.float64)
    inner = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    for b, j in zip(*np.nonzero(inner), strict=True):
        hm, x, y = heatmaps[b, j], px[b, j], py[b, j]
        coords[b, j] += 0.25 * np.sign([hm[y, x + 1] - hm[y, x - 1], hm[y + 1, x] - hm[y - 1, x]])
    coords *= np.array(input_size, np.float64) / np.array([w, h], np.float64)
    out = np.stack([apply_affine(invert_affine(image_to_input[b]), coords[b]) for b in range(n)]) if n else coords
    out[peak <= 0] = np.nan
    return out, peak


def eval_input_transform(stored: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Stored crop -> input without augmentation: the central input-sized window (a translation)."""
    return affine_transform(np.array([stored[0] * 0.5, stored[1] * 0.5]), input_size[0] / PIXEL_STD, 0.0, input_size)
