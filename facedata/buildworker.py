"""What every build worker process runs: planning and rendering stream images of a `Job`.

Kept apart from facedata.build (the orchestration in the parent) so that the worker server imports only
numpy, OpenCV and the samplers (no pandas, pyarrow or storage backends): the pool starts faster, and
every worker is smaller. A stage's per-worker model (e.g. onnxruntime sessions) is built on first use.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facedata import imageio
from facedata.buildplan import read_records
from facedata.samplers.mixing import MixPlan, select
from facedata.samplers.tasks import ImageTask, TaskTable
from facedata.samples import LABEL_ORDER
from facedata.stages import BuildConfig, Stage

# Per-image status in the plan and progress tables.
PENDING, WRITTEN, UNREADABLE, MISSING, WRONG_SIZE, TRUNCATED, TOO_LARGE = 0, 1, 2, 3, 4, 5, 6
PLANNED = WRITTEN  # plan table: the image's records are in the plan file
STATUS_NAME = {PENDING: "pending", UNREADABLE: "unreadable", MISSING: "missing", WRONG_SIZE: "wrong size",
               TRUNCATED: "truncated", TOO_LARGE: "too large"}
STATUS_REASON = {
    UNREADABLE: "cannot be decoded",
    MISSING: "file not found",
    WRONG_SIZE: "decoded size differs from the manifest",
    TRUNCATED: "truncated file (not rendered)",
    TOO_LARGE: "image too large (not decoded)",
}
_IMAGE_ERROR_STATUS = {imageio.MISSING: MISSING, imageio.UNREADABLE: UNREADABLE, imageio.TRUNCATED: TRUNCATED,
                       imageio.TOO_LARGE: TOO_LARGE}


def plan_dtype(counters: int) -> np.dtype:
    """Rows of the plan table: one per stream image."""
    return np.dtype(
        [
            ("status", "i1"),
            ("records", "<i8"),  # planned records in the plan file (before mixing)
            ("labels", "<i8", (len(LABEL_ORDER),)),  # planned records per label
            ("counters", "<i8", (max(1, counters),)),  # the stage's per-image counters (Stage.counters)
        ]
    )


PROGRESS_DTYPE = np.dtype(
    [
        ("status", "i1"),
        ("counts", "<i8", (len(LABEL_ORDER),)),  # samples this image contributes to the stream
    ]
)


def interleaved_stream(n_detections: int, n_landmarks: int) -> np.ndarray:
    """Stream position -> combined image index (detection i is i, landmark k is n_detections + k).

    The two manifests are merged evenly, each in its own order: detection i sits at (i + 1/2) / D of the
    stream and landmark k at (k + 1/2) / L (a tie puts the detection first). Landmark samples are thus
    spread over every shard and read unit instead of filling the tail, so the readers' unit-local shuffle
    mixes all four classes on any backend. A pure function of the two counts: worker-invariant.
    """
    d = np.arange(n_detections, dtype=np.int64)
    k = np.arange(n_landmarks, dtype=np.int64)
    keys = np.concatenate([(2 * d + 1) * max(n_landmarks, 1), (2 * k + 1) * max(n_detections, 1)])
    return np.argsort(keys, kind="stable").astype(np.int64)


@dataclass
class Job:
    """Everything workers need; sent once to each worker. The stream interleaves detection and landmark
    images (`interleaved_stream`); stream image j is `task(j)`."""

    stage: Stage
    seed: int
    detection_tasks: TaskTable
    landmark_tasks: TaskTable | None
    config: BuildConfig
    record_dtype: np.dtype
    plan_path: str  # the plan file pass 2 reads its records from
    _stream: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        return self.stage.size

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.stage.image_shape(self.config)

    @property
    def n_det(self) -> int:
        return len(self.detection_tasks)

    @property
    def n(self) -> int:
        return self.n_det + (0 if self.landmark_tasks is None else len(self.landmark_tasks))

    @property
    def plan_dtype(self) -> np.dtype:
        return plan_dtype(len(self.stage.counters))

    @property
    def stream(self) -> np.ndarray:
        """Combined image index of every stream position (computed once per process, 8 bytes an image)."""
        if self._stream is None:
            self._stream = interleaved_stream(self.n_det, self.n - self.n_det)
        return self._stream

    @property
    def detection_positions(self) -> np.ndarray:
        """Stream positions of the detection images, in detection-manifest order."""
        return np.flatnonzero(self.stream < self.n_det)

    def task(self, j: int) -> ImageTask:
        c = int(self.stream[j])
        if c < self.n_det:
            return self.detection_tasks[c]
        assert self.landmark_tasks is not None
        return self.landmark_tasks[c - self.n_det]


_JOB: Job | None = None
_MODEL: Any = None
_THREADS_BEFORE: int | None = None  # OpenCV's thread count before a job was installed


def init_worker(job: Job | None, limit_threads: bool = False) -> None:
    """Install the job of this process (None: forget it). `limit_threads`: a process of its own (pool or Dask
    worker), one per core.

    Builds render on one OpenCV thread in every process, the build's own (workers=1) included, and forgetting
    the job gives that process its thread count back: OpenCV 5.1's warpAffine gives other pixels on other
    thread counts (1, 2 and 4 threads gave three different top-down shards of the same crops; 5.0 and 4.x did
    not), so the bytes would depend on the worker count."""
    global _JOB, _MODEL, _THREADS_BEFORE
    _JOB, _MODEL = job, None
    if job is not None and _THREADS_BEFORE is None:
        _THREADS_BEFORE = cv2.getNumThreads()
        cv2.setNumThreads(1)
    elif job is None and _THREADS_BEFORE is not None:
        cv2.setNumThreads(_THREADS_BEFORE)
        _THREADS_BEFORE = None
    if limit_threads:
        reuse_freed_memory()


def reuse_freed_memory() -> None:
    """Under a pinned MALLOC_TRIM_THRESHOLD_, let glibc's malloc keep freed image-sized blocks for the next
    image (glibc only; elsewhere, or without the variable, nothing changes).

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also pins the mmap threshold at its
    128 KB default: every decoded photo (2 MB for 1024x700) is then a fresh mmap whose pages fault in, and
    decoding took twice as long in a Dask worker as in a plain process (measured: 0.25 s against 0.12 s per 300
    JPEGs). Blocks up to 32 MB come from the heap again, which keeps up to 128 MB free at its top: the limits
    glibc's dynamic thresholds would reach by themselves, which a plain process (the local pool's) keeps."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def use_job(job: Job) -> None:
    """Install `job` unless it is installed already (its model is kept): every task of a Dask worker."""
    if _JOB is not job:
        init_worker(job, True)


