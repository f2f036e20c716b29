"""The build's plan file: every stream image's planned records (before mixing), spilled to disk.

Pass 1 of a build plans each image once (geometry for crop and landmark images; detector + labelling
for mined images) and appends the records here in stream order; the class totals then fix the mix, and
pass 2 reads each chunk's records back instead of planning (or running the detector) again. Memory
holds only a small per-image table (status, record count, label counts, stage counters); the records
themselves, about 100 bytes each, stay on disk.

Resumable: the table and the number of planned images are saved atomically (after an fsync of the
records) at least every `save_seconds` and when the build stops for any reason; a rerun with the same
fingerprint truncates the record file to what the table covers and plans on from there, so an
interrupted mining run does not run the detector again on images it already did.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from facedata import killpoint
from facedata.paths import atomic_write

RECORDS_NAME = "build-plan.rec"
TABLE_NAME = "build-plan.npy"
META_NAME = "build-plan.json"
PLAN_FILES = (RECORDS_NAME, TABLE_NAME, META_NAME)


class PlanFile:
    """Append-only records of images [0, planned) plus their table rows; see the module docstring."""

    def __init__(
        self, out_dir: Path, fingerprint: str, table_dtype: np.dtype, record_dtype: np.dtype, n: int,
        save_seconds: float = 2.0,
    ) -> None:
        self.out_dir, self.fingerprint, self.record_dtype = out_dir, fingerprint, np.dtype(record_dtype)
        self.save_seconds = save_seconds
        self.path = out_dir / RECORDS_NAME
        self.table = np.zeros(n, table_dtype)
        self.planned = self._recover()
        self.records = int(self.table["records"][: self.planned].sum())
        mode = "r+b" if self.path.exists() else "w+b"
        self._file = open(self.path, mode)
        self._file.truncate(self.records * self.record_dtype.itemsize)
        self._file.seek(0, os.SEEK_END)
        self._saved_at = time.monotonic()

    def _recover(self) -> int:
        """Images already planned by an earlier run with this fingerprint (0 if none or unusable)."""
        saved = load_table(self.out_dir, TABLE_NAME, META_NAME, self.fingerprint, self.table.dtype, len(self.table))
        if saved is None:
            return 0
        table, meta = saved
        planned = meta.get("planned")
        if not isinstance(planned, int) or not 0 <= planned <= len(table):
            return 0
        size = self.path.stat().st_size if self.path.exists() else 0
        if int(table["records"][:planned].sum()) * self.record_dtype.itemsize > size:
            return 0
        self.table[:planned] = table[:planned]
        return planned

    @property
    def complete(self) -> bool:
        return self.planned == len(self.table)

    def append(self, lo: int, hi: int, rows: np.ndarray, records: np.ndarray) -> None:
        """Add the plan of images [lo, hi) (lo must be `planned`)."""
        if lo != self.planned:
            raise ValueError(f"plan chunk starts at image {lo}, expected {self.planned}")
        self._file.write(np.ascontiguousarray(records, self.record_dtype).tobytes())
        self.table[lo:hi] = rows
        self.planned, self.records = hi, self.records + len(records)
        if time.monotonic() - self._saved_at >= self.save_seconds:
            self.save()
        killpoint.step()

    def save(self) -> None:
        """Make the records durable, then the table that points into them."""
        self._file.flush()
        os.fsync(self._file.fileno())
        meta = {"fingerprint": self.fingerprint, "images": len(self.table), "planned": self.planned}
        save_table(self.out_dir, TABLE_NAME, META_NAME, self.table, meta)
        self._saved_at = time.monotonic()

    def offsets(self) -> np.ndarray:
        """(n + 1,) first record of each image in the file."""
        return np.concatenate([[0], np.cumsum(self.table["records"], dtype=np.int64)])

    def close(self) -> None:
        if not self._file.closed:
            try:
                self.save()
            finally:  # closed even when the save fails (a full disk)
                self._file.close()

    def remove(self) -> None:
        self.close()
        for name in PLAN_FILES:
            (self.out_dir / name).unlink(missing_ok=True)


def save_table(out_dir: Path, table_name: str, meta_name: str, table: np.ndarray, meta: dict[str, Any]) -> None:
    """Save a build's per-image table (.npy, no pickle) and then its meta (JSON with the build's fingerprint),
    each atomically: the plan and progress tables of an interrupted build, found again by `load_table`."""
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    with atomic_write(out_dir / table_name) as fh:
        fh.write(buf.getvalue())
    with atomic_write(out_dir / meta_name, "w") as fh:
        json.dump(meta, fh)


def load_table(
    out_dir: Path, table_name: str, meta_name: str, fingerprint: str, dtype: np.dtype, n: int
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(table, meta) saved by `save_table` for this build (same fingerprint, dtype and n rows), else None."""
    try:
        meta = json.loads((out_dir / meta_name).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint:
            return None
        table = np.load(out_dir / table_name, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if table.dtype != dtype or table.shape != (n,):
        return None
    return table, meta


def read_records(path: str | os.PathLike[str], dtype: np.dtype, start: int, stop: int) -> np.ndarray:
    """Records [start, stop) of a plan file (workers read their chunk directly, not through the parent)."""
    dtype = np.dtype(dtype)
    return np.fromfile(path, dtype=dtype, count=stop - start, offset=start * dtype.itemsize)
