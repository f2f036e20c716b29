"""`facedata build pnet|rnet|onet`: manifests -> planned, mixed, rendered crops -> sharded dataset.

The build is one deterministic *sample stream*: detection-manifest images in manifest order, then
landmark-manifest images in manifest order; each image contributes the records its planner (or the
cascade + `label_detections`) produces, filtered by the class mix, in planner order. Every random draw
and every mixing decision is a function of (seed, image id), so the stream, and therefore every shard
byte (the writer rolls shards over at fixed sample counts), is the same for any worker count and any
chunking.

Two passes, the same for every stage:
1. *plan*: every image's full record list, before mixing, appended in stream order to the plan file
   (facedata.buildplan, on disk beside the shards). Crop and landmark images are planned from geometry
   alone (no decoding); for RNet/ONet each detection image is decoded and run through the previous
   stages (PNet for rnet, PNet + RNet for onet; the ONNX sessions are created inside each worker by
   `detector`, a factory, never pickled), and its detections are labelled (negatives capped per image).
   The detector runs once per image, however the build is resumed.
2. *render*: the class totals give per-label keep probabilities (`mixing_plan`, neg:pos:part:landmark
   3:1:1:2 by default, anchored on the positives, mined or not; short classes reported, repeated only
   with `allow_repeat`; `mix=False` keeps everything); each worker reads its chunk's records from the
   plan file, `select`s, decodes each image once (cv2.imread, IMREAD_COLOR) and renders the kept crops;
   the parent writes results in image order.
Without mixing (`mix=False`, CLI `--ratio all`) every planned sample is written, so both passes are one:
each worker renders what it has just planned, from the image it has just decoded (mined images are
decoded once, not twice) and the samples go straight to the writer; the plan file is still kept for
resuming and for the mining report.

Workers are started with forkserver (spawn off Linux): a plain fork of a process whose OpenCV thread
pool has run can deadlock. As with any spawn-style pool, scripts calling build_dataset with
workers > 1 need an `if __name__ == "__main__":` guard, and a `detector` factory must be picklable
(CascadeFactory is; live in-process models need workers=1).

Memory is bounded: workers get image-index ranges (the task list is sent once per worker), at most
`4 x workers` chunks are in flight (Pool.imap has no back-pressure, so a bounded window of ordered
futures is used instead) and the parent holds one chunk's records or pixels at a time plus two small
per-image tables; the planned records themselves live in the plan file.

Resume: the plan file resumes at image granularity (facedata.buildplan). The writer keeps complete
shards and reports `samples_done`. A small per-image progress table (`build-progress.npy`: status,
samples contributed per label), saved atomically each time a shard completes, lets a rerun jump over
whole images without decoding; the few samples of the first image that straddle the boundary are
rendered and dropped. If the table is missing or behind, the stream is regenerated from where it ends
and dropped until `samples_done` (correct, just slower). Unreadable or missing images are skipped and
named in the summary (`strict=True` raises instead). The plan and progress files are removed when the
build completes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from facedata import __version__
from facedata.buildoutput import Output, prepare_output
from facedata.buildplan import RECORDS_NAME, PlanFile
from facedata.buildworker import (
    LABEL_ORDER,
    MINING_FIELDS,
    PENDING,
    PLAN_DTYPE,
    PLANNED,
    PROGRESS_DTYPE,
    STATUS_NAME,
    STATUS_REASON,
    WRITTEN,
    CascadeFactory,
    ChunkResult,
    Job,
    init_worker,
    plan_chunk,
    render_chunk,
)
from facedata.errors import FacedataError
from facedata.manifest import Manifest, command_line, to_table
from facedata.paths import atomic_write
from facedata.samplers.crops import CropRecipe
from facedata.samplers.landmarks import LandmarkRecipe
from facedata.samplers.mined import MiningRecipe
from facedata.samplers.mixing import DEFAULT_RATIO, MixPlan, mixing_plan
from facedata.samplers.tasks import TaskTable, task_table
from facedata.samples import (
    LABEL_NAMES,
    ORIGIN_DETECTIONS,
    ORIGIN_LANDMARKS,
    STAGE_SIZE,
    sample_dtype,
)
from facedata.storage import DatasetWriter
from facedata.storage.writer import shard_layout
from facedata.workerpool import pool_context

__all__ = [
    "MINING_REPORT_NAME", "PROGRESS_NAME", "CascadeFactory", "build_dataset", "check_inputs", "format_summary",
    "manifest_sha256", "parse_ratio", "parse_roots", "parse_size", "recipes_from_index",
    "verify_build_labels",
]

PROGRESS_NAME = "build-progress.npy"
PROGRESS_META_NAME = "build-progress.json"
MINING_REPORT_NAME = "mining-report.csv"  # per detection image: detections and labels (rnet/onet)
DETECTION_BINS = (0, 1, 2, 6, 11, 51, 101, 501, 1001)  # histogram of detections per image: [a, b)


# ------------------------------------------------------------------------------------ parent side


class _Runner:
    """Ordered results of chunk jobs, in-process (workers=1) or from a process pool, at most
    `4 x workers` chunks in flight (Pool.imap has no back-pressure: results would pile up in RAM).

    concurrent.futures rather than multiprocessing.Pool: Pool.terminate() can hang forever joining its
    result thread when a worker dies mid-send; the executor cancels queued chunks and lets running
    ones finish (bounded by the window) or reports a broken pool.
    """

    def __init__(self, job: Job, workers: int) -> None:
        self.workers = max(1, workers)
        self.pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=pool_context(), initializer=init_worker, initargs=(job, True)
            )
        else:
            init_worker(job, False)

    def ordered(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        if self.pool is None:
            for args in jobs:
                yield fn(*args)
            return
        window = 4 * self.workers
        pending: deque = deque()
        for args in jobs:
            pending.append(self.pool.submit(fn, *args))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self, ok: bool) -> None:
        global _JOB, _CASCADE
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=not ok)
        _JOB, _CASCADE = None, None


def _chunks(lo: int, hi: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(lo, hi, size):
        yield a, min(hi, a + size)


def manifest_sha256(manifest: Manifest) -> str:
    """Content hash of a manifest (images + faces, Arrow IPC), independent of its provenance."""
    table = to_table(manifest).replace_schema_metadata(None)
    digest = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(digest, mode="w"), table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 16)  # streamed into the hash, no IPC copy in RAM
    return digest.sha.hexdigest()


class _HashSink(io.RawIOBase):
    """A write-only file that hashes what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha.update(data)
        return len(memoryview(data))


