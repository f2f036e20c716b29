"""Class shares per batch on real built shards: layouts (as built, landmarks last) x orders x backends.

Builds a PNet dataset (LMDB and Parquet) from the demo corpus (real JPEG encode/decode, the real
samplers and writer). Builds interleave detection and landmark images (issue 8); the pre-issue-8 layout,
every landmark sample after every detection sample, is emulated by moving the landmark samples' labels
to the end. Each layout is read in three orders:
  - old default: the order before issue 8 (units permuted, samples shuffled inside windows of
    consecutive permuted units), reimplemented here from its description;
  - new default: `epoch_order` (every shuffle window takes one unit from each stratum of the file);
  - batch_mix 3:1:1:2: exact class counts per batch.
It prints the landmark share per batch (min / mean / max / std over all full batches) and the distinct
source images per batch for each backend's unit size (LMDB blocks, Parquet row groups), what one epoch
of the mix uses of each class, and numpy `iter_batches` throughput with and without the mix (noisy on a
shared machine). Usage:
    python benchmarks/bench_batch_mix.py [--wider 240] [--cuhk 60] [--batch 256] [--epochs 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from facedata.build import build_dataset
from facedata.demo import build_demo_corpus
from facedata.parsers import ingest
from facedata.readers.order import MIX_LABELS, WINDOW_SAMPLES, ReadOrder, epoch_order
from facedata.samples import LABEL_NAMES
from facedata.storage import ShardedDataset

MIX = "3:1:1:2"


def old_epoch_order(n: int, unit: int, seed: int, epoch: int) -> np.ndarray:
    """The pre-issue-8 default: permute units, then shuffle inside windows of consecutive permuted units."""
    rng = np.random.default_rng([seed, epoch])
    units = rng.permutation(-(-n // unit))
    order = np.concatenate([np.arange(u * unit, min((u + 1) * unit, n)) for u in units])
    per_window = max(1, -(-WINDOW_SAMPLES // unit)) * unit
    for lo in range(0, n, per_window):
        order[lo : lo + per_window] = rng.permutation(order[lo : lo + per_window])
    return order


def build(root: Path, wider: int, cuhk: int) -> dict[str, Path]:
    corpus = build_demo_corpus(root / "corpus", seed=3, wider_images=wider, cuhk_images=cuhk)
    detections, _ = ingest(corpus.wider_annotations, images=corpus.wider_images)
    landmarks, _ = ingest(corpus.cuhk_annotations, images=corpus.cuhk_images)
    out = {}
    for backend in ("lmdb", "parquet"):
        out[backend] = root / f"pnet-{backend}"
        if not (out[backend] / "index.json").exists():
            build_dataset(detections, landmarks, out[backend], backend=backend, workers=1, progress=False, seed=0)
    return out


def batch_stats(label_batches: np.ndarray, image_batches: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Class name -> (min, mean, max, std) share per batch; 'images' -> distinct source images per batch."""
    stats = {}
    for label in MIX_LABELS:
        share = (label_batches == label).mean(axis=1)
        stats[LABEL_NAMES[label]] = (share.min(), share.mean(), share.max(), share.std())
    distinct = np.array([len(np.unique(row)) for row in image_batches])
    stats["images"] = (distinct.min(), distinct.mean(), distinct.max(), distinct.std())
    return stats


def orders(ds: ShardedDataset, labels: np.ndarray, batch: int, epochs: int) -> dict[str, list[np.ndarray]]:
    n, unit = len(ds), ds.unit_samples
    mixed = ReadOrder(n, unit, batch, seed=0, batch_mix=MIX, labels=labels)
    return {
        "old default": [old_epoch_order(n, unit, 0, e) for e in range(epochs)],
        "new default": [epoch_order(n, unit, seed=0, epoch=e) for e in range(epochs)],
        f"batch_mix {MIX}": [mixed.epoch(e) for e in range(epochs)],
    }


def throughput(ds: ShardedDataset, batch: int, batch_mix: str | None) -> float:
    """Median samples/s over 3 epochs of numpy iter_batches (after one warm-up epoch)."""
    rates = []
    for epoch in range(4):
        started, seen = time.perf_counter(), 0
        for _, records in ds.iter_batches(batch, seed=0, epoch=epoch, batch_mix=batch_mix):
            seen += len(records)
        rates.append(seen / (time.perf_counter() - started))
    return float(np.median(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wider", type=int, default=240)
    parser.add_argument("--cuhk", type=int, default=60)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="keep (and reuse) the corpus and shards here")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_batch_mix_"))
    try:
        paths = build(root, args.wider, args.cuhk)
        ds = ShardedDataset(paths["lmdb"])
        labels = ds.labels()
        images = ds.read_range(0, len(ds))[1]["image_index"].astype(np.int64)
        images[labels == MIX_LABELS[-1]] += 1 << 32  # landmark samples index the other manifest
        last = np.argsort(labels == MIX_LABELS[-1], kind="stable")  # the pre-issue-8 layout: landmarks last
        layouts = {"interleaved (as built)": (labels, images), "landmarks last (before)": (labels[last], images[last])}
        counts = ", ".join(f"{LABEL_NAMES[c]} {int((labels == c).sum()):,}" for c in MIX_LABELS)
        print(f"## Class shares per batch: {args.wider} WIDER + {args.cuhk} CUHK demo images, PNet, "
              f"{len(ds):,} samples ({counts}), batch {args.batch}, {args.epochs} epochs\n")
        print("| backend (unit) | layout | order | landmark share min / mean / max (std) | distinct images "
              "per batch min / mean / max |\n|---|---|---|---|---|")
        for backend, path in paths.items():
            data = ShardedDataset(path)
            for layout, (lab, img) in layouts.items():
                for name, epoch_orders in orders(data, lab, args.batch, args.epochs).items():
                    full = [o[: len(o) // args.batch * args.batch] for o in epoch_orders]
                    order = np.concatenate(full)
                    stats = batch_stats(lab[order].reshape(-1, args.batch), img[order].reshape(-1, args.batch))
                    lo, mean, hi, std = stats[LABEL_NAMES[MIX_LABELS[-1]]]
                    ilo, imean, ihi, _ = stats["images"]
                    print(f"| {backend} ({data.unit_samples:,}) | {layout} | {name} | {lo:.1%} / {mean:.1%} / "
                          f"{hi:.1%} ({std:.1%}) | {ilo:.0f} / {imean:.0f} / {ihi:.0f} |")
        usage = ds.read_order(args.batch, seed=0, batch_mix=MIX).class_usage()
        print(f"\nbatch_mix {MIX}, one epoch uses (class: used / available): "
              + ", ".join(f"{name} {used:,} / {have:,} ({used / have:.2f}x)" for name, (have, used) in usage.items()))
        print("\n| backend | default samples/s | batch_mix samples/s |\n|---|---|---|")
        for backend, path in paths.items():
            data = ShardedDataset(path)
            print(f"| {backend} | {throughput(data, args.batch, None) / 1e6:.2f} M | "
                  f"{throughput(data, args.batch, MIX) / 1e6:.2f} M |")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
