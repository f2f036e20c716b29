"""Mining benchmark, detector part: images/s and peak RSS of the cascade's PNet (+ RNet) stage.

WIDER-shaped images (~1024×700, shapes varying per image) at min-face 20 with MTCNN-sized random-weight
PNet/RNet ONNX models, single process, one onnxruntime thread, against — in the same run — a baseline
written like the reference detector ([A] MtcnnDetector: default onnxruntime session, one call per
pyramid level, per-box Python NMS loop with +1 areas, per-box crop/pad/resize loop for RNet). Each
variant runs in its own subprocess so peak RSS is its own; two corpus sizes show whether RSS is flat.

    .venv/bin/python benchmarks/bench_mining.py [--images 40 120] [--threshold 0.6]

`bench_build(build, paths)` times any callable over a list of image paths (for the full `build rnet`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from onnx_models import mtcnn_pnet, mtcnn_rnet  # noqa: E402

from facedata.detect import Cascade, CascadeConfig  # noqa: E402
from facedata.realdata import realdata_dir  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_corpus(directory: Path, n: int, seed: int = 0) -> list[Path]:
    """n JPEGs ~1024 wide, 600–800 high, cut and rescaled from the real WIDER images (synthetic if absent)."""
    rng = np.random.default_rng(seed)
    real = realdata_dir()
    sources = sorted((real / "wflw" / "WFLW_images").rglob("*.jpg")) if real else []
    bases = [cv2.imread(str(p)) for p in sources] or [rng.integers(0, 256, (800, 1100, 3), dtype=np.uint8)]
    paths = []
    for i in range(n):
        base = bases[i % len(bases)]
        w, h = int(rng.integers(980, 1060)), int(rng.integers(600, 800))
        scale = max(w / base.shape[1], h / base.shape[0]) * rng.uniform(1.0, 1.3)
        big = cv2.resize(base, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        y, x = int(rng.integers(0, big.shape[0] - h + 1)), int(rng.integers(0, big.shape[1] - w + 1))
        img = big[y : y + h, x : x + w]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        path = directory / f"img{i:04d}.jpg"
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


# -- baseline: the reference's structure ----------------------------------------------------------------
def _py_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """[A] py_nms ("Union"), verbatim in structure."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