def forget_job(job: Job) -> None:
    """Drop `job` and its model if it is this process's job."""
    if _JOB is job:
        init_worker(None)


def current_job() -> Job:
    """The job installed in this process (by init_worker or use_job)."""
    assert _JOB is not None, "no build job is installed in this process"
    return _JOB


def _model() -> Any:
    """The stage's per-worker model (e.g. the previous cascade stages), built on first use."""
    global _MODEL
    if _MODEL is None:
        assert _JOB is not None and _JOB.config.detector is not None
        _MODEL = _JOB.config.detector()
    return _MODEL


def _as_dtype(records: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Records in the dataset's dtype (crop planners use 5 points; other schemes differ)."""
    if records.dtype == dtype:
        return records
    out = np.zeros(len(records), dtype)
    for name in dtype.names or ():
        if name != "landmarks" and name in (records.dtype.names or ()):
            out[name] = records[name]
    return out


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Samples per label in LABEL_ORDER."""
    labels = np.asarray(labels)
    return np.array([int((labels == lab).sum()) for lab in LABEL_ORDER], np.int64)


def _read_image(task: ImageTask) -> tuple[np.ndarray | None, int, str | None]:
    """(decoded BGR image or None, status, note): missing, undecodable, truncated and wrong-size images fail."""
    try:
        image = imageio.read_image(task.path)
    except imageio.ImageError as exc:
        return None, _IMAGE_ERROR_STATUS[exc.kind], None if exc.kind == imageio.MISSING else exc.detail
    if image.shape[:2] != (task.height, task.width):
        note = f"decoded {image.shape[1]}x{image.shape[0]}, manifest says {task.width}x{task.height}"
        return None, WRONG_SIZE, note
    return image, WRITTEN, None


@dataclass
class ChunkResult:
    """Samples of a chunk of stream images ready for the writer, in order."""

    pixels: np.ndarray  # (n, size, size, 3) uint8
    records: np.ndarray
    progress: np.ndarray  # (hi - lo,) PROGRESS_DTYPE
    notes: dict[int, str] = field(default_factory=dict)  # stream index -> detail for skipped images


@dataclass
class PlanResult:
    rows: np.ndarray  # (hi - lo,) Job.plan_dtype
    records: np.ndarray  # all planned records of the chunk, image after image
    notes: dict[int, str] = field(default_factory=dict)  # stream index -> detail for failed images
    rendered: ChunkResult | None = None  # single pass: the same records with their pixels


class Samples:
    """One chunk's per-image progress and its rendered samples; `keep(n)` (a Dask piece: its shard's range)
    says which of an image's n samples the result keeps, all by default."""

    def __init__(self, job: Job, lo: int, hi: int, keep: Callable[[int], slice] | None = None) -> None:
        self.job, self.lo, self.keep = job, lo, keep
        self.progress = np.zeros(hi - lo, PROGRESS_DTYPE)
        self.pixels: list[np.ndarray] = []
        self.records: list[np.ndarray] = []
        self.notes: dict[int, str] = {}

    def add(self, j: int, records: np.ndarray, image: np.ndarray | None) -> None:
        """Render image j's kept records (decoding it unless `image` is given; not at all if none kept)."""
        row, job = j - self.lo, self.job
        self.progress["status"][row] = WRITTEN
        if len(records) == 0:
            return
        if image is None:
            image, status, note = _read_image(job.task(j))
            if image is None:
                self.fail(j, status, note)
                return
        self.progress["counts"][row] = label_counts(records["label"])
        part = slice(None) if self.keep is None else self.keep(len(records))
        self.pixels.append(job.stage.render(image, records, job.task(j).origin, job.config)[part])
        self.records.append(records[part])

    def fail(self, j: int, status: int, note: str | None) -> None:
        self.progress["status"][j - self.lo] = status
        if note:
            self.notes[j] = note

    def result(self) -> ChunkResult:
        job = self.job
        pixels = np.concatenate(self.pixels) if self.pixels else np.zeros((0, *job.image_shape), np.uint8)
        records = np.concatenate(self.records) if self.records else np.zeros(0, job.record_dtype)
        return ChunkResult(pixels, records, self.progress, self.notes)


