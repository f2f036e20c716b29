"""`facedata build STAGE`: manifests -> planned, mixed, rendered crops -> sharded dataset.

The build is one deterministic *sample stream*: detection-manifest and landmark-manifest images, each in
manifest order, interleaved evenly (`buildworker.interleaved_stream`, so landmark samples are spread over
every shard rather than written last); each image contributes the records its planner (or the
cascade + `label_detections`) produces, filtered by the class mix, in planner order. Every random draw
and every mixing decision is a function of (seed, image id), so the stream, and therefore every shard
byte (the writer rolls shards over at fixed sample counts), is the same for any worker count and any
chunking.

Two passes, the same for every stage:
1. *plan*: every image's full record list, before mixing, appended in stream order to the plan file
   (facedata.buildplan, on disk beside the shards), by the stage's planner (facedata.stages: one module
   per stage, the orchestration knows only their interface). PNet plans crop and landmark images from
   geometry alone (no decoding); for RNet/ONet each detection image is decoded and run through the
   previous stages (PNet for rnet, PNet + RNet for onet; the ONNX sessions are created inside each worker
   by `detector`, a factory, never pickled), and its detections are labelled (negatives capped per
   image). The detector runs once per image, however the build is resumed.
2. *render*: the class totals give per-label keep probabilities (`mixing_plan`, neg:pos:part:landmark
   3:1:1:2 by default, anchored on the positives, mined or not; short classes reported, repeated only
   with `allow_repeat`; `mix=False` keeps everything); each worker reads its chunk's records from the
   plan file, `select`s, decodes each image once (cv2.imread, IMREAD_COLOR) and renders the kept crops;
   the parent writes results in image order.
Without mixing (`mix=False`, CLI `--ratio all`) every planned sample is written, so on the local engine
both passes are one:
each worker renders what it has just planned, from the image it has just decoded (mined images are
decoded once, not twice) and the samples go straight to the writer; the plan file is still kept for
resuming and for the mining report.

The chunks run on an engine (facedata.engines): the local process pool, whose results are written here in
image order, or a Dask cluster whose tasks run the same worker functions and write whole shards themselves,
cut at the same samples (facedata.shardedrender): the same bytes on every engine. Local workers are
started with forkserver (spawn off Linux): a plain fork of a process whose OpenCV thread pool has run can
deadlock. As with any spawn-style pool, scripts calling
build_dataset with workers > 1 need an `if __name__ == "__main__":` guard, and a `detector` factory must
be picklable (CascadeFactory is; live in-process models need workers=1).

Memory is bounded: workers get image-index ranges (the task list is sent once per worker), at most
`4 x workers` chunks are in flight (Pool.imap has no back-pressure, so a bounded window of ordered
futures is used instead) and the parent holds one chunk's records or pixels at a time plus two small
per-image tables; the planned records themselves live in the plan file.

Resume (facedata.buildrun): the plan resumes at image granularity and the shards at the last complete
one; an interrupted build ends byte-identical to an uninterrupted one. The output directory's life
(facedata.buildoutput): a complete dataset is never modified by a rerun, and replaced with `overwrite`
only once the new one is complete. Unreadable or missing images are skipped and named in the summary
(`strict=True` raises instead).

Modules: this one (the entry point), facedata.stages (what each stage plans and renders),
facedata.buildrun (the passes, resume), facedata.buildworker (what workers run), facedata.engines (where
they run: facedata.workerpool, the process pool; facedata.daskrunner, Dask), facedata.shardedrender and
facedata.shardworker (the render pass when workers write the shards), facedata.buildplan (the
plan file), facedata.buildoutput (the output directory), facedata.buildprovenance (input hashes),
facedata.buildsummary (the summary), facedata.buildoptions (option values).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import cv2
import pyarrow as pa

from facedata import __version__
from facedata.buildoptions import parse_ratio, parse_roots, parse_size
from facedata.buildoutput import Output, output_lock, prepare_output
from facedata.buildplan import RECORDS_NAME
from facedata.buildprovenance import ManifestInput, load_tasks, manifest_sha256, ratio_json
from facedata.buildrun import PROGRESS_NAME, run_build
from facedata.buildsummary import format_summary
from facedata.buildworker import Job
from facedata.engines import Engine
from facedata.errors import FacedataError
from facedata.manifest import command_line
from facedata.paths import full_disk_error
from facedata.samplers.crops import CropRecipe
from facedata.samplers.landmarks import LandmarkRecipe
from facedata.samplers.mined import MiningRecipe
from facedata.samplers.mixing import DEFAULT_RATIO
from facedata.samplers.tasks import TaskTable
from facedata.samples import LABEL_NAMES, LABEL_POSITIVE, ORIGIN_DETECTIONS, ORIGIN_LANDMARKS
from facedata.stages import STAGES, Stage
from facedata.stages.mined import MINING_REPORT_NAME, CascadeFactory
from facedata.storage.writer import shard_layout

__all__ = [
    "MINING_REPORT_NAME", "PROGRESS_NAME", "CascadeFactory", "build_dataset", "format_summary",
    "manifest_sha256", "parse_ratio", "parse_roots", "parse_size",
]


def build_dataset(
    detections: ManifestInput,
    landmarks: ManifestInput | None,
    out_dir: str | os.PathLike[str],
    *,
    stage: str | Stage = "pnet",
    backend: str = "lmdb",
    crop_recipe: CropRecipe | None = None,
    landmark_recipe: LandmarkRecipe | None = None,
    ratio: dict[int, float] | None = None,
    mix: bool = True,
    allow_repeat: bool = False,
    seed: int = 0,
    workers: int | None = None,
    shard_bytes: int = 256 << 20,
    block_samples: int | None = None,
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
    encoding: str = "raw",
    engine: Engine | None = None,
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
    `encoding` stores each sample's image raw or as one PNG/JPEG (facedata.storage.codec).
    `engine` runs the chunks (facedata.engines: the local pool by default, or Dask; `workers` is the
    pool's or the LocalCluster's size); every engine writes the same bytes.
    """
    started = time.perf_counter()
    spec = STAGES.get(stage) if isinstance(stage, str) else stage  # a Stage: a registered one with its inputs
    config = spec.configure(crop_recipe, landmark_recipe, mining_recipe, detector)
    ratio = dict(DEFAULT_RATIO if ratio is None else ratio)
    if mix and not (all(0 <= v < math.inf for v in ratio.values()) and ratio.get(LABEL_POSITIVE, 0) > 0):
        raise FacedataError(f"ratio {ratio}: every share must be a finite number >= 0, the positives' > 0")
    engine = engine or Engine()
    engine.check(workers)
    workers = max(1, os.cpu_count() or 1) if workers is None else max(1, workers)
    engine.prepare(workers)  # e.g. start the worker server while the manifests are turned into tasks
    record_dtype = spec.record_dtype(config)

    det_tasks, det_info = load_tasks(detections, ORIGIN_DETECTIONS, spec.size_rule(ORIGIN_DETECTIONS, config), roots)
    lmk_tasks, lmk_info = (None, None) if landmarks is None else load_tasks(
        landmarks, ORIGIN_LANDMARKS, spec.size_rule(ORIGIN_LANDMARKS, config), roots
    )
    pa.default_memory_pool().release_unused()  # pyarrow's allocator keeps the freed manifest tables' pages

    provenance: dict[str, Any] = {
        "builder": "facedata.build",
        "facedata_version": __version__,
        # OpenCV 4.x rounds warpAffine's source points to 1/32 px, 5.x does not: rotated crops differ between them
        "opencv_version": cv2.__version__,
        "stage": spec.name,
        "size": spec.size,
        "backend": backend,
        "seed": seed,
        "ratio": ratio_json(ratio) if mix else None,
        "allow_repeat": allow_repeat,
        "stream": "interleaved",  # detection and landmark images merged evenly (buildworker.interleaved_stream)
        **spec.provenance(config),
        "inputs": {"detections": det_info, "landmarks": lmk_info},
        "command_line": command_line(),
        **(extra_provenance or {}),
    }
    layout = shard_layout(backend, spec.image_shape(config), record_dtype, shard_bytes, block_samples, encoding)
    with output_lock(out_dir):  # one build at a time per DIR
        output = prepare_output(out_dir, layout, provenance, overwrite=overwrite, verify=verify)
        if output.existing is not None:
            return _already_complete(output, verify)
        _check_images(det_tasks, "detections")
        if lmk_tasks is not None:
            _check_images(lmk_tasks, "landmarks")
        plan_path = str(output.directory.resolve() / RECORDS_NAME)
        job = Job(spec, seed, det_tasks, lmk_tasks, config, record_dtype, plan_path)
        runner = engine.runner(job, workers, progress)  # fork before any LMDB env exists in this process
        chunk = chunk_images or max(1, min(spec.chunk_images, -(-job.n // (runner.slots * 16))))
        ok = False
        # a full disk keeps the finished shards (and the plan) for the rerun, once there is space again
        with full_disk_error(output.target, "free some space and run the same command again: it resumes"):
            try:
                summary = run_build(
                    runner, job, output.directory, backend=backend, mix_ratio=ratio if mix else None,
                    allow_repeat=allow_repeat, shard_bytes=shard_bytes, block_samples=block_samples,
                    provenance=provenance, progress=progress, strict=strict, chunk=chunk, on_write=on_write,
                    on_plan=on_plan, started=started, encoding=encoding,
                )
                ok = True
            except FacedataError:
                if not strict:  # a --strict stop keeps its plan for the retry once the image is mended
                    output.discard()
                raise
            finally:
                runner.close(ok)
        output.commit()
        summary.update(seconds=round(time.perf_counter() - started, 3), engine=engine.name, workers=runner.slots,
                       out_dir=str(out_dir))
        return summary


def _already_complete(output: Output, verified: bool) -> dict[str, Any]:
    """The summary of the complete dataset already at `output.target`, marked as such."""
    index = output.existing
    assert index is not None
    labels = {LABEL_NAMES.get(int(k), k): v for k, v in index["label_counts"].items()}
    return {**index.get("summary", {}), "already_complete": True, "verified": verified,
            "samples": int(index["samples"]), "shards": len(index["shards"]), "bytes": int(index["bytes"]),
            "label_counts": labels, "out_dir": str(output.target)}


def _check_images(tasks: TaskTable, name: str) -> None:
    """Refuse a build none of whose images of a manifest exist (a wrong image root, not a dataset)."""
    if len(tasks) and not any(os.path.isfile(path) for path in tasks.paths):
        raise FacedataError(
            f"none of the {len(tasks):,} images of the {name} manifest exist (first: {tasks.paths[0]}); "
            "check the image root (--images NAME=DIR)"
        )
