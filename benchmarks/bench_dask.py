"""Dask engine benchmark: a PNet build on 1 and 2 local Dask workers against the local process pool with 1 and
2 workers, on the same corpus (bench_build's WIDER-shaped synthetic JPEGs), plus the per-task overhead.

Every build runs in this process through build_dataset (the CLI's code path minus argument parsing) into a
fresh directory, `--repeat` times (the best is kept: the machine is shared and noisy); every one must write
the same shards (checked). The Dask workers are a LocalCluster of 1-thread worker processes started before
the clock (its start-up time is printed apart), as an existing cluster would be. Per-task overhead: the time
per no-op task (`abs`) through each engine's runner with the build's window of 4 x workers tasks in flight,
once its workers run (the local pool's start-up is in its build time, not in this figure). Peak RSS of the
Dask workers: the largest ru_maxrss over the workers after the builds (the worker process's own peak since
it started, Dask and the imports included). What the build process does and receives: its CPU seconds during
the build (user + system; with the local pool the samples come back to it and it writes every shard), and on
Dask the bytes of the task results it fetched (dask's sizeof; the workers write the shards themselves).

    python benchmarks/bench_dask.py [--images 240] [--repeat 2] [--tasks 400] [--shard-mb 256] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from bench_build import make_corpus
from distributed import Client, LocalCluster
from distributed.sizeof import sizeof

from facedata.build import build_dataset
from facedata.daskrunner import DaskRunner
from facedata.engines import Engine
from facedata.storage.index import load_index
from facedata.workerpool import Runner

RECEIVED = [0]  # bytes of Dask task results fetched by the build process


def _counting_result(fetch):
    def result(self):
        value = fetch(self)
        RECEIVED[0] += sizeof(value)
        return value

    return result


DaskRunner._result = _counting_result(DaskRunner._result)


def timed_build(det: Path, lmk: Path, out: Path, repeat: int, **options) -> tuple[float, float, int, list[str]]:
    """(best wall seconds, its build-process CPU seconds and result bytes, shard sha256s) of `repeat` fresh builds."""
    best = (float("inf"), 0.0, 0)
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        RECEIVED[0] = 0
        cpu, start = _cpu(), time.perf_counter()
        build_dataset(det, lmk, out, progress=False, **options)
        wall = time.perf_counter() - start
        best = min(best, (wall, _cpu() - cpu, RECEIVED[0]))
    return (*best, [shard["sha256"] for shard in load_index(out)["shards"]])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def task_overhead(runner, tasks: int) -> float:
    """Seconds per no-op task through `runner`, its workers already started (its close is the caller's)."""
    for _ in runner.ordered(abs, ((i,) for i in range(8 * runner.slots))):
        pass
    start = time.perf_counter()
    for _ in runner.ordered(abs, ((i,) for i in range(tasks))):
        pass
    return (time.perf_counter() - start) / tasks


def peak_rss(dask_worker=None) -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=240, help="detection images (plus a third as many landmark)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=400, help="no-op tasks for the overhead")
    parser.add_argument("--shard-mb", type=int, default=256, help="shard size (the build's default: 256 MB)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "facedata-bench-dask")
    args = parser.parse_args()
    root = args.workdir / f"corpus-{args.images}"
    det, lmk = make_corpus(root, args.images)
    rows: list[tuple[str, int, float, float, float, int]] = []  # engine, workers, build s, s per no-op task,
    # build-process CPU s, result bytes
    shards = set()
    for workers in (1, 2):
        wall, cpu, received, hashes = timed_build(det, lmk, root / "out", args.repeat, workers=workers,
                                                  shard_bytes=args.shard_mb << 20)
        shards.add(tuple(hashes))
        runner = Runner(None, workers)
        try:
            overhead = task_overhead(runner, args.tasks)
        finally:
            runner.close(True)
        rows.append(("local pool", workers, wall, overhead, cpu, received))
    rss = {}
    for workers in (1, 2):
        start = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            started = time.perf_counter() - start
            engine = Engine("dask", scheduler=cluster.scheduler_address)
            wall, cpu, received, hashes = timed_build(det, lmk, root / "out", args.repeat, engine=engine,
                                                      shard_bytes=args.shard_mb << 20)
            shards.add(tuple(hashes))
            with Client(cluster) as client:
                runner = DaskRunner(client, SimpleNamespace(plan_path="no-op tasks"))  # no build job
                overhead = task_overhead(runner, args.tasks)
                client.unregister_worker_plugin(runner.name)
                rss[workers] = max(client.run(peak_rss).values())
        rows.append((f"dask ({started:.1f} s to start the cluster)", workers, wall, overhead, cpu, received))
    if len(shards) != 1:
        print("ERROR: the engines wrote different shards", file=sys.stderr)
        return 1
    base = rows[0][2]
    print(f"PNet build of {args.images} + {max(1, args.images // 3)} images (bench_build corpus), best of "
          f"{args.repeat}; {os.cpu_count()} cores, shared and noisy (other jobs running): ratios are indicative\n")
    print("| engine | workers | build wall | speed-up vs local pool, 1 worker | speed-up vs same engine, 1 worker "
          "| per no-op task | build-process CPU | task results received |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (engine, workers, wall, overhead, cpu, received) in enumerate(rows):
        same = rows[i - i % 2][2]
        fetched = f"{received / 2**20:,.2f} MB" if engine.startswith("dask") else "(in-process / pipes)"
        print(f"| {engine} | {workers} | {wall:.2f} s | {base / wall:.2f} | {same / wall:.2f} | "
              f"{overhead * 1e6:,.0f} µs | {cpu:.2f} s | {fetched} |")
    print("\npeak RSS of a Dask worker process (ru_maxrss, Dask + facedata imports included): "
          + ", ".join(f"{w} worker(s): {r / 2**20:.0f} MB" for w, r in rss.items()))
    index = load_index(root / "out")
    print(f"identical shards on every engine and worker count: yes ({index['samples']:,} samples, "
          f"{index['bytes'] / 2**20:,.1f} MB in {len(index['shards'])} shard(s): what the local pool's workers send "
          "to the build process, and Dask's to the shard writers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
