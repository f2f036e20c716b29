"""Landmark builds: `facedata build pfld` and `facedata build topdown` against the decode floor of the same
run and against the reference approach (one PNG per sample + a text list, landmark_reference.py) on the same
faces: wall, samples/s, CPU, peak memory of the process tree (measure.py), files and bytes left, bytes
written.

Corpus: the 16 real AFLW2000-3D images (450 x 450 JPEG, one 68-point face each, annotated pose) of
realdata, each replicated `--copies` times under a new image id (symlinks: the same pixels, different ids,
so every draw differs). The decode floor is cv2.imread of every replicated image once in one process,
measured before and after the builds (their mean is the ratio's base; this machine is shared and drifts).
Ratios `x floor` are build wall x workers / floor, `ref wall / wall` the reference's wall over the build's.
Then `build pfld --encode raw|png|jpeg`: build samples/s, bytes per sample, and one epoch's read speed
(ShardedDataset.iter_batches, batches of 256, in this process, page cache warmed by a first epoch) with the JPEG
error against the raw build.

    python benchmarks/bench_landmarks.py [--small] [--copies 40] [--workers N] [--workdir DIR]
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
from bench_build import facedata_command
from bench_reference import parse_with_realdata
from measure import Peak, mb, run_measured

from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest

REFERENCE = Path(__file__).resolve().with_name("landmark_reference.py")


def make_corpus(root: Path, realdata: Path, copies: int) -> tuple[Path, Path, Path, int]:
    """(manifest, reference list, flip permutation file, images) of the AFLW2000-3D sample x copies."""
    manifest_path, list_path, flip_path = root / "aflw.parquet", root / "list.txt", root / "flip.txt"
    if manifest_path.exists():
        return manifest_path, list_path, flip_path, len(Manifest.read(manifest_path).images)
    import pandas as pd

    from facedata.parsers import ingest

    source, _ = ingest(realdata / "aflw2000_3d")
    images_dir = root / "images"
    images, faces = [], []
    for k in range(copies):
        prefix = f"r{k:04d}"
        (images_dir / prefix).mkdir(parents=True, exist_ok=True)
        for rel in source.images["rel_path"]:
            link = images_dir / prefix / Path(rel).name
            if not link.exists():
                link.symlink_to(realdata / "aflw2000_3d" / rel)
        im = source.images.copy()
        im["image_id"] = prefix + "/" + im["image_id"]
        im["rel_path"] = prefix + "/" + im["rel_path"].map(lambda p: Path(p).name)
        im["root"] = "bench"
        fa = source.faces.copy()
        fa["image_id"] = prefix + "/" + fa["image_id"]
        fa["face_id"] = np.arange(len(fa)) + k * len(fa)
        images.append(im)
        faces.append(fa)
    merged = Manifest(pd.concat(images, ignore_index=True), pd.concat(faces, ignore_index=True),
                      {"roots": {"bench": str(images_dir.resolve())}})
    merged.write(manifest_path)
    lines = []
    paths = dict(zip(merged.images["image_id"], merged.images["rel_path"], strict=True))
    for row in merged.faces.itertuples():
        pts = np.asarray(row.points, np.float64).reshape(-1, 2)
        values = [row.x1, row.y1, row.x2, row.y2, *pts.ravel(), row.pitch, row.yaw, row.roll]
        lines.append(" ".join([str(images_dir / paths[row.image_id]), *(f"{v:.3f}" for v in values)]))
    list_path.write_text("\n".join(lines) + "\n")
    flip_path.write_text(" ".join(str(i) for i in SCHEMES.get("ibug68").flip_permutation.tolist()) + "\n")
    return manifest_path, list_path, flip_path, len(merged.images)


def decode_floor(root: Path) -> float:
    """Seconds to cv2.imread every corpus image once in one process."""
    files = sorted((root / "images").rglob("*.jpg"))
    start = time.perf_counter()
    for f in files:
        cv2.imread(str(f), cv2.IMREAD_COLOR)
    return time.perf_counter() - start


def tree(path: Path) -> tuple[int, int]:
    """(files, bytes) under path."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def run_facedata(stage: str, manifest: Path, out: Path, workers: int, extra: list[str]) -> tuple[float, Peak, int]:
    from facedata.storage.index import load_index

    shutil.rmtree(out, ignore_errors=True)
    option = "--landmarks" if stage == "pfld" else "--keypoints"
    cmd = [*facedata_command(), "build", stage, option, str(manifest), "-o", str(out), "--workers", str(workers),
           "--quiet", *extra]
    wall, peak, _ = run_measured(cmd)
    return wall, peak, int(load_index(out)["samples"])


