"""The render pass on an engine whose workers write the shards (Dask): the build process only places and lists them.

The local engine streams rendered samples into one writer, which cuts shard k at global samples
[kM, (k+1)M). Here the same cut is made before any pixel exists: the plan file and the mix give every
image's kept samples (`count_chunk`, run as tasks), hence every image's place in the stream, hence which
images each shard needs. Those images are rendered in pieces of `chunk` images, as tasks of their own
(`render_piece`), and one task per shard (`write_shard`) takes its pieces, worker to worker, and writes the
shard to the shared output directory (facedata.shardworker). The build process takes the shard results in
order, records the images' progress, lists each shard in the partial index and renames it: only index
entries and per-image rows reach it, never pixels; the bytes are the local engine's.

An image that planned from geometry may still fail to decode (a corrupt or truncated file): its samples
vanish and every later one moves. Its shard is not written, and the failure comes back; the shards already
submitted finish (their failures are learnt too, their files deleted), and the shards from there on are
placed again without the failed images. Each such round learns every failure of the images it rendered.

Resume: the progress table is saved before each shard is listed, so it always knows the images of the
listed shards. A rerun places the shards from the first one whose images it does not know; listed shards
before that point are rendered again and must hash as listed (a table lost or behind: slower, not wrong).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facedata import console
from facedata.buildplan import PlanFile
from facedata.buildworker import PENDING, PLANNED, PROGRESS_DTYPE, WRITTEN, Job, count_chunk
from facedata.engines import ChunkRunner, ShardRunner
from facedata.errors import FacedataError
from facedata.samplers.mixing import MixPlan
from facedata.shardworker import ShardJob, ShardResult, render_piece, write_shard
from facedata.storage import DatasetWriter

if TYPE_CHECKING:
    from facedata.buildrun import Output


def render_into_shards(
    runner: ShardRunner, job: Job, plan: PlanFile, output: Output, mix: MixPlan | None, chunk: int, progress: bool
) -> None:
    """Pass 2 with a writing task per shard, fed by pieces of `chunk` images; `output` receives progress rows,
    skip reports and the shards."""
    placed = _Placement(job, plan, output, _planned_counts(runner, job, plan, mix, chunk))
    writer = output.writer
    bar = _Progress(console.progress(job.n, "render", "img", enabled=progress), job.n)
    out_dir = str(Path(output.out_dir).resolve())
    try:
        _render_rounds(runner, placed, writer, mix, chunk, bar, out_dir)
    except Exception:  # e.g. a worker's disk filled up: the other shards in flight must not stay half-written
        runner.settle()
        writer.remove_temps()
        raise
    placed.finish()
    bar.close()
    writer.remove_temps()  # of tasks whose worker died mid-shard (Dask ran them again elsewhere)


def _render_rounds(
    runner: ShardRunner, placed: _Placement, writer: DatasetWriter, mix: MixPlan | None, chunk: int,
    bar: _Progress, out_dir: str,
) -> None:
    """Render and list the shards from the first one not trusted; after a failure at render, again from its
    shard with the shards placed anew, until a round meets no new failure."""
    kept = writer.shards
    first = placed.first_unknown_shard(len(kept))
    while True:
        shards = placed.shard_count()
        lost: list[int] = []  # shards whose task met a new failure (first one: where to place again)

        def jobs(start: int, shards: int = shards, lost: list[int] = lost) -> Iterator[tuple[list[tuple], tuple]]:
            for k in range(start, shards):
                if lost:  # stop submitting: what is in flight finishes, the rest is placed again
                    return
                spec = placed.shard_job(k)
                yield [(k, piece, mix) for piece in spec.pieces(chunk)], (k, spec, out_dir, writer.layout)

        for result in runner.ordered_parts(render_piece, write_shard, jobs(first), bar.piece_done):
            placed.learn(result)
            if lost or result.entry is None:
                lost.append(result.shard)
                if result.temp is not None:
                    (Path(out_dir) / result.temp).unlink(missing_ok=True)
                continue
            placed.accept(result, kept[result.shard] if result.shard < len(kept) else None)
        if not lost:
            break
        first = lost[0]
        placed.place()


class _Progress:
    """The render bar, advanced by images as the pieces finish on the workers (Dask calls back from its
    client thread): a few large shards would otherwise move it in a few jumps. Images rendered again after a
    failure are not counted twice past the total."""

    def __init__(self, bar: Any, total: int) -> None:
        self.bar, self.total, self.shown, self.lock = bar, total, 0, threading.Lock()

    def piece_done(self, part: tuple) -> None:
        spec = part[1]
        self._advance(spec.hi - spec.lo)

    def _advance(self, images: int) -> None:
        with self.lock:
            step = min(images, self.total - self.shown)
            self.shown += step
            self.bar.update(step)

    def close(self) -> None:
        self._advance(self.total)  # the images no piece renders: no sample, or failed while planning
        self.bar.close()


def _planned_counts(runner: ChunkRunner, job: Job, plan: PlanFile, mix: MixPlan | None, chunk: int) -> np.ndarray:
    """Samples per label each image keeps if it decodes: the plan's counts, or with a mix, `count_chunk` tasks."""
    if mix is None:
        return np.where((plan.table["status"] == PLANNED)[:, None], plan.table["labels"], 0)
    offsets = plan.offsets()
    bounds = [(a, min(job.n, a + chunk)) for a in range(0, job.n, chunk)]
    jobs = ((a, b, plan.table[a:b], int(offsets[a]), mix) for a, b in bounds)
    parts = list(runner.ordered(count_chunk, jobs))
    return np.concatenate(parts) if parts else np.zeros((0, plan.table["labels"].shape[1]), np.int64)


