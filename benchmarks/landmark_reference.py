"""The reference approach of landmark training repos, for bench_landmarks.py: one PNG per (augmented) sample
written with cv2.imwrite plus one text line of its targets, as PFLD-pytorch's data/SetPreparation.py does
(10 samples per face) and as a top-down list-of-crops dataset would. Run as its own process; no facedata
import (it reads the plain-text list bench_landmarks.py writes).

List line: image path, box x1 y1 x2 y2, then the points x y, then pitch yaw roll (annotated, degrees).

pfld (after SetPreparation.py's ImageDate.load_data): square of 1.2 x the points' larger extent about their
centre, zero-padded, resized to 112; then until `repeat` samples: rotation randint(-30, 30) about the centre
jittered by +-0.1 x side, side randint(min extent, 1.25 x max extent) of the rotated points, redrawn when a point
leaves the crop (bounded here: 20 tries), mirror p 0.5 through the flip permutation; Euler angles by
cv2.solvePnP on 6 points (PFLD's calculate_pitch_yaw_roll uses 14 of WFLW's 98).
topdown: one affine warp of mmpose's centre/scale box (padding 1.25, aspect of --input) to the input x 1.25.

    python landmark_reference.py {pfld|topdown} LIST FLIP OUT_DIR [--repeat 10] [--input 192x256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

# generic 3D head model points (mm) for ibug68 indices: nose tip, chin, eye outer corners, mouth corners
MODEL_INDEX = [30, 8, 36, 45, 48, 54]
MODEL_3D = np.array([[0.0, 0.0, 0.0], [0.0, -330.0, -65.0], [-225.0, 170.0, -135.0], [225.0, 170.0, -135.0],
                     [-150.0, -150.0, -125.0], [150.0, -150.0, -125.0]])


def read_list(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    faces = []
    for line in path.read_text().splitlines():
        fields = line.split()
        values = np.array(fields[1:], np.float64)
        faces.append((fields[0], values[:4], values[4:-3].reshape(-1, 2)))
    return faces


def crop_padded(img: np.ndarray, x1: int, y1: int, size: int, out: int) -> np.ndarray:
    """img[y1:y1+size, x1:x1+size] with out-of-image parts zero, resized to out x out."""
    h, w = img.shape[:2]
    x2, y2 = x1 + size, y1 + size
    dx, dy, edx, edy = max(0, -x1), max(0, -y1), max(0, x2 - w), max(0, y2 - h)
    part = img[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    if dx or dy or edx or edy:
        part = cv2.copyMakeBorder(part, dy, edy, dx, edx, cv2.BORDER_CONSTANT, 0)
    return cv2.resize(part, (out, out))


def euler(points: np.ndarray, size: int) -> tuple[float, float, float]:
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float64)
    _, rvec, _ = cv2.solvePnP(MODEL_3D, points[MODEL_INDEX] * size, camera, np.zeros(4))
    r, _ = cv2.Rodrigues(rvec)
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    yaw = np.degrees(np.arcsin(-np.clip(r[2, 0], -1, 1)))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return float(pitch), float(yaw), float(roll)


def pfld_samples(img: np.ndarray, pts: np.ndarray, flip: np.ndarray, repeat: int, rng: np.random.Generator):
    low, high = pts.min(0), pts.max(0)
    wh = high - low + 1
    center = (low + wh / 2).astype(np.int32)
    side = int(np.max(wh) * 1.2)
    xy = center - side // 2
    samples = [(crop_padded(img, int(xy[0]), int(xy[1]), side, 112), (pts - xy) / side)]
    tries = 0
    while len(samples) < repeat and tries < 20 * repeat:
        tries += 1
        angle = int(rng.integers(-30, 30))
        cx = center[0] + int(rng.integers(int(-side * 0.1), int(side * 0.1) + 1))
        cy = center[1] + int(rng.integers(int(-side * 0.1), int(side * 0.1) + 1))
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
        rotated = pts @ m[:, :2].T + m[:, 2]
        extent = np.ptp(rotated, axis=0).astype(int) + 1
        size = int(rng.integers(int(np.min(extent)), int(np.ceil(np.max(extent) * 1.25)) + 1))
        corner = np.array([cx - size // 2, cy - size // 2])
        target = (rotated - corner) / size
        if (target < 0).any() or (target > 1).any():
            continue
        warped = cv2.warpAffine(img, m, (int(img.shape[1] * 1.1), int(img.shape[0] * 1.1)))
        crop = crop_padded(warped, int(corner[0]), int(corner[1]), size, 112)
        if rng.random() > 0.5:
            crop, target = cv2.flip(crop, 1), np.stack([1 - target[flip, 0], target[flip, 1]], 1)
        samples.append((crop, target))
    return samples


def topdown_sample(img: np.ndarray, box: np.ndarray, pts: np.ndarray, input_wh: tuple[int, int]):
    w_in, h_in = input_wh[0] * 1.25, input_wh[1] * 1.25
    x1, y1, x2, y2 = box
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    w, h = x2 - x1, y2 - y1
    aspect = w_in / h_in
    w, h = (h * aspect, h) if w < aspect * h else (w, w / aspect)
    scale = np.array([w, h]) * 1.25 * 1.25  # mmpose padding, then the stored margin
    zoom = w_in / scale[0]
    m = np.array([[zoom, 0, w_in / 2 - zoom * center[0]], [0, zoom, h_in / 2 - zoom * center[1]]])
    crop = cv2.warpAffine(img, m, (int(w_in), int(h_in)), flags=cv2.INTER_LINEAR)
    return crop, pts @ m[:, :2].T + m[:, 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["pfld", "topdown"])
    parser.add_argument("list", type=Path)
    parser.add_argument("flip", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--input", default="192x256")
    args = parser.parse_args()
    flip = np.array(args.flip.read_text().split(), int)
    input_wh = tuple(int(v) for v in args.input.split("x"))
    (args.out / "imgs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = 0
    with open(args.out / "list.txt", "w") as listing:
        for k, (path, box, pts) in enumerate(read_list(args.list)):
            img = cv2.imread(path)
            if args.kind == "pfld":
                samples = pfld_samples(img, pts, flip, args.repeat, rng)
            else:
                samples = [topdown_sample(img, box, pts, input_wh)]
            for j, (crop, target) in enumerate(samples):
                name = args.out / "imgs" / f"{k}_{j}.png"
                cv2.imwrite(str(name), crop)
                angles = euler(target, 112) if args.kind == "pfld" else ()
                listing.write(" ".join([str(name), *(f"{v:.6f}" for v in target.ravel()),
                                        *(f"{v:.6f}" for v in angles)]) + "\n")
                written += 1
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
