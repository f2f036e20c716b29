"""Parse benchmark: real WIDER train .mat (159,424 boxes), WIDER val txt and CUHK train -> manifest.

Prints seconds (best of --repeat) and peak RSS for facedata's parsers and, measured in the same run,
for a naive baseline in the style of the reference scripts (a per-line / per-face Python loop into a
list of dicts, then a DataFrame), with the speed ratio. Each measurement runs in a fresh subprocess
so peak RSS belongs to that job alone. Goal: WIDER train .mat -> manifest < 1 s.

    .venv/bin/python benchmarks/bench_parse.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

JOBS = {
    "wider_train_mat": "wider_face/wider_face_train.mat",
    "wider_val_txt": "wider_face/wider_face_val_bbx_gt.txt",
    "cuhk_train": "lfw_net_7876/trainImageList.txt",
}
ATTRS = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def baseline_wider_txt(path: Path) -> int:
    import pandas as pd

    rows = []
    with open(path) as fh:
        lines = [line.strip() for line in fh]
    i = 0
    while i < len(lines):
        name = lines[i]
        count = int(lines[i + 1])
        for j in range(max(count, 1)):
            v = [int(t) for t in lines[i + 2 + j].split()]
            if count == 0 or v[:4] == [0, 0, 0, 0]:
                continue
            row = {"image": name, "x1": v[0], "y1": v[1], "x2": v[0] + v[2], "y2": v[1] + v[3]}
            row.update(zip(ATTRS, v[4:], strict=True))
            rows.append(row)
        i += 2 + max(count, 1)
    return len(pd.DataFrame(rows))


def baseline_wider_mat(path: Path) -> int:
    import pandas as pd
    import scipy.io

    mat = scipy.io.loadmat(str(path))
    rows = []
    for e in range(len(mat["event_list"])):
        event = mat["event_list"][e][0][0]
        for f, name in enumerate(mat["file_list"][e][0]):
            boxes = mat["face_bbx_list"][e][0][f][0]
            for k, (x, y, w, h) in enumerate(boxes):
                if x == y == w == h == 0:
                    continue
                row = {"image": f"{event}/{name[0][0]}.jpg", "x1": x, "y1": y, "x2": x + w, "y2": y + h}
                for a in ATTRS:
                    row[a] = mat[f"{a}_label_list"][e][0][f][0][k][0]
                rows.append(row)
    return len(pd.DataFrame(rows))


def baseline_cuhk(path: Path) -> int:
    import pandas as pd

    rows = []
    with open(path) as fh:
        for line in fh:
            parts = line.strip().split()
            v = [float(t) for t in parts[1:]]
            rows.append(
                {
                    "image": parts[0].replace("\\", "/"),
                    "x1": v[0],
                    "y1": v[2],
                    "x2": v[1],
                    "y2": v[3],
                    "points": v[4:],
                }
            )
    return len(pd.DataFrame(rows))


BASELINES = {
    "wider_train_mat": baseline_wider_mat,
    "wider_val_txt": baseline_wider_txt,
    "cuhk_train": baseline_cuhk,
}


def run_one(job: str, impl: str, repeat: int) -> dict[str, float]:
    """Runs inside the subprocess: imports outside the timing, best of `repeat`."""
    from facedata.parsers import ingest
    from facedata.realdata import realdata_dir

    root = realdata_dir()
    if root is None:
        raise SystemExit("real-data folder not found (FACEDATA_REALDATA / ../shared/realdata)")
    path = root / JOBS[job]
    best, count = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        if impl == "facedata":
            manifest, _ = ingest(path)
            count = len(manifest.faces)
        else:
            count = BASELINES[job](path)
        best = min(best, time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": best, "peak_rss_mib": peak_mib, "faces": count}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("JOB", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.repeat)))
        return
    print(f"{'job':<16} {'impl':<9} {'faces':>7} {'seconds':>8} {'peak RSS MiB':>13} {'speed-up':>9}")
    for job in JOBS:
        results = {}
        for impl in ("facedata", "baseline"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", job, impl, "--repeat", str(args.repeat)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = results["baseline"]["seconds"] / results["facedata"]["seconds"]
        for impl, r in results.items():
            speed = f"{ratio:8.1f}x" if impl == "facedata" else ""
            mib = r["peak_rss_mib"]
            print(f"{job:<16} {impl:<9} {r['faces']:>7} {r['seconds']:>8.3f} {mib:>13.0f} {speed:>9}")
    print("goal: wider_train_mat facedata < 1 s (annotations -> manifest, no image checks)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
