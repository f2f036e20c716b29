"""Mining benchmark (issue 8): `facedata build rnet` per core against the reference's mining loop, with the
real pretrained MTCNN on real photos, at the detection and the mining PNet thresholds.

Detector: facenet-pytorch's PNet (the original MTCNN weights, MIT; the `bench` extra, installed with
`pip install --no-deps facenet-pytorch`), exported to ONNX by tests/onnx_models.facenet_mtcnn and run with
its contract (RGB, (x - 127.5) / 128; tests/test_detect_pretrained.py checks that it finds dlib's annotated
faces). Photos (realdata): the 79 COCO val2017 photos of coco_mini (~640 x 480; face boxes approximated from
the persons' head keypoints, nose/eyes/ears, so only the labels depend on that guess) and dlib's 9 PASCAL
photos with their 43 face boxes; `--repeat K` lists them K times (to see memory stay flat). pyramid-min-face 20,
factor 0.79, `--ratio all` (every mined sample rendered and written), no landmark set (the baseline has none).

Baseline, in the same run and on the same photos: the reference's single-process per-scale loop ([A]
gen_hard_example + save_hard_example: one default onnxruntime session call per pyramid level, per-box
Python NMS with +1 areas, all detections kept in a list, then a per-box square/IoU/crop/resize/JPEG-encode
loop with the 60-negative cap). Per core: facedata runs with `--workers` processes (default 1, the same as
the baseline) and its images/s is also divided by that count; CPU seconds are user + system time of the
whole process tree, pool workers and forkserver included (this process is their subreaper and reaps
them). Memory: the tree's peak PSS (all pages, and the anonymous part) and the largest single-process RSS
(benchmarks/measure.py).

    .venv/bin/python benchmarks/bench_mining.py [--thresholds 0.6,0.3] [--repeat 1] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from bench_build import facedata_command
from measure import Peak, mb, run_measured

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from onnx_models import FACENET_CONTRACT, facenet_mtcnn, facenet_weights_dir  # noqa: E402

from facedata.manifest import Manifest, ManifestBuilder, make_provenance  # noqa: E402
from facedata.realdata import realdata_dir  # noqa: E402


# -- the corpus: real photos with face boxes -------------------------------------------------------------
def _coco_face(keypoints: list[float]) -> list[float] | None:
    """An approximate face box from a COCO person's head keypoints (nose, eyes, ears; None if < 2 seen):
    side from the ear span (~ face width) or the eye span (~ 0.4 face width), centred below the eyes."""
    kp = np.array(keypoints[:15], np.float64).reshape(5, 3)
    seen = kp[:, 2] > 0
    if seen.sum() < 2:
        return None
    pts = kp[seen, :2]
    eyes = kp[1:3, :2][kp[1:3, 2] > 0]
    ears = kp[3:5, :2][kp[3:5, 2] > 0]
    spans = [1.5 * np.ptp(pts, axis=0).max(), 8.0]
    if len(ears) == 2:
        spans.append(1.1 * abs(ears[1, 0] - ears[0, 0]))
    if len(eyes) == 2:
        spans.append(2.5 * abs(eyes[1, 0] - eyes[0, 0]))
    side = max(spans)
    cx = pts[:, 0].mean()
    cy = (eyes[:, 1].mean() if len(eyes) else pts[:, 1].mean()) + 0.15 * side
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def real_corpus(out: Path, repeat: int) -> tuple[Path, int]:
    """A detection manifest of the COCO and dlib photos (each listed `repeat` times), and its image count."""
    data = realdata_dir()
    if data is None:
        raise SystemExit("bench_mining needs the real-data folder (FACEDATA_REALDATA or ../shared/realdata)")
    coco = data / "coco_val2017" / "coco_mini"
    doc = json.loads((coco / "annotations" / "person_keypoints_val2017.json").read_text())
    photos: list[tuple[str, int, int, list[list[float]]]] = []  # path under realdata, width, height, boxes
    faces: dict[int, list[list[float]]] = {}
    for ann in doc["annotations"]:
        box = _coco_face(ann["keypoints"])
        if box is not None:
            faces.setdefault(ann["image_id"], []).append(box)
    for img in doc["images"]:
        rel = f"coco_val2017/coco_mini/val2017/{img['file_name']}"
        photos.append((rel, img["width"], img["height"], faces.get(img["id"], [])))
    for xml in ("training.xml", "testing.xml"):
        for img in ET.parse(data / "dlib_faces" / xml).getroot().iter("image"):
            boxes = [[float(b.get("left")), float(b.get("top")), float(b.get("left")) + float(b.get("width")),
                      float(b.get("top")) + float(b.get("height"))] for b in img.iter("box")]
            photos.append((f"dlib_faces/{img.get('file')}", int(img.get("width")), int(img.get("height")), boxes))
    builder = ManifestBuilder("bench_real", "val", "realdata")
    for k in range(repeat):
        for rel, width, height, boxes in photos:
            builder.add_image(f"{k}/{rel}", rel, width=width, height=height)
            if boxes:
                builder.add_faces(f"{k}/{rel}", np.array(boxes, np.float32))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"real-x{repeat}.parquet"
    builder.build(make_provenance("bench", [], {"realdata": str(data)})).write(path)
    return path, len(photos) * repeat


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

    def __init__(self, pnet: Path, threshold: float, rgb: bool, min_face: float = 20, factor: float = 0.79):
        import onnxruntime as ort

        opts = ort.SessionOptions()  # defaults: memory arena and per-shape memory patterns on
        opts.intra_op_num_threads = 1
        self.pnet = ort.InferenceSession(str(pnet), opts, providers=["CPUExecutionProvider"])
        self.thresh, self.min_face, self.factor, self.rgb = threshold, min_face, factor, rgb

    @staticmethod
    def _processed(img, scale):
        h, w = img.shape[:2]
        resized = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
        return (resized - 127.5) / 128

    def detect_pnet(self, im):
        if self.rgb:  # the model's channel order ([A]'s own models take cv2's BGR)
            im = im[..., ::-1]
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


def reference_mining(manifest_path: Path, pnet: Path, threshold: float, rgb: bool) -> dict[str, float]:
    """The baseline: gen_hard_example (detections of every image kept), then save_hard_example."""
    manifest = Manifest.read(manifest_path)
    paths = manifest.image_paths()
    faces = manifest.faces
    gts = {iid: g[["x1", "y1", "x2", "y2"]].to_numpy(np.float64) for iid, g in faces.groupby("image_id")}
    ids = manifest.images["image_id"].tolist()
    detector = ReferenceDetector(pnet, threshold, rgb)
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


@dataclass
class Row:
    images: int
    threshold: float
    variant: str
    processes: int
    wall: float
    cpu: float
    peak: Peak
    boxes_per_image: float
    counts: dict[str, int]

    @property
    def ours(self) -> bool:
        return self.variant.startswith("facedata")

    def line(self) -> str:
        n, c, peak = self.images, self.counts, self.peak
        return (f"| {n} | {self.threshold:g} | {self.variant} | {self.wall:.1f} s | {n / self.wall:.1f} | "
                f"{n / self.wall / self.processes:.1f} | {self.cpu:.1f} | {n / self.cpu:.1f} | "
                f"{self.boxes_per_image:.0f} | {c['positive']:,} / {c['part']:,} / {c['negative']:,} | "
                f"{mb(peak.total)} | {mb(peak.anon)} | {mb(peak.max_rss)} |")


def _adopt_orphans() -> None:
    """Make this process the subreaper of its descendants: a pool worker or forkserver left behind by its
    parent is re-parented here, so the waits below reap it and its CPU time reaches RUSAGE_CHILDREN."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed: CPU seconds of the pool would be lost")


