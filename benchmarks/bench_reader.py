"""Reader throughput and bytes on disk for 12x12 PNet shards, against a JPEG-per-sample baseline.

Builds synthetic shards with both backends, then measures in one run:
  - numpy batch reads (ShardedDataset.iter_batches, full shuffle, every pixel byte copied out of the
    shards into the batch arrays), each in a fresh process:
      cold: the shard files evicted from the page cache (fsync + posix_fadvise DONTNEED) just before the
            process opens them, one epoch; beside it, the cold sequential read of the same files (evicted
            the same way, read() in 8 MB chunks) measured just before: the disk's bandwidth in this run;
      warm: the median of later epochs of the same process (fresh shuffled order each epoch);
    memory of that process after each: RSS (file-backed shard pages included) beside PSS and anonymous PSS;
  - a PyTorch DataLoader with 2 workers (facedata.readers.torch.make_loader: packed batches, dicts out);
  - the reference layout: one JPEG per sample listed in a text file, read with cv2.imread
    (single process, and through a DataLoader with 2 workers);
  - bytes per sample on disk vs the raw crop + record.
Prints markdown tables for benchmarks/RESULTS.md. Usage:
    python benchmarks/bench_reader.py [--samples 1000000] [--jpegs 20000] [--batch 4096] [--dir DIR]
Quick check: `--quick` (300,000 samples, one cold run, no JPEG or DataLoader runs). Quick reruns: `--dir DIR
--reuse` keeps and reuses the shards of an earlier run with the same sample count, `--jpegs 0` skips the
JPEG baseline, `--loader-epochs 0` the DataLoader, `--backends lmdb` measures one layout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facedata.readers.torch import make_loader
from facedata.samples import SAMPLE_DTYPE
from facedata.storage import DatasetWriter, ShardedDataset
from facedata.storage.base import drop_cached_pages

sys.path.insert(0, str(Path(__file__).parent))
from measure import mb  # noqa: E402
from read_epochs import Epochs, cold_sequential, numpy_epochs, shard_files  # noqa: E402

SHAPE = (12, 12, 3)
RAW = 12 * 12 * 3 + SAMPLE_DTYPE.itemsize


def synthetic(n: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth crops with mild noise (JPEG sizes then resemble real crops) and plausible records."""
    rng = np.random.default_rng(start)
    ramp = np.add.outer(np.arange(12), np.arange(12)).astype(np.int16)[None, :, :, None]
    base = rng.integers(40, 200, (n, 1, 1, 3), dtype=np.int16) + ramp * rng.integers(-4, 5, (n, 1, 1, 3))
    noise = rng.integers(-6, 7, (n, *SHAPE), dtype=np.int16)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    records = np.zeros(n, SAMPLE_DTYPE)
    records["label"] = rng.choice(np.array([0, 0, 0, 1, -1, -2, -2], np.int8), n)
    records["image_index"] = np.arange(start, start + n) // 70
    records["bbox"] = rng.normal(0, 0.1, (n, 4))
    records["landmarks"] = rng.random((n, 10))
    return pixels, records


def build(out: Path, backend: str, n: int) -> float:
    """Seconds to write n samples (generated up front: only the writer is timed)."""
    chunk = 100_000
    pixels, records = synthetic(min(chunk, n), 0)
    started = time.perf_counter()
    with DatasetWriter(out, backend=backend, image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
                       provenance={"benchmark": "bench_reader", "samples": n}, resume=False) as writer:
        for lo in range(0, n, chunk):
            take = min(chunk, n - lo)
            records["image_index"][:take] = np.arange(lo, lo + take) // 70
            writer.add(pixels[:take], records[:take])
        writer.close()
    return time.perf_counter() - started


@dataclass
class ColdWarm:
    """Cold and warm numpy reads of one layout, with the cold sequential baseline of the same run."""

    bytes: int  # of the shard files
    samples: int
    sequential: list[float]  # MB/s, measured just before each cold run
    cold: list[Epochs]
    warm: Epochs

    def mb_s(self, samples_per_s: float) -> float:
        return samples_per_s * self.bytes / self.samples / 1e6

    def ratios(self) -> list[float]:
        """Each cold run's MB/s over the sequential read just before it."""
        return [self.mb_s(run.first) / seq for run, seq in zip(self.cold, self.sequential, strict=True)]