class ReferenceDetector:
    """Per level: resize, normalise, run; generate_bbox; py_nms; then per-box RNet crops."""

    def __init__(
        self, pnet: Path, rnet: Path, thresholds: Sequence[float], min_face: float = 20, factor=0.79
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()  # defaults: memory arena and per-shape memory patterns on
        opts.intra_op_num_threads = 1
        self.pnet = ort.InferenceSession(str(pnet), opts, providers=["CPUExecutionProvider"])
        self.rnet = ort.InferenceSession(str(rnet), opts, providers=["CPUExecutionProvider"])
        self.thresh, self.min_face, self.factor = thresholds, min_face, factor

    @staticmethod
    def _processed(img, scale):
        h, w = img.shape[:2]
        resized = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
        return (resized - 127.5) / 128

    def detect_pnet(self, im):
        scale = 12.0 / self.min_face
        resized = self._processed(im, scale)
        all_boxes = []
        while min(resized.shape[:2]) > 12:
            x = resized.transpose(2, 0, 1)[None].astype(np.float32)
            prob, reg = self.pnet.run(["prob", "reg"], {"input": x})
            cls_map, reg = prob[0, 1], reg[0].transpose(1, 2, 0)
            t = np.where(cls_map > self.thresh[0])
            if t[0].size:
                boxes = np.vstack(
                    [
                        np.round(2 * t[1] / scale),
                        np.round(2 * t[0] / scale),
                        np.round((2 * t[1] + 12) / scale),
                        np.round((2 * t[0] + 12) / scale),
                        cls_map[t],
                        *(reg[t[0], t[1], i] for i in range(4)),
                    ]
                ).T
                boxes = boxes[_py_nms(boxes[:, :5], 0.5)]
                all_boxes.append(boxes)
            scale *= self.factor
            resized = self._processed(im, scale)
        if not all_boxes:
            return np.zeros((0, 5))
        b = np.vstack(all_boxes)
        b = b[_py_nms(b[:, :5], 0.7)]
        bw, bh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        return np.vstack(
            [
                b[:, 0] + b[:, 5] * bw,
                b[:, 1] + b[:, 6] * bh,
                b[:, 2] + b[:, 7] * bw,
                b[:, 3] + b[:, 8] * bh,
                b[:, 4],
            ]
        ).T

    def detect_rnet(self, im, dets):
        h, w = im.shape[:2]
        bw, bh = dets[:, 2] - dets[:, 0] + 1, dets[:, 3] - dets[:, 1] + 1
        side = np.maximum(bw, bh)
        sq = dets.copy()
        sq[:, 0] = dets[:, 0] + bw * 0.5 - side * 0.5
        sq[:, 1] = dets[:, 1] + bh * 0.5 - side * 0.5
        sq[:, 2], sq[:, 3] = sq[:, 0] + side - 1, sq[:, 1] + side - 1
        sq[:, :4] = np.round(sq[:, :4])
        crops = np.zeros((len(sq), 3, 24, 24), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(sq[:, :4].astype(int)):
            tmp = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
            if sx2 >= sx1 and sy2 >= sy1:
                tmp[sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = im[sy1 : sy2 + 1, sx1 : sx2 + 1]
            crops[i] = ((cv2.resize(tmp, (24, 24)) - 127.5) / 128).transpose(2, 0, 1)
        if not len(crops):
            return np.zeros((0, 5))
        prob, reg = self.rnet.run(["prob", "reg"], {"input": crops})
        keep = np.where(prob[:, 1] > self.thresh[1])[0]
        boxes = sq[keep]
        boxes[:, 4] = prob[keep, 1]
        boxes = boxes[_py_nms(boxes, 0.6)]
        return boxes

    def detect(self, im):
        dets = self.detect_pnet(im)
        return self.detect_rnet(im, dets) if len(dets) else dets


# -- measurement -------------------------------------------------------------------------------------------
def bench_build(build: Callable[[list[Path]], object], paths: list[Path]) -> dict[str, float]:
    """images/s and this process's peak RSS for `build(paths)` (e.g. a full `build rnet` run)."""
    start = time.perf_counter()
    build(paths)
    seconds = time.perf_counter() - start
    return {
        "images": len(paths),
        "seconds": seconds,
        "images_per_s": len(paths) / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_variant(variant: str, models: Path, paths: list[Path], threshold: float, threads: int) -> dict:
    thresholds = (threshold, 0.7, 0.7)
    counts = {"pnet": 0, "rnet": 0}
    if variant == "baseline":
        det = ReferenceDetector(models / "pnet.onnx", models / "rnet.onnx", thresholds)

        def build(ps):
            for p in ps:
                im = cv2.imread(str(p))
                d = det.detect_pnet(im)
                counts["pnet"] += len(d)
                counts["rnet"] += len(det.detect_rnet(im, d)) if len(d) else 0
    else:
        cascade = Cascade(
            models / "pnet.onnx",
            models / "rnet.onnx",
            config=CascadeConfig(thresholds=thresholds),
            threads=threads,
        )

        def build(ps):
            for p in ps:
                d = cascade.detect(cv2.imread(str(p)))
                counts["pnet"] += d.proposals[0]
                counts["rnet"] += d.proposals[1]

    build(paths[:2])  # warm-up (session initialisation, first allocations)
    counts.update(pnet=0, rnet=0)
    result = bench_build(build, paths)
    result.update(
        pnet_boxes_per_image=counts["pnet"] / len(paths), rnet_boxes_per_image=counts["rnet"] / len(paths)
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[30, 90], help="corpus sizes")
    ap.add_argument("--threshold", type=float, default=0.6, help="PNet threshold")
    ap.add_argument(
        "--prob-bias",
        type=float,
        default=-2.5,
        help="bias of the random PNet's face logit (sets how many cells pass the threshold)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        d = Path(args.dir)
        paths = sorted((d / "images").glob("*.jpg"))[: args.images[0]]
        print(json.dumps(run_variant(args.worker, d, paths, args.threshold, args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "images").mkdir()
        mtcnn_pnet(d / "pnet.onnx", seed=1, prob_bias=args.prob_bias)
        mtcnn_rnet(d / "rnet.onnx", seed=2, prob_bias=4.0)
        make_corpus(d / "images", max(args.images))
        rows = []
        for n in args.images:
            for variant in ("baseline", "ours"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    variant,
                    "--dir",
                    tmp,
                    "--images",
                    str(n),
                    "--threshold",
                    str(args.threshold),
                    "--threads",
                    str(args.threads),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append((n, variant, json.loads(out.strip().splitlines()[-1])))
    print(
        f"PNet+RNet stage, ~1024×700 images, min-face 20, factor 0.79, PNet threshold {args.threshold}, "
        f"{args.threads} onnxruntime thread(s), single process\n"
    )
    print("| images | variant | images/s | s/image | PNet boxes/img | RNet boxes/img | peak RSS MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, variant, r in rows:
        print(
            f"| {n} | {variant} | {r['images_per_s']:.2f} | {r['seconds'] / n:.3f} "
            f"| {r['pnet_boxes_per_image']:.0f} | {r['rnet_boxes_per_image']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    for n in args.images:
        base = next(r for m, v, r in rows if m == n and v == "baseline")
        ours = next(r for m, v, r in rows if m == n and v == "ours")
        print(f"\n{n} images: speed-up {ours['images_per_s'] / base['images_per_s']:.2f}×")


if __name__ == "__main__":
    main()
