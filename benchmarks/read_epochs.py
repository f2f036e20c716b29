"""Numpy epochs of a shard directory in a fresh process, and the page-cache helpers of cold-read benchmarks.

A cold read must start in a process that has never mapped the shards (pages mapped by a live process are
not evicted), and its memory figures must be its own, so bench_reader runs this script once per
measurement. It imports only numpy and facedata.storage (no torch), so its memory is the reader's.
Usage: python benchmarks/read_epochs.py DIR [--batch 4096] [--epochs 0]  (prints one JSON line)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.storage import ShardedDataset
from facedata.storage.base import drop_cached_pages

sys.path.insert(0, str(Path(__file__).parent))
from measure import tree_memory  # noqa: E402


def shard_files(path: Path) -> list[Path]:
    return [path / entry["file"] for entry in ShardedDataset(path).index["shards"]]


def cold_sequential(files: list[Path]) -> float:
    """MB/s of reading the evicted files front to back: the bandwidth a cold read can hope for."""
    drop_cached_pages(files)
    started, done = time.perf_counter(), 0
    for file in files:
        with open(file, "rb", buffering=0) as fh:
            while chunk := fh.read(8 << 20):
                done += len(chunk)
    return done / (time.perf_counter() - started) / 1e6


@dataclass
class Epochs:
    """One fresh process's numpy epochs: the first (cold when the files were evicted) and later (warm)."""

    first: float  # samples/s
    later: float  # samples/s, median over the later epochs (0 if none)
    rss: int  # bytes after the epochs, file-backed pages included
    pss: int
    pss_anon: int
    max_rss: int  # peak RSS of the process


def numpy_epochs(path: Path, batch: int, epochs: int) -> Epochs:
    """Run `epochs` + 1 shuffled epochs in a fresh process (nothing of the shards mapped beforehand)."""
    done = subprocess.run([sys.executable, __file__, str(path), "--batch", str(batch), "--epochs", str(epochs)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"numpy epochs of {path} failed ({done.returncode}):\n{done.stderr}")
    return Epochs(**json.loads(done.stdout.splitlines()[-1]))


def run_epochs(path: Path, batch: int, epochs: int) -> None:
    """This process's epochs, every epoch a new order; prints an `Epochs` as JSON."""
    ds = ShardedDataset(path)
    rates = []
    for epoch in range(epochs + 1):
        started, seen = time.perf_counter(), 0
        for _, records in ds.iter_batches(batch, seed=1, epoch=epoch):
            seen += len(records)
        rates.append(seen / (time.perf_counter() - started))
    memory = tree_memory(os.getpid())  # this process alone: its helper threads share its pages
    print(json.dumps(Epochs(rates[0], float(np.median(rates[1:])) if epochs else 0.0, memory.max_rss, memory.total,
                            memory.anon, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10).__dict__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=0, help="epochs after the first")
    args = parser.parse_args()
    run_epochs(args.dir, args.batch, args.epochs)


if __name__ == "__main__":
    main()
