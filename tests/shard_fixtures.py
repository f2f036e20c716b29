"""Synthetic samples for storage/reader tests: every sample is identifiable by its `image_index`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.samples import SAMPLE_DTYPE
from facedata.storage import DatasetWriter

SHAPE = (12, 12, 3)
BYTES_PER_SAMPLE = 12 * 12 * 3 + SAMPLE_DTYPE.itemsize


def synthetic(n: int, seed: int = 0, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Samples start..start+n of a deterministic stream (same values whatever the chunking)."""
    index = np.arange(start, start + n)
    pixels = ((index[:, None] * 7 + np.arange(432)[None, :] * 13 + seed) % 251).astype(np.uint8)
    records = np.zeros(n, SAMPLE_DTYPE)
    records["label"] = (index * 5 + seed) % 4 - 2
    records["image_index"] = index
    records["face_index"] = index % 17 - 1
    records["angle"] = (index % 11) - 5.0
    records["crop"] = np.stack([index, index + 1, index + 12, index + 13], axis=1)
    records["bbox"] = (index[:, None] % 9 - 4) / 10.0
    records["landmarks"] = (index[:, None] + np.arange(10)) % 100 / 100.0
    return pixels.reshape(n, *SHAPE), records


def write_dataset(
    out: Path, backend: str, n: int, *, shard_samples: int = 1024, block_samples: int = 64, chunk: int = 301,
    provenance: dict | None = None, seed: int = 0,
) -> dict:
    """Write n synthetic samples in `chunk`-sized adds; shards of `shard_samples` samples."""
    with DatasetWriter(
        out, backend=backend, image_shape=SHAPE, record_dtype=SAMPLE_DTYPE,
        provenance=provenance if provenance is not None else {"seed": seed, "command_line": "test"},
        shard_bytes=shard_samples * BYTES_PER_SAMPLE, block_samples=block_samples,
    ) as writer:
        for lo in range(writer.samples_done, n, chunk):
            writer.add(*synthetic(min(chunk, n - lo), seed, lo))
        return writer.close({"note": "synthetic"})
