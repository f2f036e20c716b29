"""What every build worker process runs: planning and rendering stream images of a `Job`.

Kept apart from facedata.build (the orchestration in the parent) so that the worker server imports only
numpy, OpenCV and the samplers (no pandas, pyarrow or storage backends): the pool starts faster, and
every worker is smaller. The detector (onnxruntime) is imported only by mining workers, on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facedata.buildplan import read_records
from facedata.paths import sha256_file
from facedata.samplers.crops import CropRecipe, plan_crops
from facedata.samplers.landmarks import LandmarkRecipe, plan_landmarks
from facedata.samplers.mined import MiningCounts, MiningRecipe, label_detections
from facedata.samplers.mixing import MixPlan, select
from facedata.samplers.render import render
from facedata.samplers.tasks import ImageTask, TaskTable
from facedata.samples import LABEL_LANDMARK, LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE

# Column order of every per-label count table of the build.
LABEL_ORDER = (LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_PART, LABEL_LANDMARK)

# Per-image status in the plan and progress tables.
PENDING, WRITTEN, UNREADABLE, MISSING, WRONG_SIZE = 0, 1, 2, 3, 4
PLANNED = WRITTEN  # plan table: the image's records are in the plan file
STATUS_REASON = {
    UNREADABLE: "cannot be decoded (cv2.imread returned nothing)",
    MISSING: "file not found",
    WRONG_SIZE: "decoded size differs from the manifest",
}
MINING_FIELDS = tuple(f.name for f in fields(MiningCounts))
PLAN_DTYPE = np.dtype(
    [
        ("status", "i1"),
        ("records", "<i8"),  # planned records in the plan file (before mixing)
        ("labels", "<i8", (len(LABEL_ORDER),)),  # planned records per label
        ("mining", "<i8", (len(MINING_FIELDS),)),  # MiningCounts of a mined image, in field order
    ]
)
PROGRESS_DTYPE = np.dtype(
    [
        ("status", "i1"),
        ("counts", "<i8", (len(LABEL_ORDER),)),  # samples this image contributes to the stream
    ]
)


# ---------------------------------------------------------------------------------------- detector


@dataclass(frozen=True)
class CascadeFactory:
    """Builds the previous cascade stages inside a worker process (sessions are never pickled).

    `pnet`/`rnet` are ONNX paths (or picklable callables with the fork start method). `threads` is the
    onnxruntime intra-op thread count per worker: 1 when mining with several workers.
    """

    pnet: Any
    rnet: Any = None
    config: Any = None  # facedata.detect.CascadeConfig; None = defaults
    contract: Any = None  # facedata.detect.ModelContract; None = defaults
    threads: int = 1

    def __call__(self) -> Any:
        from facedata.detect import Cascade, CascadeConfig, ModelContract

        return Cascade(
            self.pnet, self.rnet, None, self.config or CascadeConfig(), self.contract or ModelContract(),
            threads=self.threads,
        )

    def describe(self) -> dict[str, Any]:
        """Provenance: model files with their sha256, and every cascade / contract option."""
        from facedata.detect import CascadeConfig, ModelContract

        def model(spec: Any) -> Any:
            if spec is None:
                return None
            if isinstance(spec, (str, os.PathLike)):
                return {"file": Path(spec).name, "sha256": sha256_file(spec)}
            return {"callable": getattr(spec, "__qualname__", type(spec).__name__)}

        return {
            "pnet": model(self.pnet),
            "rnet": model(self.rnet),
            "config": asdict(self.config or CascadeConfig()),
            "contract": asdict(self.contract or ModelContract()),
        }


@dataclass
class Job:
    """Everything workers need; sent once to each worker. The stream: detection images, then landmark
    images; stream image j is `task(j)`."""

    stage: str
    size: int
    seed: int
    detection_tasks: TaskTable
    landmark_tasks: TaskTable | None
    crop_recipe: CropRecipe
    landmark_recipe: LandmarkRecipe
    mining_recipe: MiningRecipe | None
    detector: Callable[[], Any] | None
    record_dtype: np.dtype
    plan_path: str  # the plan file pass 2 reads its records from

    @property
    def n_det(self) -> int:
        return len(self.detection_tasks)

    @property
    def n(self) -> int:
        return self.n_det + (0 if self.landmark_tasks is None else len(self.landmark_tasks))

    def task(self, j: int) -> ImageTask:
        if j < self.n_det:
            return self.detection_tasks[j]
        assert self.landmark_tasks is not None
        return self.landmark_tasks[j - self.n_det]


_JOB: Job | None = None
_CASCADE: Any = None


def init_worker(job: Job, limit_threads: bool) -> None:
    global _JOB, _CASCADE
    _JOB, _CASCADE = job, None
    if limit_threads:
        cv2.setNumThreads(1)  # one process per core already


def _cascade() -> Any:
    global _CASCADE
    if _CASCADE is None:
        assert _JOB is not None and _JOB.detector is not None
        _CASCADE = _JOB.detector()
    return _CASCADE


def _mined(job: Job, j: int) -> bool:
    return job.stage != "pnet" and j < job.n_det


def _plan(job: Job, j: int) -> np.ndarray:
    """Geometry-only records of (non-mined) stream image j, before mixing."""
    task = job.task(j)
    if j < job.n_det:
        records = plan_crops(task, job.crop_recipe, job.seed)
    else:
        records = plan_landmarks(task, job.landmark_recipe, job.seed)
    return _as_dtype(records, job.record_dtype)


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
    """(decoded BGR image or None, status, note): missing, undecodable and wrong-size images fail."""
    image = cv2.imread(task.path, cv2.IMREAD_COLOR)
    if image is None:
        return None, (MISSING if not os.path.isfile(task.path) else UNREADABLE), None
    if image.shape[:2] != (task.height, task.width):
        note = f"decoded {image.shape[1]}x{image.shape[0]}, manifest says {task.width}x{task.height}"
        return None, WRONG_SIZE, note
    return image, WRITTEN, None


@dataclass
class PlanResult:
    rows: np.ndarray  # (hi - lo,) PLAN_DTYPE
    records: np.ndarray  # all planned records of the chunk, image after image
    notes: dict[int, str] = field(default_factory=dict)  # stream index -> detail for failed images


def plan_chunk(lo: int, hi: int) -> PlanResult:
    """Pass 1: the unmixed records of stream images [lo, hi). Crop and landmark images are planned
    from geometry alone (no decoding); mined images are decoded, run through the detector and labelled."""
    job = _JOB
    assert job is not None
    rows = np.zeros(hi - lo, PLAN_DTYPE)
    parts: list[np.ndarray] = []
    notes: dict[int, str] = {}
    for row, j in enumerate(range(lo, hi)):
        task = job.task(j)
        if _mined(job, j):
            assert job.mining_recipe is not None
            image, status, note = _read_image(task)
            if image is None:
                rows["status"][row] = status
                if note:
                    notes[j] = note
                continue
            detections = _cascade().detect(image)
            records, counts = label_detections(detections.boxes, task, job.mining_recipe, job.seed)
            records = _as_dtype(records, job.record_dtype)
            rows["mining"][row] = [getattr(counts, name) for name in MINING_FIELDS]
        elif not os.path.isfile(task.path):
            rows["status"][row] = MISSING
            continue
        else:
            records = _plan(job, j)
        rows["status"][row] = PLANNED
        rows["records"][row] = len(records)
        rows["labels"][row] = label_counts(records["label"])
        parts.append(records)
    records = np.concatenate(parts) if parts else np.zeros(0, job.record_dtype)
    return PlanResult(rows, records, notes)


@dataclass
class ChunkResult:
    pixels: np.ndarray  # (n, size, size, 3) uint8, all images of the chunk in order
    records: np.ndarray
    progress: np.ndarray  # (hi - lo,) PROGRESS_DTYPE
    notes: dict[int, str] = field(default_factory=dict)  # stream index -> detail for skipped images


def render_chunk(lo: int, hi: int, plan: np.ndarray, first: int, mix: MixPlan | None) -> ChunkResult:
    """Pass 2: mix and render stream images [lo, hi), each image decoded once. `plan` holds their
    PLAN_DTYPE rows, `first` the position of image lo's records in the plan file."""
    job = _JOB
    assert job is not None
    progress = np.zeros(hi - lo, PROGRESS_DTYPE)
    ends = np.cumsum(plan["records"])
    planned = read_records(job.plan_path, job.record_dtype, first, first + int(ends[-1]) if len(ends) else first)
    all_pixels: list[np.ndarray] = []
    all_records: list[np.ndarray] = []
    notes: dict[int, str] = {}
    for row, j in enumerate(range(lo, hi)):
        if plan["status"][row] != PLANNED:
            progress["status"][row] = plan["status"][row]
            continue
        task = job.task(j)
        records = planned[ends[row] - plan["records"][row] : ends[row]]
        if mix is not None:
            records = select(records, task.image_id, job.seed, mix)
        progress["status"][row] = WRITTEN
        if len(records) == 0:  # nothing to cut: no need to decode
            continue
        image, status, note = _read_image(task)
        if image is None:
            progress["status"][row] = status
            if note:
                notes[j] = note
            continue
        recipe = job.crop_recipe if j < job.n_det else job.landmark_recipe
        all_pixels.append(render(image, records, job.size, recipe.interpolation))
        all_records.append(records)
        progress["counts"][row] = label_counts(records["label"])
    size = job.size
    pixels = np.concatenate(all_pixels) if all_pixels else np.zeros((0, size, size, 3), np.uint8)
    records = np.concatenate(all_records) if all_records else np.zeros(0, job.record_dtype)
    return ChunkResult(pixels, records, progress, notes)