def measured(cmd: list[str]) -> tuple[float, float, Peak, str]:
    """(wall s, CPU s of the whole process tree, peak memory, output) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, peak, out = run_measured(cmd)
    while True:  # reap every descendant re-parented here (see _adopt_orphans)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, peak, out


def run_facedata(det: Path, n: int, pnet: Path, threshold: float, workers: int, workdir: Path) -> Row:
    out = workdir / "rnet-out"
    shutil.rmtree(out, ignore_errors=True)
    contract = [f"--{k}={v}" for k, v in FACENET_CONTRACT.items() if k in ("channels", "mean", "scale")]
    cmd = [*facedata_command(), "build", "rnet", "--detections", str(det), "--pnet", str(pnet), "-o", str(out),
           "--workers", str(workers), "--quiet", *contract, "--thresholds", f"{threshold},0.1,0.7", "--ratio", "all"]
    wall, cpu, peak, _ = measured(cmd)
    mining = json.loads((out / "index.json").read_text())["summary"]["mining"]
    shutil.rmtree(out, ignore_errors=True)
    return Row(n, threshold, f"facedata, {workers} worker(s)", workers, wall, cpu, peak,
               mining["detections_per_image_mean"], mining["after_cap"])


def run_reference(det: Path, n: int, pnet: Path, threshold: float) -> Row:
    cmd = [sys.executable, __file__, "--baseline", str(det), "--pnet", str(pnet), "--threshold", str(threshold)]
    wall, cpu, peak, text = measured(cmd)
    counts = json.loads(text.strip().splitlines()[-1])
    return Row(n, threshold, "reference loop, 1 process", 1, wall, cpu, peak, counts["detections"] / n,
               {k: counts[k] for k in ("positive", "part", "negative")})


def report(rows: list[Row]) -> None:
    print(f"build rnet on real photos (79 COCO val2017 + 9 dlib), real pretrained MTCNN PNet (facenet-pytorch), "
          f"pyramid-min-face 20, factor 0.79, --ratio all; {os.cpu_count()} cores\n")
    print("| images | PNet thr. | variant | wall | images/s | images/s per process | CPU s | images per CPU s "
          "| PNet boxes/img | pos / part / neg (after cap) | peak tree PSS | PSS anon | largest RSS |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for row in rows:
        print(row.line())
    print()
    ours = [r for r in rows if r.ours]
    for ref in (r for r in rows if not r.ours):
        mine = next(r for r in ours if (r.images, r.threshold) == (ref.images, ref.threshold))
        per_process = (mine.images / mine.wall / mine.processes) / (ref.images / ref.wall)
        print(f"{ref.images} images, threshold {ref.threshold:g}: facedata uses {ref.cpu / mine.cpu:.1f}x less CPU "
              f"and runs {per_process:.1f}x the images/s per process of the reference loop")
    thresholds = sorted({r.threshold for r in ours}, reverse=True)
    for thr in thresholds:
        same = [r for r in ours if r.threshold == thr]
        if len(same) >= 2:
            print(f"threshold {thr:g}: peak tree PSS, largest / smallest corpus: "
                  f"{same[-1].peak.total / same[0].peak.total:.2f}")
    if len(thresholds) >= 2:
        hi, lo = (next(r for r in ours if r.threshold == t) for t in thresholds[:2])
        print(f"threshold {lo.threshold:g} against {hi.threshold:g}: {lo.boxes_per_image / hi.boxes_per_image:.1f}x "
              f"the PNet boxes per image, {lo.cpu / hi.cpu:.1f}x the CPU seconds (facedata)")
    print("(wall includes process start-up and the render pass; timings on a shared machine are indicative)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", default="0.6,0.3", help="PNet thresholds to compare (detection, mining)")
    ap.add_argument("--repeat", default="1", help="comma-separated: times the 88 photos are listed")
    ap.add_argument("--workers", type=int, default=1, help="facedata worker processes (the baseline has 1)")
    ap.add_argument("--no-baseline", action="store_true", help="facedata only")
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("TMPDIR", "/tmp")) / "facedata-bench-mining")
    ap.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)  # worker mode: a detection manifest
    ap.add_argument("--pnet", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=float, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args()
    if args.baseline:
        rgb = FACENET_CONTRACT["channels"] == "rgb"
        print(json.dumps(reference_mining(args.baseline, args.pnet, args.threshold, rgb)))
        return 0
    if facenet_weights_dir() is None:
        raise SystemExit("bench_mining needs the pretrained MTCNN: pip install --no-deps facenet-pytorch "
                         "(the `bench` extra; torch from the `torch` extra exports it)")
    pnet = facenet_mtcnn(args.workdir / "models")["pnet"]
    _adopt_orphans()
    rows = []
    for repeat in [int(v) for v in args.repeat.split(",")]:
        det, n = real_corpus(args.workdir, repeat)
        for threshold in [float(v) for v in args.thresholds.split(",")]:
            rows.append(run_facedata(det, n, pnet, threshold, args.workers, args.workdir))
            if not args.no_baseline:
                rows.append(run_reference(det, n, pnet, threshold))
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
