"""`verify --pixels N`: re-cut N samples from their source images with an independent warp and compare.

The re-cut follows the documented sample geometry (facedata.oracle.geometry; facedata/samplers/geometry.py's
module doc states the pixel rule) in plain numpy, never the renderer's code. Output pixel (i, j) of a
size x size sample shows the continuous crop point (x1 + (i + 0.5) * w / size, y1 + (j + 0.5) * h / size)
of the image rotated about the crop centre; a point is read from the source by rotating it back and
sampling bilinearly at pixel index (sx - 0.5, sy - 0.5), zero outside the image.
- rotated crops, INTER_LINEAR (the default): each output pixel reads its own crop point once;
- unrotated crops, and every INTER_AREA crop (`--interpolation area`): the crop window (pixel centres
  x1 + k + 0.5, read as above; a zero-padded slice when unrotated) is resized to size x size with explicit
  weight matrices for what cv2.resize does (INTER_LINEAR: half-pixel centres, edge clamp; INTER_AREA: box
  average when shrinking, its own fractional rule when enlarging);
then mirrored. Images are decoded with EXIF orientation ignored (annotations index the stored pixel array).

Tolerance: the renderer resizes with cv2.resize in 11-bit fixed point, and rotated crops come from
cv2.warpAffine (INTER_LINEAR), which in OpenCV 4.x quantises source coordinates to 1/32 px (5.x reads them
exactly); both round to uint8. So the exact re-cut differs by rounding (1 grey level) on plain crops and, on
rotated ones under OpenCV 4.x, by up to 1/64 px times the local gradient: a few levels at the sharpest edges
(the figures below; OpenCV 5.0 warps within rounding: max 0.5 off exact bilinear on white noise).
Measured on ~600 rotated samples per build plus 400 picked ones: real WIDER/CUHK photos mean abs diff
<= 0.16, max 1; synthetic demo corpus mean <= 0.16, max 5 (both interpolations); only white noise, the
worst case, comes near the bound (mean ~0.9, max 6).
A sample fails when its mean absolute difference exceeds TOLERANCE.mean = 0.5 or any value differs by
more than TOLERANCE.max = 10 (the quantisation bound for a full 0-255 step within one pixel, plus
rounding); a mirrored, shifted or wrong-image crop is typically tens of levels off on average (and a rotated
crop cut by a warp of the window then a resize, the rule before, 1-2 on average and 11-60 at most on
synthetic texture).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facedata.errors import FacedataError
from facedata.imageprobe import probe_size, too_large
from facedata.manifest import Manifest
from facedata.oracle.geometry import rotate_about
from facedata.samples import LABEL_NAMES, ORIGIN_DETECTIONS, ORIGIN_LANDMARKS

# Stored orientation; 16-bit samples kept so that `_decode` scales them to the nearest 8-bit level itself.
DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION
INTERPOLATIONS = ("linear", "area")


@dataclass(frozen=True)
class Tolerance:
    mean: float  # mean absolute difference over a sample's pixels, grey levels
    max: int  # largest difference of any one pixel value


TOLERANCE = Tolerance(mean=0.5, max=10)
# Samples stored as JPEG (quality 95, `--encode jpeg`) differ from their raw crop by up to ~2.6 grey levels
# on average per sample and ~60 at single pixels (measured on AFLW2000-3D PFLD crops); a wrong image or
# crop is tens of levels off on average, so the mean still tells them apart.
LOSSY_TOLERANCE = Tolerance(mean=4.0, max=128)


def tolerance_for(encoding: str) -> Tolerance:
    """The pixel tolerance for samples stored with `encoding` (index.json `image_encoding`)."""
    return LOSSY_TOLERANCE if encoding == "jpeg" else TOLERANCE


@dataclass(frozen=True)
class PixelResult:
    index: int  # sample index in dataset order
    label: int
    origin: int
    mirror: bool
    angle: float
    path: str
    mean_diff: float
    max_diff: int
    problem: str | None = None  # why it fails (None: within tolerance)

    def __str__(self) -> str:
        name = LABEL_NAMES.get(self.label, self.label)
        variant = (" mirrored" if self.mirror else "") + (f" rotated {self.angle:.2f} deg" if self.angle else "")
        return f"sample {self.index} ({name}{variant}) from {self.path}: {self.problem}"


@dataclass
class PixelReport:
    tolerance: Tolerance
    results: list[PixelResult] = field(default_factory=list)

    @property
    def failures(self) -> list[PixelResult]:
        return [r for r in self.results if r.problem is not None]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self, max_listed: int = 20) -> str:
        n = len(self.results)
        mirrored = sum(r.mirror for r in self.results)
        rotated = sum(r.angle != 0 for r in self.results)
        worst_mean = max((r.mean_diff for r in self.results), default=0.0)
        worst_max = max((r.max_diff for r in self.results), default=0)
        head = (f"re-cut {n:,} samples ({mirrored:,} mirrored, {rotated:,} rotated) from their source images: "
                f"{len(self.failures):,} outside tolerance (mean abs diff <= {self.tolerance.mean}, max <= "
                f"{self.tolerance.max}; worst seen: mean {worst_mean:.3f}, max {worst_max})")
        return "\n".join([head, *(f"  {r}" for r in self.failures[:max_listed])])

    def to_dict(self, max_listed: int = 20) -> dict[str, Any]:
        """The verdict for `verify --json`: samples re-cut, failures, tolerance, worst differences, the listed."""
        return {"ok": self.ok, "checked": len(self.results), "mirrored": sum(r.mirror for r in self.results),
                "rotated": sum(r.angle != 0 for r in self.results), "failures": len(self.failures),
                "tolerance": {"mean": self.tolerance.mean, "max": self.tolerance.max},
                "worst_mean_diff": max((r.mean_diff for r in self.results), default=0.0),
                "worst_max_diff": max((r.max_diff for r in self.results), default=0),
                "listed": [str(r) for r in self.failures[:max_listed]]}


def pick_samples(records: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of min(n, len) samples drawn from `seed`: up to a quarter each from the mirrored and
    the rotated samples (when there are any; records without an `angle` have none), the rest uniformly
    from the others."""
    rng = np.random.default_rng([seed, 0x9E3779B9])
    n = min(n, len(records))
    mirrored = records["mirror"] != 0
    rotated = records["angle"] != 0 if "angle" in records.dtype.names else np.zeros(len(records), bool)
    chosen: list[np.ndarray] = []
    taken = np.zeros(len(records), bool)
    for pool in (np.flatnonzero(mirrored & ~rotated), np.flatnonzero(rotated)):
        k = min(len(pool), -(-n // 4))
        pick = rng.choice(pool, k, replace=False) if k else pool[:0]
        taken[pick] = True
        chosen.append(pick)
    rest = np.flatnonzero(~taken)
    k = min(len(rest), n - sum(len(c) for c in chosen))
    chosen.append(rng.choice(rest, k, replace=False) if k else rest[:0])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def sample_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """image (H, W, C) at pixel-index coordinates (x, y), bilinear, zero outside the image."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    out = np.zeros((*x.shape, image.shape[2]))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))[..., None]
            out += wy * wx * np.where(inside, image[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0)
    return out


def _rotated(image: np.ndarray, crop: np.ndarray, angle: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The image rotated `angle` degrees about the crop centre, at the continuous points xs x ys (a grid)."""
    x1, y1, x2, y2 = crop
    qx, qy = np.meshgrid(xs, ys)
    # the rotated image shows at q the source point that the rotation carried there: rotate q back
    sx, sy = rotate_about(qx, qy, (x1 + x2) / 2, (y1 + y2) / 2, -angle)
    return sample_bilinear(image, sx - 0.5, sy - 0.5)


def _window(image: np.ndarray, crop: np.ndarray, angle: float) -> np.ndarray:
    """The crop window of the image rotated `angle` degrees about the crop centre, float (h, w, C)."""
    x1, y1, x2, y2 = (int(v) for v in crop)
    if angle == 0:  # pixel centres map onto pixel centres: the window is a zero-padded slice
        h, w = image.shape[:2]
        out = np.zeros((y2 - y1, x2 - x1, image.shape[2]))
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        return out
    return _rotated(image, crop, angle, x1 + np.arange(x2 - x1) + 0.5, y1 + np.arange(y2 - y1) + 0.5)


def _resize_weights(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) weights of one axis of cv2.resize: 'linear', 'area' (shrinking) or 'area_up'."""
    scale = n_in / n_out
    j = np.arange(n_out, dtype=np.float64)
    out = np.zeros((n_out, n_in))
    if mode == "area":  # each output pixel averages the source interval [j, j + 1) * scale
        k = np.arange(n_in, dtype=np.float64)
        lo, hi = j[:, None] * scale, (j[:, None] + 1) * scale
        return np.clip(np.minimum(k + 1, hi) - np.maximum(k, lo), 0, None) / scale
    if mode == "area_up":  # cv2's INTER_AREA when not shrinking: weight from the pixel's fractional overlap
        start = np.floor(j * scale)
        frac = (j + 1) - (start + 1) / scale
        frac = np.where(frac <= 0, 0.0, frac - np.floor(frac))
    else:  # INTER_LINEAR: output centre (j + 0.5) maps to source (j + 0.5) * scale - 0.5
        pos = (j + 0.5) * scale - 0.5
        start = np.floor(pos)
        frac = pos - start
        frac[start < 0], start[start < 0] = 0.0, 0
    frac[start >= n_in - 1], start[start >= n_in - 1] = 0.0, n_in - 1
    left = start.astype(np.int64)
    out[np.arange(n_out), left] += 1 - frac
    out[np.arange(n_out), np.minimum(left + 1, n_in - 1)] += frac
    return out


def recut(image: np.ndarray, crop: np.ndarray, angle: float, mirror: bool, size: int, interpolation: str
          ) -> np.ndarray:
    """(size, size, C) uint8: one sample re-cut from a decoded BGR image."""
    crop = np.asarray(crop, np.float64)
    if angle != 0 and interpolation == "linear":  # one bilinear read at each output pixel's crop point
        centres = np.arange(size) + 0.5
        x1, y1, x2, y2 = crop
        resized = _rotated(image, crop, angle, x1 + centres * (x2 - x1) / size, y1 + centres * (y2 - y1) / size)
    else:
        window = _window(image, crop, float(angle))
        h, w = window.shape[:2]
        mode = "linear" if interpolation == "linear" else "area" if min(h, w) >= size else "area_up"
        rows = np.tensordot(_resize_weights(h, size, mode), window, axes=(1, 0))  # (size, w, C)
        resized = np.einsum("lk,ikc->ilc", _resize_weights(w, size, mode), rows)
    out = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return out[:, ::-1] if mirror else out


class ArraySource:
    """(pixels, records) arrays with the reader interface the pixel check needs."""

    def __init__(self, pixels: np.ndarray, records: np.ndarray) -> None:
        self.pixels, self.records = pixels, records

    def __len__(self) -> int:
        return len(self.records)

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.pixels[indices], self.records[indices]

    def read_range(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pixels[start:stop], self.records[start:stop]


def all_records(dataset: Any) -> np.ndarray:
    """Every record of a reader (len, read_range), read in slices."""
    step = 1 << 16
    return np.concatenate([dataset.read_range(s, min(len(dataset), s + step))[1]
                           for s in range(0, len(dataset), step)])


def verify_pixels(
    dataset: Any,
    det_manifest: Manifest | None,
    lmk_manifest: Manifest | None,
    *,
    n: int,
    seed: int = 0,
    interpolation: Mapping[int, str] | None = None,
    roots: dict[str, str] | None = None,
    tolerance: Tolerance = TOLERANCE,
) -> PixelReport:
    """Re-cut `n` samples picked by `pick_samples(seed)` and compare them with the stored pixels.

    `dataset`: a reader (len, read, read_range) or a (pixels, records) pair. `interpolation` maps origin
    (ORIGIN_DETECTIONS / ORIGIN_LANDMARKS) to the resize the build recorded ('linear' by default).
    """
    if isinstance(dataset, tuple):
        dataset = ArraySource(*dataset)
    interpolation = {ORIGIN_DETECTIONS: "linear", ORIGIN_LANDMARKS: "linear", **(interpolation or {})}
    for mode in interpolation.values():
        if mode not in INTERPOLATIONS:
            raise FacedataError(f"unknown interpolation {mode!r}; expected one of {INTERPOLATIONS}")
    manifests = {ORIGIN_DETECTIONS: det_manifest, ORIGIN_LANDMARKS: lmk_manifest}
    paths = {o: None if m is None else m.image_paths(roots).tolist() for o, m in manifests.items()}
    sizes = {o: None if m is None else m.images[["width", "height"]].to_numpy(np.float64, na_value=np.nan)
             for o, m in manifests.items()}
    report = PixelReport(tolerance)
    if len(dataset) == 0:
        return report
    indices = pick_samples(all_records(dataset), n, seed)
    pixels, records = dataset.read(indices)
    order = np.lexsort((records["image_index"], records["origin"]))  # decode each image once
    decoded: tuple[Any, Any] = (None, None)
    for k in order.tolist():
        rec = records[k]
        origin, image_index = int(rec["origin"]), int(rec["image_index"])
        if paths.get(origin) is None:
            name = {ORIGIN_DETECTIONS: "detection", ORIGIN_LANDMARKS: "landmark"}.get(origin)
            raise FacedataError(f"sample {indices[k]} is a {name} sample but no {name} manifest was given"
                                if name else f"sample {indices[k]} has unknown origin {origin}")
        path = paths[origin][image_index] if 0 <= image_index < len(paths[origin]) else f"<image {image_index}>"
        if decoded[0] != (origin, image_index):
            decoded = ((origin, image_index), decode_source(path, sizes[origin], image_index))
        image = decoded[1]
        result = dict(index=int(indices[k]), label=int(rec["label"]), origin=origin, mirror=bool(rec["mirror"]),
                      angle=float(rec["angle"]), path=path)
        unusable = image if isinstance(image, str) else _crop_problem(rec["crop"], image.shape)
        if unusable is not None:
            report.results.append(PixelResult(**result, mean_diff=float("inf"), max_diff=255, problem=unusable))
            continue
        mine = recut(image, rec["crop"], float(rec["angle"]), bool(rec["mirror"]), pixels.shape[1],
                     interpolation[origin])
        report.results.append(PixelResult(**result, **compare_pixels(pixels[k], mine, tolerance)))
    report.results.sort(key=lambda r: r.index)
    return report


def compare_pixels(stored: np.ndarray, mine: np.ndarray, tolerance: Tolerance) -> dict[str, Any]:
    """A PixelResult's difference fields: mean and max absolute difference, and the problem past `tolerance`."""
    diff = np.abs(stored.astype(np.int16) - mine.astype(np.int16))
    mean, worst = float(diff.mean()), int(diff.max())
    problem = None
    if mean > tolerance.mean or worst > tolerance.max:
        problem = f"pixels differ from the re-cut: mean abs diff {mean:.3f}, max {worst}"
    return {"mean_diff": mean, "max_diff": worst, "problem": problem}


def decode_source(path: str, sizes: np.ndarray, image_index: int) -> np.ndarray | str:
    """The decoded image, or why it cannot be used (missing, undecodable, not the manifest's size)."""
    if not 0 <= image_index < len(sizes):
        return f"image row {image_index} is not in the manifest"
    size = probe_size(path)
    if size is not None and too_large(size):  # a decompression bomb is never decoded (the build skipped it)
        return f"source image declares {size[0]:,}x{size[1]:,} pixels, above the pixel limit"
    try:
        image = cv2.imread(path, DECODE_FLAGS)
    except cv2.error:  # e.g. a frame above OpenCV's own pixel limit
        image = None
    if image is None:
        return "cannot read or decode the source image"
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)  # v * 255 / 65535, to the nearest level
    elif image.dtype != np.uint8:
        return f"source image has {image.dtype} samples"
    width, height = sizes[image_index]
    if np.isfinite(width) and (image.shape[1], image.shape[0]) != (width, height):
        return f"decoded size {image.shape[1]}x{image.shape[0]} differs from the manifest's {width:.0f}x{height:.0f}"
    return image


def _crop_problem(crop: np.ndarray, shape: tuple[int, ...]) -> str | None:
    """Why the crop box cannot be cut from an image of `shape` (the label check says more), or None."""
    c = np.asarray(crop, np.float64)
    h, w = shape[:2]
    if not (np.isfinite(c).all() and (np.rint(c) == c).all() and c[2] > c[0] and c[3] > c[1]):
        return f"crop {c.tolist()} is not a whole-pixel box of positive size"
    if c[2] - c[0] > 4 * w or c[3] - c[1] > 4 * h or c[2] <= 0 or c[3] <= 0 or c[0] >= w or c[1] >= h:
        return f"crop {c.tolist()} does not overlap the {w}x{h} image"
    return None