def _load_tasks(
    manifest: ManifestInput, origin: int, min_face: float, roots: dict[str, str] | None
) -> tuple[TaskTable, dict[str, Any]]:
    """A manifest's task table and provenance entry (a manifest given as a path is read and dropped)."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.read(manifest)
    return task_table(manifest, origin, min_face=min_face, roots=roots), _manifest_info(manifest)


def _manifest_info(manifest: Manifest) -> dict[str, Any]:
    return {
        "sha256": manifest_sha256(manifest),
        "images": len(manifest.images),
        "faces": len(manifest.faces),
        "source_files": manifest.provenance.get("source_files", []),
    }


def _ratio_json(ratio: dict[int, float]) -> dict[str, float]:
    return {LABEL_NAMES.get(k, str(k)): float(v) for k, v in sorted(ratio.items())}


def _save_progress(out_dir: Path, table: np.ndarray, fingerprint: str) -> None:
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    with atomic_write(out_dir / PROGRESS_NAME) as fh:
        fh.write(buf.getvalue())
    with atomic_write(out_dir / PROGRESS_META_NAME, "w") as fh:
        json.dump({"fingerprint": fingerprint, "images": len(table)}, fh)


def _load_progress(out_dir: Path, fingerprint: str, n: int) -> np.ndarray | None:
    """The saved progress table if it belongs to this build, else None."""
    try:
        with open(out_dir / PROGRESS_META_NAME, encoding="utf-8") as fh:
            meta = json.load(fh)
        if meta.get("fingerprint") != fingerprint or meta.get("images") != n:
            return None
        table = np.load(out_dir / PROGRESS_NAME, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if table.dtype != PROGRESS_DTYPE or len(table) != n:
        return None
    return table


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


def _histogram(values: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    bins = DETECTION_BINS
    for a, b in zip(bins, (*bins[1:], None), strict=True):
        n = int(((values >= a) & (values < b)).sum()) if b is not None else int((values >= a).sum())
        name = str(a) if b == a + 1 else (f"{a}-{b - 1}" if b is not None else f"{a}+")
        out[name] = n
    return out


def _label_dict(counts: np.ndarray) -> dict[str, int]:
    return {LABEL_NAMES[lab]: int(c) for lab, c in zip(LABEL_ORDER, counts.tolist(), strict=True)}


def _write_mining_report(path: Path, job: Job, plan: np.ndarray) -> None:
    """Per detection image: what the detector found and how it was labelled (CSV, atomic)."""
    rows = plan[: job.n_det]
    tasks = job.detection_tasks
    frame = pd.DataFrame({"image_id": tasks.ids, "path": tasks.paths,
                          "status": [STATUS_NAME[int(v)] for v in rows["status"]]})
    for k, name in enumerate(MINING_FIELDS):
        frame[name] = rows["mining"][:, k]
    with atomic_write(path, "w") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")


def _mining_report(table: np.ndarray, n_det: int) -> dict[str, Any]:
    rows = table[:n_det]
    mined = rows[rows["status"] == PLANNED]
    totals = dict(zip(MINING_FIELDS, mined["mining"].sum(axis=0).tolist(), strict=True))
    det = mined["mining"][:, MINING_FIELDS.index("detections")]
    pos = max(1, totals["positives"])
    pos_n, part_n = totals["positives"], totals["parts"]
    return {
        "images": len(mined),
        "detections": totals,
        "before_cap": {"positive": pos_n, "part": part_n, "negative": totals["negatives"]},
        "after_cap": {"positive": pos_n, "part": part_n, "negative": totals["negatives_kept"]},
        "negatives_per_positive": round(totals["negatives_kept"] / pos, 3),
        "detections_per_image": _histogram(det),
        "detections_per_image_mean": round(float(det.mean()), 3) if len(det) else 0.0,
    }


ManifestInput = Manifest | str | os.PathLike[str]


def build_dataset(
    detections: ManifestInput,
    landmarks: ManifestInput | None,
    out_dir: str | os.PathLike[str],
    *,
    stage: str = "pnet",
    backend: str = "lmdb",
    crop_recipe: CropRecipe | None = None,
    landmark_recipe: LandmarkRecipe | None = None,
    ratio: dict[int, float] | None = None,
    mix: bool = True,
    allow_repeat: bool = False,
    seed: int = 0,
    workers: int | None = None,
    shard_bytes: int = 256 << 20,
    block_samples: int = 1024,
    roots: dict[str, str] | None = None,
    progress: bool = True,
    detector: Callable[[], Any] | None = None,
    mining_recipe: MiningRecipe | None = None,
    strict: bool = False,
    chunk_images: int | None = None,
    extra_provenance: dict[str, Any] | None = None,
    on_write: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    overwrite: bool = False,
    verify: bool = False,
) -> dict[str, Any]:
    """Build (or resume) a shard directory for `stage`; returns the summary (also in index.json).

    The manifests may be given as paths: the build then holds only their compact task tables, not the
    tables themselves, for its whole run. `ratio` is the neg:pos:part:landmark mix (default 3:1:1:2);
    `mix=False` writes every planned sample. `detector` (rnet/onet) is a zero-argument factory returning
    an object with `.detect(image)` (e.g. CascadeFactory); it is called once inside each worker.
    Progress hooks (tests use them to interrupt a build): `on_plan(images_planned)` after every planned
    chunk, `on_write(samples_in_stream)` after every written chunk.
    A complete dataset in `out_dir` is never modified (facedata.buildoutput): of the same inputs and
    options the summary says `already_complete` (`verify` re-hashes its shards first); of others it is an
    error unless `overwrite`, and then it is replaced only once the new one is complete.
    """
    started = time.perf_counter()
    if stage not in STAGE_SIZE:
        raise FacedataError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_SIZE)}")
    size = STAGE_SIZE[stage]
    crop_recipe = crop_recipe or CropRecipe(size=size)
    landmark_recipe = landmark_recipe or LandmarkRecipe(size=size)
    ratio = dict(DEFAULT_RATIO if ratio is None else ratio)
    if crop_recipe.size != size or landmark_recipe.size != size:
        raise FacedataError(
            f"{stage} samples are {size} px; recipes say {crop_recipe.size}/{landmark_recipe.size}"
        )
    if stage != "pnet":
        if detector is None:
            raise FacedataError(f"build {stage} needs the previous cascade stage(s) as a detector")
        mining_recipe = mining_recipe or MiningRecipe(size=size)
        if mining_recipe.size != size:
            raise FacedataError(f"{stage} samples are {size} px; the mining recipe says {mining_recipe.size}")
        # The labelling thresholds are the crop recipe verify_labels re-derives mined labels with.
        crop_recipe = replace(
            mining_recipe.crop_recipe(), min_face=crop_recipe.min_face,
            interpolation=crop_recipe.interpolation,
        )
    workers = max(1, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers > 1:
        pool_context()  # start the worker server while the manifests are turned into tasks
    out_dir = Path(out_dir)
    record_dtype = sample_dtype(len(landmark_recipe.flip_permutation))

    det_tasks, det_info = _load_tasks(detections, ORIGIN_DETECTIONS, crop_recipe.min_face, roots)
    lmk_tasks, lmk_info = (None, None) if landmarks is None else _load_tasks(
        landmarks, ORIGIN_LANDMARKS, landmark_recipe.min_face, roots
    )
    pa.default_memory_pool().release_unused()  # pyarrow's allocator keeps the freed manifest tables' pages

    provenance: dict[str, Any] = {
        "builder": "facedata.build",
        "facedata_version": __version__,
        "stage": stage,
        "size": size,
        "backend": backend,
        "seed": seed,
        "ratio": _ratio_json(ratio) if mix else None,
        "allow_repeat": allow_repeat,
        "crop_recipe": crop_recipe.to_dict(),
        "landmark_recipe": landmark_recipe.to_dict(),
        "mining_recipe": None if mining_recipe is None else mining_recipe.to_dict(),
        "detector": None if detector is None else _describe(detector),
        "inputs": {"detections": det_info, "landmarks": lmk_info},
        "command_line": command_line(),
        **(extra_provenance or {}),
    }
    layout = shard_layout(backend, (size, size, 3), record_dtype, shard_bytes, block_samples)
    output = prepare_output(out_dir, layout, provenance, overwrite=overwrite, verify=verify)
    if output.existing is not None:
        return _already_complete(output, verify)
    _check_images(det_tasks, "detections")
    if lmk_tasks is not None:
        _check_images(lmk_tasks, "landmarks")
    job = Job(
        stage, size, seed, det_tasks, lmk_tasks, crop_recipe, landmark_recipe, mining_recipe, detector,
        record_dtype, str(output.directory.resolve() / RECORDS_NAME),
    )
    n = job.n
    # Mining an image takes ~40x planning + rendering one: smaller chunks keep the workers evenly busy to
    # the last image (and the plan resumable at a finer grain).
    chunk = chunk_images or max(1, min(4 if stage != "pnet" else 32, -(-n // (workers * 16))))

    runner = _Runner(job, workers)  # fork before any LMDB env exists in this process
    ok = False
    try:
        summary = _run(
            runner, job, output.directory, backend=backend, mix_ratio=ratio if mix else None,
            allow_repeat=allow_repeat, shard_bytes=shard_bytes, block_samples=block_samples,
            provenance=provenance, progress=progress, strict=strict, chunk=chunk, on_write=on_write,
            on_plan=on_plan, started=started,
        )
        ok = True
    except FacedataError:
        if not strict:  # a --strict stop keeps its plan for the retry once the image is mended
            output.discard()
        raise
    finally:
        runner.close(ok)
    output.commit()
    summary.update(seconds=round(time.perf_counter() - started, 3), workers=workers, out_dir=str(out_dir))
    return summary


def _already_complete(output: Output, verified: bool) -> dict[str, Any]:
    """The summary of the complete dataset already at `output.target`, marked as such."""
    index = output.existing
    assert index is not None
    return {**index.get("summary", {}), "already_complete": True, "verified": verified,
            "samples": int(index["samples"]), "shards": len(index["shards"]), "bytes": int(index["bytes"]),
            "out_dir": str(output.target)}


def _check_images(tasks: TaskTable, name: str) -> None:
    """Refuse a build none of whose images of a manifest exist (a wrong image root, not a dataset)."""
    if len(tasks) and not any(os.path.isfile(path) for path in tasks.paths):
        raise FacedataError(
            f"none of the {len(tasks):,} images of the {name} manifest exists (first: {tasks.paths[0]}); "
            "check the image root (--images NAME=DIR)"
        )


def _describe(detector: Callable[[], Any]) -> Any:
    describe = getattr(detector, "describe", None)
    if callable(describe):
        return describe()
    return {"callable": getattr(detector, "__qualname__", type(detector).__name__)}


def _run(
    runner: _Runner, job: Job, out_dir: Path, *, backend: str, mix_ratio: dict[int, float] | None,
    allow_repeat: bool, shard_bytes: int, block_samples: int, provenance: dict[str, Any], progress: bool,
    strict: bool, chunk: int, on_write: Callable[[int], None] | None, on_plan: Callable[[int], None] | None,
    started: float,
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
        out_dir, backend=backend, image_shape=(job.size, job.size, 3), record_dtype=job.record_dtype,
        provenance=provenance, shard_bytes=shard_bytes, block_samples=block_samples, resume=True,
    )
    with writer:
        plan = PlanFile(out_dir, writer.fingerprint, PLAN_DTYPE, job.record_dtype, n)
        resumed_plan = plan.planned
        output = _Output(writer, out_dir, n, skip, on_write)
        single_pass = mix_ratio is None
        output.begin(plan.planned if single_pass else n)
        resumed_from = output.start
        try:
            if single_pass:  # images planned by an earlier run are rendered from the plan file
                _render_pass(runner, job, plan, output, output.start, plan.planned, None, chunk, progress)
            _plan_pass(runner, job, plan, output, single_pass, chunk, progress, strict, skip, on_plan)
        finally:
            plan.close()
        if job.stage != "pnet":
            _write_mining_report(out_dir / MINING_REPORT_NAME, job, plan.table)
        mix = None
        if not single_pass:
            totals = plan.table["labels"][plan.table["status"] == PLANNED].sum(axis=0)
            counts = {lab: int(c) for lab, c in zip(LABEL_ORDER, totals.tolist(), strict=True)}
            mix = mixing_plan(counts, mix_ratio, allow_repeat)
            _render_pass(runner, job, plan, output, output.start, n, mix, chunk, progress)
        summary = _summary(job, plan.table, output.table, skipped, mix)
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


class _Output:
    """The sample stream into the writer: per-image progress, resume point, dropping what is durable."""

    def __init__(
        self, writer: DatasetWriter, out_dir: Path, n: int, skip: Callable[..., None],
        on_write: Callable[[int], None] | None,
    ) -> None:
        self.writer, self.out_dir, self.skip, self.on_write = writer, out_dir, skip, on_write
        self.table = np.zeros(n, PROGRESS_DTYPE)
        self.done = self.last_saved = writer.samples_done
        saved = _load_progress(out_dir, writer.fingerprint, n) if self.done else None
        if saved is not None:
            self.table[:] = saved
        self.start, self.position = _resume_point(self.table if saved is not None else None, self.done)
        self.notes: dict[int, str] = {}  # details of images that failed while planning (two passes)

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
            _save_progress(self.out_dir, self.table, self.writer.fingerprint)
            self.last_saved = self.writer.samples_done
        if self.on_write is not None:
            self.on_write(self.position)


def _render_pass(
    runner: _Runner, job: Job, plan: PlanFile, output: _Output, lo: int, hi: int, mix: MixPlan | None,
    chunk: int, progress: bool,
) -> None:
    """Pass 2 over planned images [lo, hi): mix, decode, render, write."""
    if hi <= lo:
        return
    offsets = plan.offsets()
    todo = list(_chunks(lo, hi, chunk))
    jobs = ((a, b, plan.table[a:b], int(offsets[a]), mix) for a, b in todo)
    bar = tqdm(total=hi - lo, desc="render", unit="img", disable=not progress)
    for (a, b), result in zip(todo, runner.ordered(render_chunk, jobs), strict=True):
        output.consume(a, b, result)
        bar.update(b - a)
    bar.close()


def _plan_pass(
    runner: _Runner, job: Job, plan: PlanFile, output: _Output, single_pass: bool, chunk: int, progress: bool,
    strict: bool, skip: Callable[..., None], on_plan: Callable[[int], None] | None,
) -> None:
    """Pass 1 from where an earlier run left off: every image's records into the plan file, in order;
    with `single_pass` rendered and written too. In two passes failed images are reported by pass 2
    (which sees their status; their details wait in `output.notes`); `strict` stops here already."""
    n = job.n
    todo = list(_chunks(plan.planned, n, chunk))
    desc = "mine" if job.stage != "pnet" else "plan"
    bar = tqdm(total=n, initial=plan.planned, desc=desc, unit="img", disable=not progress)
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


def _summary(
    job: Job, plan: np.ndarray, table: np.ndarray, skipped: list[dict[str, str]], mix: MixPlan | None
) -> dict[str, Any]:
    n_det = job.n_det
    ok = plan["status"] == PLANNED
    per_origin = {
        "detections": _label_dict(table["counts"][:n_det].sum(axis=0)),
        "landmarks": _label_dict(table["counts"][n_det:].sum(axis=0)),
    }
    summary: dict[str, Any] = {
        "stage": job.stage,
        "size": job.size,
        "images": {"detections": n_det, "landmarks": job.n - n_det, "skipped": len(skipped)},
        "planned": _label_dict(plan["labels"][ok].sum(axis=0)),
        "samples_by_origin": per_origin,
        "shortages": [] if mix is None else list(mix.shortages),
        "mixing": "off: every planned sample written" if mix is None else mix.to_dict(),
        "skipped": skipped,
    }
    if job.stage != "pnet":
        summary["mining"] = _mining_report(plan, n_det)
        summary["mining"]["per_image_report"] = MINING_REPORT_NAME
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The CLI's final table: samples per label, shards, bytes, seconds, shortages, skipped images."""
    if summary.get("already_complete"):
        checked = "shards re-hashed" if summary["verified"] else "shard sizes checked; --verify re-hashes"
        return (f"{summary['out_dir']}: already complete with these inputs and options "
                f"({summary['samples']:,} samples in {summary['shards']} shard(s), {checked}); nothing written")
    lines = [f"{summary['stage']} shards ({summary['size']} px) in {summary.get('out_dir', '?')}", ""]
    lines.append(f"{'label':<10} {'samples':>12}")
    for name in ("negative", "positive", "part", "landmark"):
        lines.append(f"{name:<10} {summary['label_counts'].get(name, 0):>12,}")
    lines.append(f"{'total':<10} {summary['samples']:>12,}")
    planned = summary.get("planned")
    if planned:
        mixing = summary.get("mixing")
        ratio = mixing.get("ratio", {}) if isinstance(mixing, dict) else {}
        mixed = "mixed at " + ":".join(f"{ratio.get(str(lab), 0):g}" for lab in LABEL_ORDER) if ratio else "no mixing"
        lines.append("planned before mixing: " + ", ".join(f"{k} {v:,}" for k, v in planned.items()) + f" ({mixed})")
    lines.append("")
    mb = summary["bytes"] / 1e6
    lines.append(
        f"shards {summary['shards']}, {mb:,.1f} MB, {summary['seconds']:.1f} s"
        f" with {summary['workers']} worker(s)"
    )
    images = summary["images"]
    lines.append(f"images: {images['detections']:,} detection, {images['landmarks']:,} landmark, "
                 f"{images['skipped']:,} skipped")
    if summary.get("resumed_plan_from_image"):
        done = "mined" if summary["stage"] != "pnet" else "planned"
        lines.append(f"resumed: {summary['resumed_plan_from_image']:,} images already {done} were not redone")
    if summary.get("resumed_from_sample"):
        lines.append(f"resumed after {summary['resumed_from_sample']:,} samples already in complete shards")
    mining = summary.get("mining")
    if mining:
        b, a = mining["before_cap"], mining["after_cap"]
        lines.append(f"mined: {mining['images']:,} images, {mining['detections']['detections']:,} detections "
                     f"(mean {mining['detections_per_image_mean']} per image)")
        lines.append(f"  before cap: pos {b['positive']:,} part {b['part']:,} neg {b['negative']:,}; "
                     f"after cap: neg {a['negative']:,} ({mining['negatives_per_positive']} per positive)")
        hist = ", ".join(f"{k}: {v}" for k, v in mining["detections_per_image"].items())
        lines.append(f"  detections per image: {hist} (each image: {mining['per_image_report']})")
    for text in summary["shortages"]:
        lines.append(f"shortage: {text}")
    for item in summary["skipped"][:20]:
        lines.append(f"skipped {item['path']}: {item['reason']}")
    if len(summary["skipped"]) > 20:
        lines.append(f"... and {len(summary['skipped']) - 20} more skipped images (see index.json summary)")
    return "\n".join(lines)


