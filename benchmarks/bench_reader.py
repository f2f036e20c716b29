"""Reader throughput and bytes on disk for 12x12 PNet shards, against a JPEG-per-sample baseline.

Builds synthetic shards with both backends, then measures in one run:
  - numpy batch reads (ShardedDataset.iter_batches) with a fresh shuffled order per epoch;
  - a PyTorch DataLoader with 2 workers (facedata.readers.torch.make_loader: packed batches, dicts out);
  - the reference layout: one JPEG per sample listed in a text file, read with cv2.imread
    (single process, and through a DataLoader with 2 workers);
  - bytes per sample on disk vs the raw crop + record.
Prints a markdown table for benchmarks/RESULTS.md. Usage:
    python benchmarks/bench_reader.py [--samples 1000000] [--jpegs 20000] [--batch 4096] [--dir DIR]
Quick reruns: `--dir DIR --reuse` keeps and reuses the shards of an earlier run with the same sample
count, `--jpegs 0` skips the JPEG baseline, `--backends lmdb` measures one layout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facedata.readers.torch import make_loader
from facedata.samples import SAMPLE_DTYPE
from facedata.storage import DatasetWriter, ShardedDataset

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


def numpy_rate(path: Path, batch: int, epochs: int) -> tuple[float, float]:
    """(first epoch, median of the later epochs): every epoch has a fresh shuffled order; the first
    also pays this process's first touch of the shard files (page mapping), reported on its own."""
    ds = ShardedDataset(path)
    rates = []
    for epoch in range(epochs + 1):
        started, seen = time.perf_counter(), 0
        for _, records in ds.iter_batches(batch, seed=1, epoch=epoch):
            seen += len(records)
        rates.append(seen / (time.perf_counter() - started))
    return rates[0], float(np.median(rates[1:]))


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
    return build(out, backend, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="quick reruns: --dir DIR --reuse --jpegs 0 [--backends lmdb]")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--jpegs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3, help="numpy epochs after the first (median)")
    parser.add_argument("--loader-epochs", type=int, default=3, help="DataLoader epochs (median)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir, removed after)")
    parser.add_argument("--reuse", action="store_true", help="reuse shards already built in --dir")
    parser.add_argument("--backends", default="lmdb,parquet", help="comma-separated layouts to measure")
    args = parser.parse_args()
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
            rows.append((backend, write_s and args.samples / write_s, index["bytes"] / args.samples,
                         numpy_rate(out, args.batch, args.epochs), torch_rate(out, args.batch, args.loader_epochs)))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(args, rows, jpeg)


def print_table(args: argparse.Namespace, rows: list[tuple], jpeg: tuple[float, float, float] | None) -> None:
    print(f"\n### Reader benchmark: {args.samples:,} samples of 12x12x3 + {SAMPLE_DTYPE.itemsize}-byte "
          f"record, batch {args.batch}, {os.cpu_count()} CPUs\n")
    print(f"| layout | write samples/s | bytes/sample (raw = {RAW}) | vs raw | numpy shuffled samples/s "
          "(first epoch) | vs JPEG | DataLoader 2 workers samples/s | vs JPEG loader |")
    print("|---|---|---|---|---|---|---|---|")
    jpeg_size, jpeg_single, jpeg_loader = jpeg or (0.0, 0.0, 0.0)

    def versus(rate: float, baseline: float) -> str:
        return f"{rate / baseline:.0f}x" if baseline else "-"

    for backend, write_rate, size, (np_first, np_rate), pt_rate in rows:
        write = f"{write_rate:,.0f}" if write_rate else "- (reused)"
        print(f"| {backend} | {write} | {size:.1f} | {size / RAW:.3f}x | {np_rate:,.0f} ({np_first:,.0f}) | "
              f"{versus(np_rate, jpeg_single)} | {pt_rate:,.0f} | {versus(pt_rate, jpeg_loader)} |")
    if jpeg:
        print(f"| JPEG per sample + list ({args.jpegs:,} files) | - | {jpeg_size:.1f} (crop only) | "
              f"{jpeg_size / 432:.3f}x of the crop | {jpeg_single:,.0f} (cv2.imread loop) | 1x | "
              f"{jpeg_loader:,.0f} | 1x |")
    print("\nGoals: numpy >= 5,000,000/s; DataLoader >= 1,000,000/s; bytes <= 1.1x raw.")


if __name__ == "__main__":
    main()
