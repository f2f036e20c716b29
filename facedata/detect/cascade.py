"""The MTCNN cascade PNet → RNet → ONet over any stage models that fit `ModelContract`.

Follows the reference detector ([A] Detection/MtcnnDetector.py, spec §3) with these documented choices:
- boxes are continuous x1, y1, x2, y2 (x2 = x + w, the manifest convention): widths are x2 − x1, not the
  reference's x2 − x1 + 1, in calibration, squaring, NMS areas and crops;
- pyramid scales m·factor^k, m = 12/pyramid_min_face, while the resized image's shorter side is ≥ 12 (the
  reference stops at > 12, dropping a level whose map would be 1 cell wide); PNet cells map back with
  the true per-axis resize ratio (int() truncation of the level size included) and are not rounded;
- the RNet/ONet crops are the squared, rounded boxes, zero-padded outside the image, sampled bilinearly
  in one cv2.remap call per batch (equal to cv2.resize of the padded crop up to edge interpolation);
- NMS: per scale `nms_per_scale`, merged `nms_merged` (both on the PNet lattices, `lattice_nms`), RNet
  `nms_rnet` (union, before calibration), ONet `nms_onet` after calibration in `onet_nms_mode` ("min",
  as the reference).
Nothing is kept between images: memory is bounded by one image's pyramid and `rnet_batch` crops.

Thresholds: `DETECTION_THRESHOLDS` (0.6, 0.7, 0.7), the default of `CascadeConfig` and `detect`, is the
official inference setting ([K], [S]) and [Y]/[M]'s mining setting; `MINING_THRESHOLDS` (0.3, 0.1, 0.7),
the default of `build rnet/onet`, is [A]'s mining setting (older (0.4, 0.05, 0.7)): hard-example mining
wants recall, since a face the previous stage misses never becomes a positive or part sample of the next.
Measured with the real pretrained MTCNN (facenet-pytorch's weights) on the 79 COCO photos of realdata:
PNet proposes 364 boxes per image at 0.3 against 124 at 0.6 for about the same CPU time (the pyramid
pass dominates); PNet + RNet keep 64 against 5 at (0.3, 0.1) against (0.6, 0.7), for 1.6× the time.
[K] for WIDER uses (0.5, 0.5, 0.3) with minsize 10, factor 0.79; the paper's factor is 0.709.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from facedata.detect.models import ModelContract, StageModel, load_stage
from facedata.detect.nms import Lattice, lattice_nms, nms
from facedata.detect.settings import DETECTION_THRESHOLDS
from facedata.errors import FacedataError
from facedata.samples import STAGE_SIZE

CELL, STRIDE = 12, 2
ModelSpec = str | os.PathLike[str] | Callable[[np.ndarray], tuple[np.ndarray, ...]] | StageModel


@dataclass(frozen=True)
class CascadeConfig:
    """Pyramid, thresholds and NMS overlaps of the cascade (defaults: see module docstring)."""

    pyramid_min_face: float = 20  # smallest face (px) the image pyramid searches (--pyramid-min-face)
    factor: float = 0.79
    thresholds: tuple[float, float, float] = DETECTION_THRESHOLDS
    nms_per_scale: float = 0.5
    nms_merged: float = 0.7
    nms_rnet: float = 0.6
    nms_onet: float = 0.7
    onet_nms_mode: str = "min"
    rnet_batch: int = 256

    def __post_init__(self) -> None:
        if not self.pyramid_min_face > 0:
            raise FacedataError(f"--pyramid-min-face must be > 0, not {self.pyramid_min_face}")
        if not 0 < self.factor < 1:
            raise FacedataError(f"--factor (pyramid scale step) must be in (0, 1), not {self.factor}")
        if len(self.thresholds) != 3:
            raise FacedataError(f"--thresholds must be 3 numbers (PNet, RNet, ONet), not {self.thresholds}")
        if self.rnet_batch < 1:
            raise FacedataError(f"rnet_batch must be ≥ 1, not {self.rnet_batch}")


@dataclass(frozen=True)
class Detections:
    """What one cascade run found, best score first. `proposals`: boxes left after each stage run."""

    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, calibrated
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray | None = None  # (N, 5, 2) float32 image pixels, ONet only
    proposals: tuple[int, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.boxes)


def _empty(proposals: tuple[int, ...], landmarks: bool = False) -> Detections:
    lm = np.zeros((0, 5, 2), np.float32) if landmarks else None
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), lm, proposals)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Centred squares of side max(w, h), rounded to whole pixels with x2 − x1 == y2 − y1 exactly."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.round(np.maximum(w, h))
    x1 = np.round(boxes[:, 0] + w / 2 - side / 2)
    y1 = np.round(boxes[:, 1] + h / 2 - side / 2)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def calibrate(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply box regression (dx1, dy1, dx2, dy2) in units of the box width/height."""
    boxes = np.asarray(boxes, dtype=np.float64)
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    return boxes + reg.astype(np.float64) * np.concatenate([wh, wh], axis=1)