def cold_and_warm(path: Path, batch: int, epochs: int, cold_runs: int) -> ColdWarm:
    files = shard_files(path)
    sequential, cold = [], []
    for _ in range(cold_runs):
        sequential.append(cold_sequential(files))
        drop_cached_pages(files)
        cold.append(numpy_epochs(path, batch, 0))
    warm = numpy_epochs(path, batch, epochs)  # the files are in the page cache now: its first epoch is warm too
    return ColdWarm(sum(f.stat().st_size for f in files), len(ShardedDataset(path)), sequential, cold, warm)


def torch_rate(path: Path, batch: int, epochs: int) -> float:
    """Median over epochs; each epoch starts fresh workers (persistent_workers=False), as in training."""
    loader = make_loader(path, batch, num_workers=2, seed=1, rank=0, world_size=1)
    rates = []
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        started, seen = time.perf_counter(), 0
        for item in loader:
            seen += len(item["label"])
        rates.append(seen / (time.perf_counter() - started))
    return float(np.median(rates))


class JpegList(Dataset):
    """The reference layout: `path label` lines, one JPEG per sample."""

    def __init__(self, list_file: Path) -> None:
        lines = list_file.read_text().splitlines()
        self.paths = np.array([line.rsplit(" ", 1)[0] for line in lines])
        self.labels = np.array([int(line.rsplit(" ", 1)[1]) for line in lines], np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(cv2.imread(str(self.paths[i]))), int(self.labels[i])


def jpeg_baseline(root: Path, n: int, batch: int) -> tuple[float, float, float]:
    """(bytes per JPEG, single-process samples/s, DataLoader 2 workers samples/s)."""
    pixels, records = synthetic(n, 0)
    lines = []
    for i in range(n):
        path = root / f"{i // 1000:03d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), pixels[i])
        lines.append(f"{path} {records['label'][i]}")
    list_file = root / "list.txt"
    list_file.write_text("\n".join(lines) + "\n")
    size = sum(os.path.getsize(line.rsplit(" ", 1)[0]) for line in lines) / n
    started = time.perf_counter()
    dataset = JpegList(list_file)
    for i in range(len(dataset)):
        dataset[i]
    single = n / (time.perf_counter() - started)
    loader = DataLoader(JpegList(list_file), batch_size=min(batch, 256), shuffle=True, num_workers=2)
    started = time.perf_counter()
    seen = sum(len(labels) for _, labels in loader)
    return size, single, seen / (time.perf_counter() - started)


def built(out: Path, backend: str, n: int) -> float | None:
    """Seconds to write the shards, or None when `out` already holds a complete build of n samples."""
    index = out / "index.json"
    if index.exists() and ShardedDataset(out).index["samples"] == n:
        return None
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own scratch build: a writer never reopens one
    return build(out, backend, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="quick check: --quick; quick reruns: --dir DIR --reuse --jpegs 0 "
                                            "--loader-epochs 0 [--backends lmdb]")
    parser.add_argument("--samples", type=int, help="samples per layout (default 1,000,000; --quick 300,000)")
    parser.add_argument("--jpegs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3, help="warm numpy epochs after the first (median)")
    parser.add_argument("--cold-runs", type=int, help="cold numpy epochs, each in a fresh process (default 3; "
                        "--quick 1)")
    parser.add_argument("--loader-epochs", type=int, default=3, help="DataLoader epochs (median); 0 skips it")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir, removed after)")
    parser.add_argument("--reuse", action="store_true", help="reuse shards already built in --dir")
    parser.add_argument("--backends", default="lmdb,parquet", help="comma-separated layouts to measure")
    parser.add_argument("--quick", action="store_true", help="300,000 samples, 1 cold run, no JPEG/DataLoader")
    args = parser.parse_args()
    if args.quick:
        args.jpegs, args.loader_epochs, args.epochs = 0, 0, 2
    args.cold_runs = args.cold_runs or (1 if args.quick else 3)
    args.samples = args.samples or (300_000 if args.quick else 1_000_000)
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_reader_"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    try:
        jpeg = jpeg_baseline(work / "jpeg", args.jpegs, args.batch) if args.jpegs else None
        rows = []
        for backend in args.backends.split(","):
            out = work / backend
            write_s = built(out, backend, args.samples) if args.reuse else build(out, backend, args.samples)
            index = ShardedDataset(out).index
            loader = torch_rate(out, args.batch, args.loader_epochs) if args.loader_epochs else 0.0
            rows.append((backend, write_s and args.samples / write_s, index["bytes"] / args.samples,
                         cold_and_warm(out, args.batch, args.epochs, args.cold_runs), loader))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(args, rows, jpeg)
    print_cold_table(args, rows)


def print_table(args: argparse.Namespace, rows: list[tuple], jpeg: tuple[float, float, float] | None) -> None:
    print(f"\n### Reader benchmark: {args.samples:,} samples of 12x12x3 + {SAMPLE_DTYPE.itemsize}-byte "
          f"record, batch {args.batch}, {os.cpu_count()} CPUs\n")
    print(f"| layout | write samples/s | bytes/sample (raw = {RAW}) | vs raw | numpy shuffled samples/s, warm "
          "(cold first epoch) | vs JPEG | DataLoader 2 workers samples/s | vs JPEG loader |")
    print("|---|---|---|---|---|---|---|---|")
    jpeg_size, jpeg_single, jpeg_loader = jpeg or (0.0, 0.0, 0.0)

    def versus(rate: float, baseline: float) -> str:
        return f"{rate / baseline:.0f}x" if baseline else "-"

    for backend, write_rate, size, reads, pt_rate in rows:
        write = f"{write_rate:,.0f}" if write_rate else "- (reused)"
        cold = float(np.median([run.first for run in reads.cold]))
        print(f"| {backend} | {write} | {size:.1f} | {size / RAW:.3f}x | {reads.warm.later:,.0f} ({cold:,.0f}) | "
              f"{versus(reads.warm.later, jpeg_single)} | {pt_rate:,.0f} | {versus(pt_rate, jpeg_loader)} |")
    if jpeg:
        print(f"| JPEG per sample + list ({args.jpegs:,} files) | - | {jpeg_size:.1f} (crop only) | "
              f"{jpeg_size / 432:.3f}x of the crop | {jpeg_single:,.0f} (cv2.imread loop) | 1x | "
              f"{jpeg_loader:,.0f} | 1x |")
    print("\nGoals: numpy >= 5,000,000/s; DataLoader >= 1,000,000/s; bytes <= 1.1x raw.")


def print_cold_table(args: argparse.Namespace, rows: list[tuple]) -> None:
    print(f"\n### Cold and warm numpy reads (full shuffle, batch {args.batch}; cold: shard files evicted, "
          f"fresh process, {args.cold_runs} run(s), median; baseline: cold sequential read of the same files "
          "just before each cold run)\n")
    print("| layout | shard MB | cold sequential MB/s | cold samples/s | cold MB/s | cold / sequential | "
          "warm samples/s | warm MB/s | RSS / PSS / anon PSS after the cold epoch | after warm epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend, _, _, reads, _ in rows:
        cold = reads.cold[int(np.argsort([run.first for run in reads.cold])[len(reads.cold) // 2])]
        ratios = ", ".join(f"{r:.2f}" for r in reads.ratios())

        def memory(run: Epochs) -> str:
            return f"{mb(run.rss)} / {mb(run.pss)} / {mb(run.pss_anon)}"

        print(f"| {backend} | {reads.bytes / 1e6:.0f} | {np.median(reads.sequential):,.0f} | {cold.first:,.0f} | "
              f"{reads.mb_s(cold.first):,.0f} | {float(np.median(reads.ratios())):.2f} ({ratios}) | "
              f"{reads.warm.later:,.0f} | {reads.mb_s(reads.warm.later):,.0f} | {memory(cold)} | "
              f"{memory(reads.warm)} |")
    print("\nGoal: cold numpy reads >= 70% of the cold sequential bandwidth of the same files. RSS counts the "
          "shard pages mapped by the process (page cache, reclaimable); PSS divides shared pages between the "
          "processes mapping them; anon PSS is the process's own heap and buffers.")


if __name__ == "__main__":
    main()