def _plan_image(job: Job, j: int) -> tuple[np.ndarray | None, int, str | None, np.ndarray | None, Any]:
    """(records or None, status, note, the decoded image if planning needed it, counters or None).

    Images the stage plans from geometry are not decoded (only their file's existence is checked).
    """
    task = job.task(j)
    image = None
    if job.stage.decodes(task.origin):
        image, status, note = _read_image(task)
        if image is None:
            return None, status, note, None, None
    elif not os.path.isfile(task.path):
        return None, MISSING, None, None, None
    records, counters = job.stage.plan(task, job.config, job.seed, image, _model)
    return _as_dtype(records, job.record_dtype), PLANNED, None, image, counters


def plan_chunk(lo: int, hi: int, single_pass: bool = False) -> PlanResult:
    """Pass 1: the unmixed records of stream images [lo, hi). With `single_pass` (no mixing: every
    planned sample is written) they are rendered at once too, each image decoded at most once."""
    job = _JOB
    assert job is not None
    rows = np.zeros(hi - lo, job.plan_dtype)
    parts: list[np.ndarray] = []
    notes: dict[int, str] = {}
    samples = Samples(job, lo, hi) if single_pass else None
    for row, j in enumerate(range(lo, hi)):
        records, status, note, image, counters = _plan_image(job, j)
        rows["status"][row] = status
        if records is None:
            if note:
                notes[j] = note
            if samples is not None:
                samples.fail(j, status, note)
            continue
        if counters is not None:
            rows["counters"][row, : len(counters)] = counters
        rows["records"][row] = len(records)
        rows["labels"][row] = label_counts(records["label"])
        parts.append(records)
        if samples is not None:
            samples.add(j, records, image)
    records = np.concatenate(parts) if parts else np.zeros(0, job.record_dtype)
    return PlanResult(rows, records, notes, None if samples is None else samples.result())


def mixed_records(
    lo: int, hi: int, plan: np.ndarray, first: int, mix: MixPlan | None
) -> Iterator[tuple[int, np.ndarray | None]]:
    """(stream image j, the records of j that the mix keeps, or None if j failed while planning) for the
    images [lo, hi), whose plan table rows are `plan` and whose records start at `first` in the plan file."""
    job = _JOB
    assert job is not None
    ends = np.cumsum(plan["records"])
    planned = read_records(job.plan_path, job.record_dtype, first, first + int(ends[-1]))
    for row, j in enumerate(range(lo, hi)):
        if plan["status"][row] != PLANNED:
            yield j, None
            continue
        records = planned[ends[row] - plan["records"][row] : ends[row]]
        yield j, records if mix is None else select(records, job.task(j).image_id, job.seed, mix)


def render_images(samples: Samples, images: Iterator[tuple[int, np.ndarray | None]], plan: np.ndarray) -> None:
    """Render each image's kept records into `samples`, each image decoded once; an image that failed
    while planning keeps its status."""
    for j, records in images:
        if records is None:
            samples.fail(j, int(plan["status"][j - samples.lo]), None)
        else:
            samples.add(j, records, None)


def render_chunk(lo: int, hi: int, plan: np.ndarray, first: int, mix: MixPlan | None) -> ChunkResult:
    """Pass 2: mix and render stream images [lo, hi), each image decoded once. `plan` holds their
    plan table rows, `first` the position of image lo's records in the plan file."""
    job = _JOB
    assert job is not None
    samples = Samples(job, lo, hi)
    render_images(samples, mixed_records(lo, hi, plan, first, mix), plan)
    return samples.result()


def count_chunk(lo: int, hi: int, plan: np.ndarray, first: int, mix: MixPlan | None) -> np.ndarray:
    """The samples per label each stream image of [lo, hi) will contribute if it decodes (the mix's choice,
    from the plan file alone): engines whose workers write the shards place them with these counts."""
    counts = np.zeros((hi - lo, len(LABEL_ORDER)), np.int64)
    for j, records in mixed_records(lo, hi, plan, first, mix):
        if records is not None:
            counts[j - lo] = label_counts(records["label"])
    return counts
