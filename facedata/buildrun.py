"""The two passes of a build over its image stream, resumable; see facedata.build for the whole story.

Resume: the plan file resumes at image granularity (facedata.buildplan). The writer keeps complete
shards and reports `samples_done`. A small per-image progress table (`build-progress.npy`: status,
samples contributed per label), saved atomically each time a shard completes, lets a rerun jump over
whole images without decoding; the few samples of the first image that straddle the boundary are
rendered and dropped. If the table is missing or behind, the stream is regenerated from where it ends
and dropped until `samples_done` (correct, just slower). The plan and progress files are removed when the
build completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from facedata import console
from facedata.buildplan import PlanFile, load_table, save_table
from facedata.buildsummary import build_summary
from facedata.buildworker import (
    PENDING,
    PLANNED,
    PROGRESS_DTYPE,
    STATUS_NAME,
    STATUS_REASON,
    WRITTEN,
    ChunkResult,
    Job,
    plan_chunk,
    render_chunk,
)
from facedata.engines import ChunkRunner, ShardRunner
from facedata.errors import FacedataError
from facedata.samplers.mixing import MixPlan, mixing_plan
from facedata.samples import LABEL_NAMES, LABEL_ORDER
from facedata.shardedrender import render_into_shards
from facedata.storage import DatasetWriter

PROGRESS_NAME = "build-progress.npy"
PROGRESS_META_NAME = "build-progress.json"


def _chunks(lo: int, hi: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(lo, hi, size):
        yield a, min(hi, a + size)


def _write_reports(job: Job, plan: np.ndarray, out_dir: Path) -> None:
    """The stage's reports from the plan table's detection-image rows."""
    rows = plan[job.detection_positions]
    status = [job.stage.verb if s == PLANNED else STATUS_NAME[int(s)] for s in rows["status"]]
    job.stage.write_reports(out_dir, job.detection_tasks, rows["counters"], status)


def _save_progress(out_dir: Path, table: np.ndarray, fingerprint: str) -> None:
    save_table(out_dir, PROGRESS_NAME, PROGRESS_META_NAME, table, {"fingerprint": fingerprint, "images": len(table)})


def _load_progress(out_dir: Path, fingerprint: str, n: int) -> np.ndarray | None:
    """The saved progress table if it belongs to this build, else None."""
    saved = load_table(out_dir, PROGRESS_NAME, PROGRESS_META_NAME, fingerprint, PROGRESS_DTYPE, n)
    return None if saved is None else saved[0]


def _resume_point(table: np.ndarray | None, done: int) -> tuple[int, int]:
    """(first stream image to process, samples of the stream before it) for `done` durable samples."""
    if done == 0 or table is None:
        return 0, 0
    known = np.flatnonzero(table["status"] == PENDING)
    covered = int(known[0]) if len(known) else len(table)
    ends = np.cumsum(table["counts"][:covered].sum(axis=1))
    start = int(np.searchsorted(ends, done, side="right"))  # first image whose samples reach past done
    if start >= covered:
        start = covered
    before = int(ends[start - 1]) if start > 0 else 0
    table[start:] = np.zeros(1, PROGRESS_DTYPE)  # re-derived from here on
    return start, before


def run_build(
    runner: ChunkRunner, job: Job, out_dir: Path, *, backend: str, mix_ratio: dict[int, float] | None,
    allow_repeat: bool, shard_bytes: int, block_samples: int | None, provenance: dict[str, Any], progress: bool,
    strict: bool, chunk: int, on_write: Callable[[int], None] | None, on_plan: Callable[[int], None] | None,
    started: float, encoding: str = "raw",
) -> dict[str, Any]:
    """Plan, then render (two passes); without mixing (`mix_ratio` None) both in one pass, since every
    planned sample is written: each image is decoded once and its samples go straight to the writer."""
    n = job.n
    skipped: list[dict[str, str]] = []

    def skip(j: int, status: int, note: str | None = None) -> None:
        task = job.task(j)
        reason = STATUS_REASON[status] + (f" ({note})" if note else "")
        if strict:
            raise FacedataError(f"{task.path}: {reason}")
        skipped.append({"image_id": task.image_id, "path": task.path, "reason": reason})

    writer = DatasetWriter(
        out_dir, backend=backend, image_shape=job.image_shape, record_dtype=job.record_dtype,
        provenance=provenance, shard_bytes=shard_bytes, block_samples=block_samples, resume=True, encoding=encoding,
    )
    with writer:
        plan = PlanFile(out_dir, writer.fingerprint, job.plan_dtype, job.record_dtype, n)
        resumed_plan = plan.planned
        output = Output(writer, out_dir, n, skip, on_write)
        # one pass where every planned sample is written, unless the workers write the shards: they need to
        # know where each image's samples go before rendering (facedata.shardedrender)
        single_pass = mix_ratio is None and not runner.writes_shards
        output.begin(plan.planned if single_pass else n)
        resumed_from = output.start
        try:
            if single_pass:  # images planned by an earlier run are rendered from the plan file
                _render_pass(runner, job, plan, output, output.start, plan.planned, None, chunk, progress)
            _plan_pass(runner, job, plan, output, single_pass, chunk, progress, strict, skip, on_plan)
        finally:
            plan.close()
        _write_reports(job, plan.table, out_dir)
        mix = None
        if mix_ratio is not None:
            totals = plan.table["labels"][plan.table["status"] == PLANNED].sum(axis=0)
            counts = {lab: int(c) for lab, c in zip(LABEL_ORDER, totals.tolist(), strict=True)}
            mix = mixing_plan(counts, mix_ratio, allow_repeat)
        if runner.writes_shards:
            render_into_shards(cast(ShardRunner, runner), job, plan, output, mix, chunk, progress)
        elif not single_pass:
            _render_pass(runner, job, plan, output, output.start, n, mix, chunk, progress)
        summary = build_summary(job, plan.table, output.table, skipped, mix)
        summary.update(resumed_from_sample=output.done, resumed_from_image=resumed_from,
                       resumed_plan_from_image=resumed_plan)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        index = writer.close(summary)
    plan.remove()
    for name in (PROGRESS_NAME, PROGRESS_META_NAME):
        (out_dir / name).unlink(missing_ok=True)
    summary.update(
        samples=int(index["samples"]),
        shards=len(index["shards"]),
        bytes=int(index["bytes"]),
        label_counts={LABEL_NAMES.get(int(k), k): v for k, v in index["label_counts"].items()},
    )
    return summary


class Output:
    """The sample stream into the writer: per-image progress, resume point, dropping what is durable."""

    def __init__(
        self, writer: DatasetWriter, out_dir: Path, n: int, skip: Callable[..., None],
        on_write: Callable[[int], None] | None,
    ) -> None:
        self.writer, self.out_dir, self.skip, self.on_write = writer, out_dir, skip, on_write
        self.table = np.zeros(n, PROGRESS_DTYPE)
        self.done = self.last_saved = writer.samples_done
        self.saved = _load_progress(out_dir, writer.fingerprint, n) if self.done else None  # as the last run left it
        if self.saved is not None:
            self.table[:] = self.saved
        self.start, self.position = _resume_point(self.table if self.saved is not None else None, self.done)
        self.notes: dict[int, str] = {}  # details of images that failed while planning (two passes)

    def save(self) -> None:
        """The progress table, atomically (a rerun resumes from it)."""
        _save_progress(self.out_dir, self.table, self.writer.fingerprint)

    def begin(self, limit: int) -> None:
        """Regenerate the stream from the resume point, or from image `limit` if that is earlier (images
        to re-render from the plan file); the images skipped before it are reported now, once."""
        if limit < self.start:
            self.start = limit
            self.position = int(self.table["counts"][:limit].sum())
            self.table[limit:] = np.zeros(1, PROGRESS_DTYPE)
        for j in np.flatnonzero(self.table["status"][: self.start] != WRITTEN).tolist():
            self.skip(j, int(self.table["status"][j]))

    def consume(self, lo: int, hi: int, result: ChunkResult) -> None:
        self.table[lo:hi] = result.progress
        for j in range(lo, hi):
            if self.table["status"][j] != WRITTEN:
                self.skip(j, int(self.table["status"][j]), result.notes.get(j, self.notes.get(j)))
        k = len(result.records)
        drop = min(k, max(0, self.done - self.position))
        if drop < k:
            self.writer.add(result.pixels[drop:], result.records[drop:])
        self.position += k
        if self.writer.samples_done > self.last_saved:
            self.save()
            self.last_saved = self.writer.samples_done
        if self.on_write is not None:
            self.on_write(self.position)


def _render_pass(
    runner: ChunkRunner, job: Job, plan: PlanFile, output: Output, lo: int, hi: int, mix: MixPlan | None,
    chunk: int, progress: bool,
) -> None:
    """Pass 2 over planned images [lo, hi): mix, decode, render, write."""
    if hi <= lo:
        return
    offsets = plan.offsets()
    todo = list(_chunks(lo, hi, chunk))
    jobs = ((a, b, plan.table[a:b], int(offsets[a]), mix) for a, b in todo)
    bar = console.progress(hi - lo, "render", "img", enabled=progress)
    for (a, b), result in zip(todo, runner.ordered(render_chunk, jobs), strict=True):
        output.consume(a, b, result)
        bar.update(b - a)
    bar.close()


def _plan_pass(
    runner: ChunkRunner, job: Job, plan: PlanFile, output: Output, single_pass: bool, chunk: int, progress: bool,
    strict: bool, skip: Callable[..., None], on_plan: Callable[[int], None] | None,
) -> None:
    """Pass 1 from where an earlier run left off: every image's records into the plan file, in order;
    with `single_pass` rendered and written too. In two passes failed images are reported by pass 2
    (which sees their status; their details wait in `output.notes`); `strict` stops here already."""
    n = job.n
    todo = list(_chunks(plan.planned, n, chunk))
    bar = console.progress(n, job.stage.verb, "img", enabled=progress, initial=plan.planned)
    jobs = ((a, b, single_pass) for a, b in todo)
    for (lo, hi), result in zip(todo, runner.ordered(plan_chunk, jobs), strict=True):
        plan.append(lo, hi, result.rows, result.records)
        if single_pass:
            assert result.rendered is not None
            output.consume(lo, hi, result.rendered)
        else:
            if strict:
                for row in np.flatnonzero(result.rows["status"] != PLANNED).tolist():
                    skip(lo + row, int(result.rows["status"][row]), result.notes.get(lo + row))
            output.notes.update(result.notes)
        if on_plan is not None:
            on_plan(hi)
        bar.update(hi - lo)
    bar.close()
