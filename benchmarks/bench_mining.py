"""Mining benchmark (issue 4): `facedata build rnet` throughput and peak memory at two corpus sizes.

The full build (the real CLI, `--workers` processes, default all cores) on the WIDER-shaped corpus of
bench_build.py (~1024 x 700 JPEGs, WIDER-like face counts and sizes, GT boxes, plus a third as many
landmark images) with an MTCNN-sized random-weight PNet (ONNX, its face logit biased by `--prob-bias` to
set how many cells pass the threshold) at min-face 20, factor 0.79. Baseline, in the same run: the
reference's single-process per-scale loop ([A] gen_hard_example + save_hard_example: one default
onnxruntime session call per pyramid level, per-box Python NMS with +1 areas, all detections kept in a
list, then a per-box square/IoU/crop/resize/JPEG-encode loop with the 60-negative cap). The build
runs with `--ratio all`, so every mined sample is rendered and written (the default mix keeps ~3
negatives per mined positive: few, with random weights). Each variant runs as its own process tree;
memory is the tree's peak PSS (benchmarks/measure.py).

    .venv/bin/python benchmarks/bench_mining.py [--sizes 200,800] [--baseline-images 200] [--workers 2]

Goal: >= 20 images/s on 2 cores, memory flat between the sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from bench_build import facedata_command, make_corpus
from measure import mb, run_measured

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from onnx_models import mtcnn_pnet  # noqa: E402

from facedata.manifest import Manifest  # noqa: E402


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
    """[A] MtcnnDetector's PNet stage: per level resize, normalise, run; generate_bbox; py_nms."""

    def __init__(self, pnet: Path, threshold: float, min_face: float = 20, factor: float = 0.79):
        import onnxruntime as ort

        opts = ort.SessionOptions()  # defaults: memory arena and per-shape memory patterns on
        opts.intra_op_num_threads = 1
        self.pnet = ort.InferenceSession(str(pnet), opts, providers=["CPUExecutionProvider"])
        self.thresh, self.min_face, self.factor = threshold, min_face, factor

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
            t = np.where(cls_map > self.thresh)
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



def _square(dets: np.ndarray) -> np.ndarray:
    """[A] convert_to_square."""
    sq = dets.copy()
    h, w = dets[:, 3] - dets[:, 1] + 1, dets[:, 2] - dets[:, 0] + 1
    side = np.maximum(h, w)
    sq[:, 0] = dets[:, 0] + w * 0.5 - side * 0.5
    sq[:, 1] = dets[:, 1] + h * 0.5 - side * 0.5
    sq[:, 2], sq[:, 3] = sq[:, 0] + side - 1, sq[:, 1] + side - 1
    return sq