class _Placement:
    """Where every image's samples lie in the stream, given the failures known so far, and what is accepted."""

    def __init__(self, job: Job, plan: PlanFile, output: Output, counts: np.ndarray) -> None:
        self.job, self.plan, self.output = job, plan, output
        self.per_shard = output.writer.schema.samples_per_shard
        self.offsets = plan.offsets()
        self.planned = np.zeros(job.n, PROGRESS_DTYPE)  # what each image contributes if it decodes
        self.planned["status"] = np.where(plan.table["status"] == PLANNED, WRITTEN, plan.table["status"])
        self.planned["counts"] = counts
        self.failed = np.zeros(job.n, np.int8)  # failure status of images that failed to decode at render
        saved = output.saved
        self.known = 0  # leading images whose rows the saved progress table holds
        if saved is not None:
            pending = np.flatnonzero(saved["status"] == PENDING)
            self.known = int(pending[0]) if len(pending) else job.n
            rows = saved[: self.known]
            late = (rows["status"] != WRITTEN) & (self.planned["status"][: self.known] == WRITTEN)
            self.failed[: self.known][late] = rows["status"][late]
        self.notes = dict(output.notes)
        self.accepted = 0  # images whose progress rows are final
        self.reported = output.start  # images reported (skips) so far: output.begin did those before it
        self.place()

    def place(self) -> None:
        """The stream positions from the plan minus the failures known so far."""
        self.rows = self.planned.copy()
        failed = self.failed != 0
        self.rows["status"][failed] = self.failed[failed]
        self.rows["counts"][failed] = 0
        self.ends = np.cumsum(self.rows["counts"].sum(axis=1))
        self.total = int(self.ends[-1]) if len(self.ends) else 0

    def shard_count(self) -> int:
        return -(-self.total // self.per_shard)

    def first_unknown_shard(self, kept: int) -> int:
        """The first shard whose images the saved table does not hold (listed shards before it are trusted)."""
        known_samples = int(self.ends[self.known - 1]) if self.known else 0
        return min(kept, known_samples // self.per_shard)

    def shard_job(self, k: int) -> ShardJob:
        begin, end = k * self.per_shard, min((k + 1) * self.per_shard, self.total)
        lo = int(np.searchsorted(self.ends, begin, side="right"))  # the first image with a sample >= begin
        hi = int(np.searchsorted(self.ends, end, side="left")) + 1  # past the image holding sample end - 1
        plan = self.plan.table[lo:hi].copy()
        failed = self.failed[lo:hi] != 0
        plan["status"][failed] = self.failed[lo:hi][failed]  # known failures are not decoded again
        first_sample = int(self.ends[lo]) - int(self.rows["counts"][lo].sum())
        return ShardJob(k, lo, hi, plan, self.rows[lo:hi].copy(), int(self.offsets[lo]), first_sample, begin, end)

    def learn(self, result: ShardResult) -> None:
        """Failures the task met (statuses are facts about the images, whatever the placement)."""
        images = slice(result.lo, result.lo + len(result.progress))
        new = (result.progress["status"] != WRITTEN) & (self.rows["status"][images] == WRITTEN)
        self.failed[images][new] = result.progress["status"][new]
        self.notes.update(result.notes)

    def accept(self, result: ShardResult, listed: dict | None) -> None:
        """Shard `result.shard` is right: its images' rows are saved, then the shard is listed (or, listed by an
        earlier run, checked against that listing)."""
        self._rows_until(result.lo + len(result.progress))
        self.output.save()  # first: the table always knows the images of every listed shard
        assert result.entry is not None and result.temp is not None
        temp = Path(self.output.out_dir) / result.temp
        if listed is None:
            self.output.writer.adopt(result.entry, temp, result.units)
        else:
            temp.unlink(missing_ok=True)
            if listed.get("sha256") != result.entry["sha256"]:
                raise FacedataError(f"{listed.get('file')}: listed by the interrupted run with other bytes than "
                                    "rendered now; rebuild with --overwrite")
        self.output.position = result.entry["first_index"] + result.entry["samples"]
        if self.output.on_write is not None:
            self.output.on_write(self.output.position)

    def _rows_until(self, hi: int) -> None:
        """Images [accepted, hi) are final: their progress rows set and their skips reported, in stream order."""
        if hi <= self.accepted:
            return
        self.output.table[self.accepted : hi] = self.rows[self.accepted : hi]
        for j in range(max(self.reported, self.accepted), hi):
            status = int(self.rows["status"][j])
            if status != WRITTEN:
                self.output.skip(j, status, self.notes.get(j))
        self.accepted = self.reported = max(self.reported, hi)

    def finish(self) -> None:
        """Images after the last shard's (those without samples): final too."""
        self._rows_until(self.job.n)
        self.output.position = self.total