def recipes_from_index(index: dict[str, Any]) -> tuple[CropRecipe, LandmarkRecipe]:
    """The recipes a dataset was built with (from its provenance), for `verify --labels`."""
    prov = index.get("provenance", {})
    crop, lmk = prov.get("crop_recipe"), prov.get("landmark_recipe")
    if crop is None or lmk is None:
        raise FacedataError("index.json has no recipe provenance (not built by facedata build)")
    try:
        return CropRecipe(**crop), LandmarkRecipe(**lmk)
    except TypeError as exc:
        raise FacedataError(
            f"index.json recipe provenance does not fit this facedata version ({exc})"
        ) from None


def check_inputs(index: dict[str, Any], detections: Manifest | None, landmarks: Manifest | None) -> list[str]:
    """Warnings when the manifests given differ from those the dataset was built from."""
    inputs = index.get("provenance", {}).get("inputs", {})
    notes = []
    for key, manifest in (("detections", detections), ("landmarks", landmarks)):
        recorded = inputs.get(key)
        if manifest is None or recorded is None:
            continue
        if recorded.get("sha256") != manifest_sha256(manifest):
            notes.append(f"the {key} manifest differs from the one this dataset was built from")
    return notes


def verify_build_labels(
    path: str | os.PathLike[str],
    detections: Manifest | None,
    landmarks: Manifest | None,
    max_listed: int = 20,
) -> tuple[Any, list[str]]:
    """Re-derive every sample's label and targets with the recipes recorded in the index.

    Returns (facedata.labels.LabelReport, warnings about manifests that differ from the build's).
    """
    from facedata.labels import verify_labels
    from facedata.storage import ShardedDataset

    dataset = ShardedDataset(path)
    crop_recipe, landmark_recipe = recipes_from_index(dataset.index)
    notes = check_inputs(dataset.index, detections, landmarks)
    try:
        report = verify_labels(
            dataset, detections, landmarks, crop_recipe=crop_recipe, landmark_recipe=landmark_recipe,
            max_listed=max_listed,
        )
    finally:
        dataset.close()
    return report, notes