def _iou(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """[A] IoU with +1 areas."""
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (gts[:, 2] - gts[:, 0] + 1) * (gts[:, 3] - gts[:, 1] + 1)
    w = np.maximum(0, np.minimum(box[2], gts[:, 2]) - np.maximum(box[0], gts[:, 0]) + 1)
    h = np.maximum(0, np.minimum(box[3], gts[:, 3]) - np.maximum(box[1], gts[:, 1]) + 1)
    inter = w * h
    return inter / (area + areas - inter + 1e-10)


def reference_mining(manifest_path: Path, pnet: Path, threshold: float) -> dict[str, float]:
    """The baseline: gen_hard_example (detections of every image kept), then save_hard_example."""
    manifest = Manifest.read(manifest_path)
    paths = manifest.image_paths()
    faces = manifest.faces
    gts = {iid: g[["x1", "y1", "x2", "y2"]].to_numpy(np.float64) for iid, g in faces.groupby("image_id")}
    ids = manifest.images["image_id"].tolist()
    detector = ReferenceDetector(pnet, threshold)
    all_dets = [detector.detect_pnet(cv2.imread(str(p))) for p in paths]
    counts = {"positive": 0, "part": 0, "negative": 0, "detections": sum(len(d) for d in all_dets)}
    for path, iid, dets in zip(paths, ids, all_dets, strict=True):
        if len(dets) == 0:
            continue
        img = cv2.imread(str(path))
        height, width = img.shape[:2]
        gt = gts.get(iid, np.zeros((0, 4)))
        dets = _square(dets)
        dets[:, :4] = np.round(dets[:, :4])
        neg_num = 0
        for box in dets:
            x_left, y_top, x_right, y_bottom = box[:4].astype(int)
            if x_right - x_left + 1 < 20 or x_left < 0 or y_top < 0 or x_right > width - 1 or y_bottom > height - 1:
                continue
            iou = _iou(box, gt) if len(gt) else np.zeros(1)
            resized = cv2.resize(img[y_top : y_bottom + 1, x_left : x_right + 1], (24, 24))
            if iou.max() < 0.3 and neg_num < 60:
                cv2.imencode(".jpg", resized)
                counts["negative"] += 1
                neg_num += 1
            elif iou.max() >= 0.65:
                cv2.imencode(".jpg", resized)
                counts["positive"] += 1
            elif iou.max() >= 0.4:
                cv2.imencode(".jpg", resized)
                counts["part"] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200,800", help="comma-separated corpus sizes (detection images)")
    ap.add_argument("--baseline-images", type=int, default=200, help="run the baseline at sizes up to this")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threshold", type=float, default=0.6, help="PNet threshold")
    ap.add_argument("--prob-bias", type=float, default=-2.5, help="bias of the random PNet's face logit")
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("TMPDIR", "/tmp")) / "facedata-bench-build")
    ap.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)  # worker mode: a detection manifest
    ap.add_argument("--pnet", type=Path, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.baseline:
        print(json.dumps(reference_mining(args.baseline, args.pnet, args.threshold)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    pnet = mtcnn_pnet(args.workdir / f"pnet-bias{args.prob_bias:g}.onnx", seed=1, prob_bias=args.prob_bias)
    rows = []
    for n in [int(v) for v in args.sizes.split(",")]:
        det, lmk = make_corpus(args.workdir / f"corpus-{n}", n)
        out = args.workdir / f"corpus-{n}" / "rnet-out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*facedata_command(), "build", "rnet", "--detections", str(det), "--landmarks", str(lmk),
               "--pnet", str(pnet), "-o", str(out), "--workers", str(args.workers), "--quiet",
               "--thresholds", f"{args.threshold},0.7,0.7", "--ratio", "all"]
        wall, peak, _ = run_measured(cmd)
        summary = json.loads((out / "index.json").read_text())["summary"]
        shutil.rmtree(out, ignore_errors=True)
        mining = summary["mining"]
        rows.append((n, f"facedata, {args.workers} workers", wall, peak, mining["detections_per_image_mean"],
                     mining["after_cap"]))
        if n <= args.baseline_images:
            cmd = [sys.executable, __file__, "--baseline", str(det), "--pnet", str(pnet),
                   "--threshold", str(args.threshold)]
            wall, peak, text = run_measured(cmd)
            counts = json.loads(text.strip().splitlines()[-1])
            rows.append((n, "reference loop, 1 process", wall, peak, counts["detections"] / n,
                         {k: counts[k] for k in ("positive", "part", "negative")}))
    print(f"build rnet: ~1024x700 images, min-face 20, factor 0.79, PNet threshold {args.threshold}, "
          f"random-weight MTCNN PNet (face bias {args.prob_bias:g}); {os.cpu_count()} cores\n")
    print("| detection images | variant | wall | images/s | PNet boxes/img | pos / part / neg (after cap) "
          "| peak tree PSS anon | incl. file pages | largest process RSS |")
    print("|---:|---|---:|---:|---:|---|---:|---:|---:|")
    for n, variant, wall, peak, boxes, c in rows:
        print(f"| {n} | {variant} | {wall:.1f} s | {n / wall:.1f} | {boxes:.0f} | "
              f"{c['positive']:,} / {c['part']:,} / {c['negative']:,} | {mb(peak.anon)} | {mb(peak.total)} | "
              f"{mb(peak.max_rss)} |")
    ours = {r[0]: r for r in rows if r[1].startswith("facedata")}
    for n, variant, wall, *_ in rows:
        if variant.startswith("reference"):
            print(f"\n{n} images: {wall / ours[n][2]:.1f}x faster than the reference loop")
    ours = list(ours.values())
    if len(ours) >= 2:
        print(f"peak tree PSS (anon) ratio largest/smallest corpus: {ours[-1][3].anon / ours[0][3].anon:.2f}")
    print("(images/s counts the detection images; wall includes process start-up, the landmark images "
          "and the render pass)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
