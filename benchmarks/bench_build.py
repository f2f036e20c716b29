"""PNet build benchmark: wall time and peak RSS of `facedata build pnet` on a WIDER-shaped synthetic
corpus at two sizes, against the floor measured in the same run: decoding every source image once.

Corpus: ~1024 x 700 JPEG (q 90) images with a WIDER-like number of faces (geometric, mean ~12, some
zero-face images) and sizes (log-uniform 10 to 400 px), plus a CUHK-like landmark set (250 x 250, one
face, 5 points) of a third as many images. The build runs as a subprocess (the real CLI); its peak memory
is summed over its process tree (parent, workers, forkserver) as PSS, see benchmarks/measure.py. The
decode floor is measured right before and right after the build and the ratio uses their mean: this
machine's speed drifts by tens of percent over minutes, and bracketing the build cancels most of it
(both floors are printed).

Goal (issue 3): build <= 1.5 x the decode floor per core, i.e. (build wall x workers) / (one-core
decode time) <= 1.5; peak memory flat between the sizes and <= 512 MB, measured as the tree's PSS of
anonymous pages (what the build allocates; RSS incl. file pages is printed beside it, see measure.py).

    python benchmarks/bench_build.py [--small] [--sizes 300,3000] [--workers N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from measure import mb, run_measured

from facedata.manifest import ManifestBuilder, make_provenance
from facedata.samples import image_rng

WIDTH, HEIGHT = 1024, 700


def draw_face(img: np.ndarray, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a simple face in box (x, y, w, h); return its 5 points (eyes, nose, mouth corners)."""
    skin = tuple(int(v) for v in rng.integers(90, 230, 3))
    cv2.ellipse(img, (x + w // 2, y + h // 2), (max(1, w // 2), max(1, h // 2)), 0, 0, 360, skin, -1)
    pts = np.array([[x + 0.3 * w, y + 0.38 * h], [x + 0.7 * w, y + 0.38 * h], [x + 0.5 * w, y + 0.58 * h],
                    [x + 0.35 * w, y + 0.78 * h], [x + 0.65 * w, y + 0.78 * h]], np.float32)
    r = max(1, w // 12)
    for px, py in pts[:2]:
        cv2.circle(img, (int(px), int(py)), r, (30, 30, 30), -1)
    left, right = (int(pts[3, 0]), int(pts[3, 1])), (int(pts[4, 0]), int(pts[4, 1]))
    cv2.line(img, left, right, (40, 40, 160), max(1, r // 2))
    return pts


def background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    small = rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def make_corpus(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Write n WIDER-shaped images + n // 3 landmark images and their manifests (reused if present)."""
    det_path, lmk_path = root / "det.parquet", root / "lmk.parquet"
    if det_path.exists() and lmk_path.exists():
        return det_path, lmk_path
    images = root / "images"
    det = ManifestBuilder("bench_wider", "train", "bench")
    for i in range(n):
        rel = f"wider/{i // 500:02d}/img_{i:05d}.jpg"
        rng = image_rng(seed, rel)
        img = background(rng, WIDTH, HEIGHT)
        count = 0 if rng.random() < 0.03 else int(min(60, rng.geometric(1 / 12)))
        boxes = []
        for _ in range(count):
            w = int(np.exp(rng.uniform(np.log(10), np.log(400))))
            h = int(w * rng.uniform(1.0, 1.3))
            if w >= WIDTH or h >= HEIGHT:
                continue
            x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
            draw_face(img, x, y, w, h, rng)
            boxes.append((x, y, x + w, y + h))
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        det.add_image(rel, rel, width=WIDTH, height=HEIGHT)
        if boxes:
            det.add_faces(rel, np.array(boxes, np.float32))
    lmk = ManifestBuilder("bench_cuhk", "train", "bench")
    for i in range(max(1, n // 3)):
        rel = f"cuhk/{i // 500:02d}/face_{i:05d}.jpg"
        rng = image_rng(seed, rel)
        img = background(rng, 250, 250)
        w = int(rng.integers(90, 140))
        x = y = int((250 - w) // 2 + rng.integers(-15, 16))
        pts = draw_face(img, x, y, w, w, rng)
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lmk.add_image(rel, rel, width=250, height=250)
        lmk.add_faces(rel, np.array([[x, y, x + w, y + w]], np.float32), scheme="mtcnn5", points=pts[None])
    roots = {"bench": str(images.resolve())}
    det.build(make_provenance("bench", [], roots)).write(det_path)
    lmk.build(make_provenance("bench", [], roots)).write(lmk_path)
    return det_path, lmk_path


def decode_floor(root: Path) -> tuple[float, int]:
    """Seconds to cv2.imread every source image once in one process, and the image count."""
    files = sorted((root / "images").rglob("*.jpg"))
    start = time.perf_counter()
    for f in files:
        cv2.imread(str(f), cv2.IMREAD_COLOR)
    return time.perf_counter() - start, len(files)


def facedata_command() -> list[str]:
    script = Path(sys.executable).with_name("facedata")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from facedata.cli import main; main()"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="100 and 300 images (a quick run)")
    parser.add_argument("--sizes", default=None, help="comma-separated corpus sizes (default 300,3000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--format", default="lmdb", choices=["lmdb", "parquet"])
    parser.add_argument("--workdir", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "facedata-bench-build")
    args, _ = parser.parse_known_args()
    sizes = [int(s) for s in (args.sizes or ("100,300" if args.small else "300,3000")).split(",")]
    rows = []
    for n in sizes:
        root = args.workdir / f"corpus-{n}"
        det, lmk = make_corpus(root, n)
        floor, files = decode_floor(root)
        out = root / "out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [*facedata_command(), "build", "pnet", "--detections", str(det), "--landmarks", str(lmk),
               "-o", str(out), "--workers", str(args.workers), "--format", args.format, "--quiet"]
        wall, peak, _ = run_measured(cmd)
        floor = (floor, decode_floor(root)[0])
        from facedata.storage.index import load_index

        rows.append((n, files, floor, wall, peak, load_index(out)["samples"]))
        shutil.rmtree(out, ignore_errors=True)
    cores = args.workers
    print(f"PNet build, {args.format}, {cores} worker(s) on {os.cpu_count()} core(s); "
          f"corpus ~{WIDTH}x{HEIGHT} JPEG\n")
    print("| images (det + lmk) | samples | decode floor, 1 core (before / after) | build wall | "
          "build x workers / mean floor | "
          "samples/s | CPU (tree) | peak memory, tree PSS anon (goal) | tree PSS incl. file pages | "
          "tree RSS incl. file pages | largest process RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, files, floor, wall, peak, samples in rows:
        mean = sum(floor) / 2
        print(f"| {n} + {files - n} | {samples:,} | {floor[0]:.2f} / {floor[1]:.2f} s | {wall:.2f} s | "
              f"{wall * cores / mean:.2f} | "
              f"{samples / wall:,.0f} | {peak.cpu:.1f} s | {mb(peak.anon)} | {mb(peak.total)} | {mb(peak.rss)} | "
              f"{mb(peak.max_rss)} |")
    if len(rows) >= 2:
        print(f"\npeak tree PSS (anon) ratio largest/smallest corpus: {rows[-1][4].anon / rows[0][4].anon:.2f}")
    print("(corpus generation is not timed; build wall includes process start-up and both passes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