def run_reference(kind: str, listing: Path, flip: Path, out: Path) -> tuple[float, Peak, int]:
    shutil.rmtree(out, ignore_errors=True)
    wall, peak, text = run_measured([sys.executable, str(REFERENCE), kind, str(listing), str(flip), str(out)])
    return wall, peak, int(text.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="8 copies (128 faces; a quick run)")
    parser.add_argument("--copies", type=int, default=None, help="copies of the 16 faces (default 40)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--format", default="lmdb", choices=["lmdb", "parquet"])
    args = parse_with_realdata(parser, "facedata-bench-landmarks")
    copies = args.copies or (8 if args.small else 40)
    root = args.workdir / f"corpus-{copies}"
    manifest, listing, flip, n_images = make_corpus(root, args.realdata, copies)
    floors = [decode_floor(root)]
    fmt = ["--format", args.format]
    runs = {
        ("pfld", "facedata build pfld"): run_facedata("pfld", manifest, root / "out-pfld", args.workers, fmt),
        ("pfld", "reference (PNG per sample + list)"): run_reference("pfld", listing, flip, root / "ref-pfld"),
        ("topdown", "facedata build topdown"): run_facedata("topdown", manifest, root / "out-topdown", args.workers,
                                                            fmt),
        ("topdown", "reference (PNG per sample + list)"): run_reference("topdown", listing, flip,
                                                                        root / "ref-topdown"),
    }
    encoded = {e: run_facedata("pfld", manifest, root / f"out-pfld-{e}", args.workers, [*fmt, "--encode", e])
               for e in ("png", "jpeg")}
    floors.append(decode_floor(root))
    floor = sum(floors) / 2
    print(f"Landmark builds on {n_images} faces (16 AFLW2000-3D images x {copies}), facedata {args.format}, "
          f"{args.workers} worker(s), reference 1 process; {os.cpu_count()} core(s), shared machine: indicative\n")
    print(f"decode floor (cv2.imread of every image, 1 core): {floors[0]:.2f} s before / {floors[1]:.2f} s after, "
          f"{n_images / floor:,.0f} images/s\n")
    print("| stage | run | samples | wall | samples/s | x floor | ref wall / wall | CPU (tree) | peak PSS anon | "
          "peak RSS incl. file pages | files left | bytes left | bytes / sample | bytes written |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (stage, name), (wall, peak, samples) in runs.items():
        files, size = tree(root / (("out-" if name.startswith("facedata") else "ref-") + stage))
        ref_wall = runs[(stage, "reference (PNG per sample + list)")][0]
        workers = args.workers if name.startswith("facedata") else 1
        print(f"| {stage} | {name} | {samples:,} | {wall:.1f} s | {samples / wall:,.0f} | "
              f"{wall * workers / floor:.1f} | {ref_wall / wall:.2f} | {peak.cpu:.1f} s | {mb(peak.anon)} | "
              f"{mb(peak.rss)} | {files:,} | {mb(size)} | {size / max(samples, 1):,.0f} | {mb(peak.written)} |")
    print("\n(walls include process start-up; corpus generation is not timed; the reference computes its Euler "
          "angles by solvePnP, facedata carries the annotated ones)")
    print_encodings(root, {"raw": runs[("pfld", "facedata build pfld")], **encoded})
    return 0


def read_epoch(path: Path) -> tuple[float, np.ndarray]:
    """(samples/s of one epoch of a freshly opened dataset, after a warm-up epoch of another instance (warm page
    cache, empty decoded-unit cache); every image in reader order)."""
    from facedata.storage import ShardedDataset

    for _ in ShardedDataset(path).iter_batches(256, seed=1):
        pass
    data = ShardedDataset(path)
    start = time.perf_counter()
    images = [pixels.copy() for pixels, _ in data.iter_batches(256, seed=1)]
    return len(data) / (time.perf_counter() - start), np.concatenate(images)


def print_encodings(root: Path, runs: dict[str, tuple[float, Peak, int]]) -> None:
    print("\n`build pfld --encode`: size and speed (read: numpy reader, one process, warm page cache, every unit "
          "decoded once)\n")
    print("| encode | build wall | build samples/s | peak PSS anon | bytes / sample | size vs raw | "
          "read samples/s | error vs raw (mean / worst sample mean / max, grey levels) |")
    print("|---|---|---|---|---|---|---|---|")
    raw_images = None
    for encode, (wall, peak, samples) in runs.items():
        path = root / ("out-pfld" if encode == "raw" else f"out-pfld-{encode}")
        size = tree(path)[1]
        speed, images = read_epoch(path)
        if raw_images is None:
            raw_images, raw_size = images, size
        diff = np.abs(images.astype(np.int16) - raw_images)
        error = f"{diff.mean():.2f} / {diff.reshape(len(diff), -1).mean(axis=1).max():.2f} / {diff.max()}"
        print(f"| {encode} | {wall:.1f} s | {samples / wall:,.0f} | {mb(peak.anon)} | {size / samples:,.0f} | "
              f"{size / raw_size:.2f} | {speed:,.0f} | {error} |")


if __name__ == "__main__":
    sys.exit(main())
