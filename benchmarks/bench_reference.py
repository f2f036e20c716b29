"""PNet build: facedata against the real reference script on the same corpus, in the same run.

The reference is yeyupiaoling/Pytorch-MTCNN `train_PNet/generate_PNet_data.py` (../shared/anchors/
pytorch-mtcnn-reference): a copy of its folder is run in its own process from a temp dir (never imported),
with its expected `dataset/` layout beside it (wider_face_train.txt, WIDER_train/images, trainImageList.txt
and the landmark images). Corpus: `--images` real WIDER-train images' GT boxes (official .mat; x2 = x + w;
all faces, invalid ones included, as the reference's list has them) with synthetic pixels (faces drawn in
their boxes, see bench_build.py), plus the first `--landmark-faces` CUHK trainImageList.txt faces (real
boxes and points) on synthetic 250 / 400 px images.

For each side: wall, CPU seconds and peak memory of the whole process tree (PSS anon, PSS incl. file
pages, RSS incl. file pages; see measure.py), bytes written (write_bytes: the reference's intermediate
JPEGs count although it deletes them), bytes left on disk, class counts before and after mixing. Then the
% difference of facedata `--recipe reference`'s counts before mixing from the reference's (goal: within
3 %; the reference is unseeded, so its counts move by about 1 % from run to run).

    python benchmarks/bench_reference.py [--small] [--images 300] [--landmark-faces 1000] [--workers 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from bench_build import background, draw_face, facedata_command
from measure import Peak, mb, run_measured

from facedata.manifest import ManifestBuilder, make_provenance
from facedata.realdata import realdata_dir
from facedata.samples import image_rng

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "pytorch-mtcnn-reference"
LABELS = ("negative", "positive", "part", "landmark")


def _wider_pick(mat: dict, n: int) -> list[tuple[str, np.ndarray]]:
    """n WIDER train images spread evenly over the 61 events (every k-th image), with at least one face."""
    images = []
    for e, event in enumerate(str(x[0][0]) for x in mat["event_list"]):
        for f, name in enumerate(str(v[0][0]) for v in mat["file_list"][e][0]):
            xywh = mat["face_bbx_list"][e][0][f][0].astype(np.float32).reshape(-1, 4)
            if len(xywh):
                images.append((f"{event}/{name}", xywh))
    step = max(1, len(images) // n)
    return images[::step][:n]


def make_corpus(root: Path, realdata: Path, n_images: int, n_faces: int) -> tuple[Path, Path, Path]:
    """dataset/ in the reference's layout + facedata manifests of the same images; (dataset, det, lmk)."""
    dataset, det_path, lmk_path = root / "dataset", root / "det.parquet", root / "lmk.parquet"
    if det_path.exists() and lmk_path.exists():
        return dataset, det_path, lmk_path
    mat = scipy.io.loadmat(realdata / "wider_face" / "wider_face_train.mat")
    images_dir = dataset / "WIDER_train" / "images"
    det = ManifestBuilder("wider_face", "train", "wider")
    lines = []
    for image_id, xywh in _wider_pick(mat, n_images):
        rng = image_rng(0, image_id)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        width = max(1024, int(np.ceil(xyxy[:, 2].max())) + 1)
        height = max(int(rng.integers(576, 1025)), int(np.ceil(xyxy[:, 3].max())) + 1)
        img = background(rng, width, height)
        for x, y, w, h in xywh.astype(int).tolist():
            if w > 0 and h > 0:
                draw_face(img, x, y, w, h, rng)
        (images_dir / image_id).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images_dir / f"{image_id}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        det.add_image(image_id, f"{image_id}.jpg", width=width, height=height)
        det.add_faces(image_id, xyxy)
        lines.append(image_id + " " + " ".join(f"{v:g}" for v in xyxy.ravel().tolist()))
    (dataset / "wider_face_train.txt").write_text("\n".join(lines) + "\n")

    lmk = ManifestBuilder("cuhk_lfw_net", "train", "cuhk")
    src = (realdata / "lfw_net_7876" / "trainImageList.txt").read_text().splitlines()[:n_faces]
    for line in src:
        fields = line.split()
        rel = fields[0].replace("\\", "/")
        side = 250 if rel.startswith("lfw_5590") else 400
        x1, x2, y1, y2 = (int(v) for v in fields[1:5])
        points = np.asarray(fields[5:15], np.float32).reshape(1, 5, 2)
        rng = image_rng(0, rel)
        img = background(rng, side, side)
        draw_face(img, x1, y1, x2 - x1, y2 - y1, rng)
        (dataset / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dataset / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lmk.add_image(rel, rel, width=side, height=side)
        lmk.add_faces(rel, np.array([[x1, y1, x2, y2]], np.float32), scheme="mtcnn5", points=points)
    (dataset / "trainImageList.txt").write_text("\r\n".join(src) + "\r\n")
    det.build(make_provenance("bench", [], {"wider": str(images_dir.resolve())})).write(det_path)
    lmk.build(make_provenance("bench", [], {"cuhk": str(dataset.resolve())})).write(lmk_path)
    return dataset, det_path, lmk_path


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_reference(dataset: Path, work: Path) -> tuple[float, Peak, dict[str, int], dict[str, int], int]:
    """Copy the reference folder into work/, link the corpus in as its dataset/, run its PNet generator."""
    shutil.rmtree(work, ignore_errors=True)
    code = work / "pytorch-mtcnn-reference"
    shutil.copytree(REFERENCE, code, ignore=shutil.ignore_patterns("infer_models", "__pycache__"))
    (code / "dataset").mkdir()
    for entry in dataset.iterdir():
        (code / "dataset" / entry.name).symlink_to(entry.resolve())
    wall, peak, out = run_measured([sys.executable, "generate_PNet_data.py"], cwd=str(code / "train_PNet"))
    text = (code / "dataset" / "12" / "temp.txt").read_text()
    numbers = [[int(v) for v in re.findall(r"[:：]\s*(\d+)", line)] for line in text.splitlines()[:2]]
    before = dict(zip(LABELS, numbers[0][:4], strict=True))  # neg, pos, part, landmark (+ base)
    after = dict(zip(LABELS, numbers[1][:4], strict=True))
    return wall, peak, before, after, _dir_bytes(code / "dataset" / "12")


def run_facedata(det: Path, lmk: Path, out: Path, workers: int, recipe: str) -> tuple[float, Peak, dict, dict, int]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*facedata_command(), "build", "pnet", "--detections", str(det), "--landmarks", str(lmk), "-o", str(out),
           "--workers", str(workers), "--recipe", recipe, "--quiet"]
    wall, peak, _ = run_measured(cmd)
    index = json.loads((out / "index.json").read_text())
    before = {name: int(index["summary"]["planned"].get(name, 0)) for name in LABELS}
    after = {name: int(index["label_counts"].get(str(code), 0)) for name, code in zip(LABELS, (0, 1, -1, -2),
                                                                                       strict=True)}
    return wall, peak, before, after, _dir_bytes(out)