# --------------------------------------------------------------------------------- option parsing

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 1 << 10, "m": 10**6, "mb": 10**6, "mib": 1 << 20,
          "g": 10**9, "gb": 10**9, "gib": 1 << 30}


def parse_size(text: str) -> int:
    """'256MB', '64MiB', '1G', '1000000' -> bytes."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("kmgib")
    unit = raw[len(number):]
    try:
        value = float(number)
    except ValueError:
        raise FacedataError(f"bad size {text!r}; use e.g. 256MB, 64MiB or a byte count") from None
    if unit not in _UNITS or value <= 0:
        raise FacedataError(f"bad size {text!r}; use e.g. 256MB, 64MiB or a byte count")
    return int(value * _UNITS[unit])


def parse_ratio(text: str) -> dict[int, float] | None:
    """'neg:pos:part:landmark', e.g. '3:1:1:2' -> {0: 3, 1: 1, -1: 1, -2: 2}; 'all' -> None (no mixing)."""
    if text.strip().lower() == "all":
        return None
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(0 <= v < math.inf for v in values):
        raise FacedataError(f"Invalid value for '--ratio': expected neg:pos:part:landmark, four finite numbers "
                            f">= 0 such as 3:1:1:2, or 'all'; got {text!r}")
    if values[1] == 0:
        raise FacedataError(f"Invalid value for '--ratio': the positive share must be > 0 (the mix is anchored "
                            f"on the positives), got {text!r}")
    return dict(zip(LABEL_ORDER, values, strict=True))


def parse_roots(values: Iterable[str], names: Iterable[str]) -> dict[str, str] | None:
    """--images NAME=DIR (repeatable); a bare DIR is allowed when the manifests use one root name
    (`names`: the root names they use, e.g. from Manifest.root_names)."""
    values = list(values)
    if not values:
        return None
    names = sorted(set(names))
    roots: dict[str, str] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep:
            if len(names) != 1:
                raise FacedataError(
                    f"--images {value!r}: the manifests use image roots {names}; say which as NAME=DIR"
                )
            name, directory = names[0], value
        roots[name] = str(Path(directory).resolve())
    return roots
