"""Fuse benchmark: parse and fuse N synthetic 98-point faces (WFLW 197-field list lines) against reading the
same text with pandas alone (`pd.read_csv(sep=' ', header=None)`).

The faces are the first real WFLW expression face under random similarity transforms and 1 px noise, so the
pose estimation works on plausible faces. Each job runs in a fresh subprocess; peak memory is that process's
max RSS. facedata's job: WFLW parser -> manifest, `fuse --to wflw98` (maps, EAR, mouth, solvePnP pose for
every face, a weight rule), atomic Parquet write; its stages are timed separately.

    .venv/bin/python benchmarks/bench_fuse.py [--faces 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_list(path: Path, faces: int, seed: int = 0) -> None:
    from facedata.realdata import realdata_dir

    root = realdata_dir()
    if root is None:
        sys.exit("needs the real-data folder (FACEDATA_REALDATA) for the WFLW template face")
    first = (root / "wflw/WFLW_annotations/list_98pt_test/list_98pt_test_expression.txt").read_text().split("\n")[0]
    template = np.array(first.split()[:196], np.float64).reshape(98, 2)
    template -= template.mean(axis=0)
    rng = np.random.default_rng(seed)
    angle = rng.uniform(-0.3, 0.3, faces)
    scale = rng.uniform(0.5, 2.0, faces)
    rot = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], axis=1).reshape(-1, 2, 2)
    pts = np.einsum("nij,kj->nki", rot * scale[:, None, None], template)
    pts += rng.uniform(100, 900, (faces, 1, 2)) + rng.normal(0, 1, pts.shape)
    with open(path, "w") as fh:
        for i, face in enumerate(pts.reshape(faces, -1)):
            fh.write(" ".join(f"{v:.6f}" for v in face) + f" 0--Parade/img_{i // 3}.jpg\n")


def job_facedata(path: str, out: str) -> dict:
    from facedata.fusion.fuse import WeightRule, fuse
    from facedata.parsers import ingest

    start = time.perf_counter()
    manifest, _ = ingest(Path(path), format="wflw")
    parsed = time.perf_counter()
    fused, _ = fuse([(path, manifest)], "wflw98", [WeightRule.parse("ear_min < 0.1=3")])
    done = time.perf_counter()
    fused.write(out)
    written = time.perf_counter()
    return {"faces": len(fused.faces), "parse_s": parsed - start, "fuse_s": done - parsed,
            "write_s": written - done, "seconds": written - start,
            "estimated_pose": int((fused.faces["pose_source"] == "estimated").sum())}


def job_pandas(path: str, out: str) -> dict:
    import pandas as pd

    start = time.perf_counter()
    frame = pd.read_csv(path, sep=" ", header=None)
    return {"faces": len(frame), "seconds": time.perf_counter() - start}


def run_job(name: str, path: Path, out: Path) -> dict:
    code = (f"import json, resource, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_fuse; "
            f"r = bench_fuse.job_{name}({str(path)!r}, {str(out)!r}); "
            "r['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list_98pt_synthetic.txt"
        make_list(path, args.faces)
        print(f"{args.faces} synthetic 98-point faces, {path.stat().st_size / 1e6:.1f} MB of text "
              f"(peak memory = max RSS of a fresh process; {resource.getpagesize()} B pages)")
        for name in ("pandas", "facedata"):
            r = run_job(name, path, Path(tmp) / "fused.parquet")
            stages = "".join(f", {k} {r[k]:.2f}" for k in ("parse_s", "fuse_s", "write_s") if k in r)
            print(f"{name:>8}: {r['seconds']:.2f} s{stages}, peak {r['peak_mb']:.0f} MB, {r['faces']} faces"
                  + (f", {r['estimated_pose']} poses estimated" if "estimated_pose" in r else ""))


if __name__ == "__main__":
    main()