def parse_with_realdata(parser: argparse.ArgumentParser, workdir: str) -> argparse.Namespace:
    """Add --realdata and --workdir (default $TMPDIR/`workdir`) to a benchmark's parser and parse; unknown
    arguments are ignored (run_all.py passes every benchmark the same ones)."""
    parser.add_argument("--realdata", type=Path, default=realdata_dir(),
                        help="real-data folder (default: FACEDATA_REALDATA or ../shared/realdata)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / workdir)
    args, _ = parser.parse_known_args()
    if args.realdata is None:
        raise SystemExit("the real-data folder was not found: pass --realdata or set FACEDATA_REALDATA")
    return args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="100 images and 300 landmark faces (a quick run)")
    parser.add_argument("--images", type=int, default=None, help="WIDER images (default 300)")
    parser.add_argument("--landmark-faces", type=int, default=None, help="CUHK faces (default 1000)")
    parser.add_argument("--workers", type=int, default=1, help="facedata workers (the reference uses 1 process)")
    args = parse_with_realdata(parser, "facedata-bench-reference")
    args.images = args.images or (100 if args.small else 300)
    args.landmark_faces = args.landmark_faces or (300 if args.small else 1000)
    root = args.workdir / f"corpus-{args.images}-{args.landmark_faces}"
    dataset, det, lmk = make_corpus(root, args.realdata, args.images, args.landmark_faces)
    rows = {
        "reference script": run_reference(dataset, args.workdir / "reference-run"),
        "facedata --recipe reference": run_facedata(det, lmk, args.workdir / "out-reference", args.workers,
                                                    "reference"),
        "facedata (fixed recipe, default)": run_facedata(det, lmk, args.workdir / "out-fixed", args.workers, "fixed"),
    }
    print(f"PNet build on {args.images} WIDER-train images (real boxes, synthetic pixels) + {args.landmark_faces} "
          f"CUHK faces; facedata {args.workers} worker(s), reference 1 process; {os.cpu_count()} core(s)\n")
    print("| run | wall | CPU (tree) | peak PSS anon | peak PSS incl. file pages | peak RSS incl. file pages "
          "(sum) | bytes written | bytes left | before mixing neg / pos / part / lmk | after mixing |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (wall, peak, before, after, left) in rows.items():
        print(f"| {name} | {wall:.1f} s | {peak.cpu:.1f} s | {mb(peak.anon)} | {mb(peak.total)} | {mb(peak.rss)} | "
              f"{mb(peak.written)} | {mb(left)} | {' / '.join(f'{before[k]:,}' for k in LABELS)} | "
              f"{' / '.join(f'{after[k]:,}' for k in LABELS)} |")
    ref, ours = rows["reference script"][2], rows["facedata --recipe reference"][2]
    print("\n% difference of `--recipe reference` counts before mixing from the reference script's: "
          + ", ".join(f"{k} {100 * (ours[k] - ref[k]) / max(ref[k], 1):+.1f} %" for k in LABELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