def crop_batch(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of integer boxes, zero outside the image, bilinear, one remap call."""
    n = len(boxes)
    if n == 0:
        return np.zeros((0, size, size, image.shape[2]), image.dtype)
    boxes = np.asarray(boxes, dtype=np.float64)
    t = (np.arange(size) + 0.5) / size  # pixel centres of the output, as fractions of the crop
    xs = boxes[:, 0:1] + t[None, :] * (boxes[:, 2:3] - boxes[:, 0:1]) - 0.5  # (N, size)
    ys = boxes[:, 1:2] + t[None, :] * (boxes[:, 3:4] - boxes[:, 1:2]) - 0.5
    map_x = np.broadcast_to(xs[:, None, :], (n, size, size)).reshape(n * size, size).astype(np.float32)
    map_y = np.broadcast_to(ys[:, :, None], (n, size, size)).reshape(n * size, size).astype(np.float32)
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(n, size, size, image.shape[2])


_DEFAULT_CONFIG, _DEFAULT_CONTRACT = CascadeConfig(), ModelContract()


class Cascade:
    """PNet [→ RNet [→ ONet]]: runs the stages that are given; stage functions are usable one by one."""

    def __init__(
        self,
        pnet: ModelSpec,
        rnet: ModelSpec | None = None,
        onet: ModelSpec | None = None,
        config: CascadeConfig = _DEFAULT_CONFIG,
        contract: ModelContract = _DEFAULT_CONTRACT,
        threads: int = 1,
    ) -> None:
        self.config, self.contract = config, contract
        self.pnet = load_stage(pnet, "pnet", contract, threads)
        self.rnet = load_stage(rnet, "rnet", contract, threads) if rnet is not None else None
        self.onet = load_stage(onet, "onet", contract, threads) if onet is not None else None

    # -- pixels -------------------------------------------------------------------------------------
    def _normalise(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (..., H, W, 3) BGR → float32 (N, 3, H, W) as the contract says, one plane at a time
        (no float HWC temporary, no transpose copy; one image is split into planes by OpenCV first)."""
        x = pixels.reshape(-1, *pixels.shape[-3:])
        if self.contract.channels == "rgb":
            x = x[..., ::-1]
        out = np.empty((x.shape[0], 3, *x.shape[1:3]), np.float32)
        mean = np.float32(self.contract.mean)
        if len(x) == 1:  # a pyramid level: contiguous planes are faster to convert
            planes = [plane[None] for plane in cv2.split(np.ascontiguousarray(x[0]))]
        else:
            planes = [x[..., c] for c in range(3)]
        for c, plane in enumerate(planes):
            np.subtract(plane, mean, out=out[:, c], dtype=np.float32)
        out *= np.float32(self.contract.scale)
        return out

    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        if (
            not isinstance(image, np.ndarray)
            or image.ndim != 3
            or image.shape[2] != 3
            or image.dtype != np.uint8
        ):
            shape = getattr(image, "shape", None)
            raise FacedataError(
                f"the cascade takes uint8 H×W×3 BGR images, got {shape} {getattr(image, 'dtype', '')}"
            )
        return image

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales m·factor^k (m = 12/pyramid_min_face) while the level's shorter side is ≥ 12."""
        out, s = [], CELL / float(self.config.pyramid_min_face)
        while min(int(height * s), int(width * s)) >= CELL:
            out.append(s)
            s *= self.config.factor
        return out

    # -- stages -------------------------------------------------------------------------------------
    def pnet_boxes(self, image: np.ndarray) -> Detections:
        """PNet over the pyramid (one model call per level), per-scale + merged NMS, calibrated boxes."""
        image = self._check_image(image)
        h, w = image.shape[:2]
        thr = self.config.thresholds[0]
        levels: list[Lattice] = []
        regs: list[np.ndarray] = []
        for s in self.scales(h, w):
            lw, lh = int(w * s), int(h * s)
            level = cv2.resize(image, (lw, lh), interpolation=cv2.INTER_LINEAR)
            prob, reg = self.pnet(self._normalise(level))[:2]
            face = prob[0, -1]
            ys, xs = np.nonzero(face > thr)
            if ys.size == 0:
                continue
            rx, ry = w / lw, h / lh  # true resize ratios of this level
            boxes = np.stack(
                [STRIDE * xs * rx, STRIDE * ys * ry, (STRIDE * xs + CELL) * rx, (STRIDE * ys + CELL) * ry],
                axis=1,
            ).astype(np.float64)
            cells = Lattice(xs, ys, boxes, face[ys, xs], CELL, STRIDE)
            keep = lattice_nms([cells], self.config.nms_per_scale)
            levels.append(cells.subset(keep))
            regs.append(reg[0][:, ys[keep], xs[keep]].T)
        if not levels:
            return _empty((0,))
        keep = lattice_nms(levels, self.config.nms_merged, levels_nms=self.config.nms_per_scale)
        boxes, scores, reg = (np.concatenate(a) for a in ([c.boxes for c in levels], [c.scores for c in levels], regs))
        return self._valid(calibrate(boxes[keep], reg[keep]), scores[keep], None)

    def _score_crops(self, model: StageModel, image: np.ndarray, squares: np.ndarray, size: int):
        """Run a 24/48 stage over the squared boxes in batches of `rnet_batch`: (scores, reg, landmarks)."""
        scores, regs, lms = [], [], []
        b = self.config.rnet_batch
        for start in range(0, len(squares), b):
            outs = model(self._normalise(crop_batch(image, squares[start : start + b], size)))
            scores.append(outs[0][:, -1])
            regs.append(outs[1])
            if len(outs) > 2:
                lms.append(outs[2])
        lm = np.concatenate(lms) if lms else None
        return np.concatenate(scores), np.concatenate(regs), lm

    def rnet_boxes(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """RNet on the squared boxes' 24×24 crops: threshold, NMS (union, before calibration), calibrate."""
        if self.rnet is None:
            raise FacedataError("no RNet model loaded")
        image = self._check_image(image)
        if len(boxes) == 0:
            return _empty((0,))
        squares = square_boxes(boxes)
        scores, reg, _ = self._score_crops(self.rnet, image, squares, STAGE_SIZE["rnet"])
        sel = np.flatnonzero(scores > self.config.thresholds[1])
        squares, scores, reg = squares[sel], scores[sel], reg[sel]
        keep = nms(squares, scores, self.config.nms_rnet)
        return self._valid(calibrate(squares[keep], reg[keep]), scores[keep], None)

    def onet_boxes(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """ONet on 48×48 crops: threshold, calibrate, landmarks in image pixels, NMS after calibration."""
        if self.onet is None:
            raise FacedataError("no ONet model loaded")
        image = self._check_image(image)
        if len(boxes) == 0:
            return _empty((0,), landmarks=True)
        squares = square_boxes(boxes)
        scores, reg, lm = self._score_crops(self.onet, image, squares, STAGE_SIZE["onet"])
        sel = np.flatnonzero(scores > self.config.thresholds[2])
        squares, scores, reg, lm = squares[sel], scores[sel], reg[sel], lm[sel]
        if self.contract.landmark_layout == "xyxy":
            frac = lm.reshape(-1, 5, 2)
        else:  # "xxyy"
            frac = np.stack([lm[:, :5], lm[:, 5:]], axis=2)
        side = (squares[:, 2] - squares[:, 0])[:, None, None]
        points = squares[:, None, 0:2] + frac * side
        calibrated = calibrate(squares, reg)
        keep = nms(calibrated, scores, self.config.nms_onet, mode=self.config.onet_nms_mode)
        return self._valid(calibrated[keep], scores[keep], points[keep])

    @staticmethod
    def _valid(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray | None) -> Detections:
        """Drop boxes that regression turned inside out (or NaN); cast to float32."""
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & np.isfinite(boxes).all(axis=1)
        lm = None if points is None else points[ok].astype(np.float32)
        return Detections(boxes[ok].astype(np.float32), scores[ok].astype(np.float32), lm, (int(ok.sum()),))

    def detect(self, image: np.ndarray) -> Detections:
        """Run every loaded stage in order on one uint8 BGR image."""
        dets = self.pnet_boxes(image)
        counts = [len(dets)]
        for model, stage in ((self.rnet, self.rnet_boxes), (self.onet, self.onet_boxes)):
            if model is not None:
                dets = stage(image, dets.boxes)
                counts.append(len(dets))
        return Detections(dets.boxes, dets.scores, dets.landmarks, tuple(counts))
