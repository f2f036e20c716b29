"""Stages trained on hard examples (RNet, ONet): each detection image is decoded and run through the
previous cascade stages (the per-worker model, built in the worker from `BuildConfig.detector`), and its
detections are labelled against the ground truth (facedata.samplers.mined); landmark images are planned as
for PNet. Also the mining report: per image, what the detector found and how it was labelled."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.paths import atomic_write, sha256_file
from facedata.samplers.crops import CropRecipe
from facedata.samplers.landmarks import LandmarkRecipe
from facedata.samplers.mined import MiningCounts, MiningRecipe, label_detections
from facedata.samplers.tasks import ImageTask, TaskTable
from facedata.samples import ORIGIN_DETECTIONS
from facedata.stages.base import BuildConfig, Stage

MINING_FIELDS = tuple(f.name for f in fields(MiningCounts))
MINING_REPORT_NAME = "mining-report.csv"  # per detection image: detections and labels
DETECTION_BINS = (0, 1, 2, 6, 11, 51, 101, 501, 1001)  # histogram of detections per image: [a, b)


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

    def _config(self) -> Any:
        """The given config, else the cascade defaults with the mining thresholds (recall for mining)."""
        from facedata.detect import CascadeConfig
        from facedata.detect.settings import MINING_THRESHOLDS

        return self.config or CascadeConfig(thresholds=MINING_THRESHOLDS)

    def __call__(self) -> Any:
        from facedata.detect import Cascade, ModelContract

        return Cascade(self.pnet, self.rnet, None, self._config(), self.contract or ModelContract(),
                       threads=self.threads)

    def describe(self) -> dict[str, Any]:
        """Provenance: model files with their sha256, every cascade / contract option, and the thresholds of
        the stages that actually run (PNet alone for rnet, PNet + RNet for onet)."""
        from facedata.detect import ModelContract

        def model(spec: Any) -> Any:
            if spec is None:
                return None
            if isinstance(spec, (str, os.PathLike)):
                return {"file": Path(spec).name, "sha256": sha256_file(spec)}
            return {"callable": getattr(spec, "__qualname__", type(spec).__name__)}

        return {
            "pnet": model(self.pnet),
            "rnet": model(self.rnet),
            "config": asdict(self._config()),
            "thresholds_used": list(self._config().thresholds[: 1 if self.rnet is None else 2]),
            "contract": asdict(self.contract or ModelContract()),
        }


@dataclass(frozen=True)
class MinedStage(Stage):
    verb: str = "mined"
    chunk_images: int = 4
    counters: tuple[str, ...] = MINING_FIELDS

    def configure(
        self, crop: CropRecipe | None, landmarks: LandmarkRecipe | None, mining: MiningRecipe | None,
        detector: Callable[[], Any] | None,
    ) -> BuildConfig:
        """The labels follow the mining recipe (its thresholds and ignore_under are the crop recipe that
        verify --labels re-derives them with); the crop recipe given sets only the interpolation."""
        if detector is None:
            raise FacedataError(f"build {self.name} needs the previous cascade stage(s) as a detector")
        mining = mining or MiningRecipe(size=self.size)
        if mining.size != self.size:
            raise FacedataError(f"{self.name} samples are {self.size} px; the mining recipe says {mining.size}")
        if crop is not None and (crop.ignore_under, crop.face_side) != (mining.ignore_under, "shorter"):
            raise FacedataError(f"ignore_under given twice: crop recipe {crop.ignore_under:g} ({crop.face_side} side), "
                                f"mining recipe {mining.ignore_under:g} (mined stages take it from the mining recipe)")
        base = super().configure(crop, landmarks, None, None)
        labels = replace(mining.crop_recipe(), interpolation=base.crop.interpolation)
        return BuildConfig(labels, base.landmarks, mining, detector)

    def decodes(self, origin: int) -> bool:
        return origin == ORIGIN_DETECTIONS

    def plan(
        self, task: ImageTask, config: BuildConfig, seed: int, image: np.ndarray | None, model: Callable[[], Any]
    ) -> tuple[np.ndarray, list[int] | None]:
        if task.origin != ORIGIN_DETECTIONS:
            return super().plan(task, config, seed, image, model)
        assert image is not None and config.mining is not None
        records, counts = label_detections(model().detect(image).boxes, task, config.mining, seed)
        return records, [getattr(counts, name) for name in MINING_FIELDS]

    def provenance(self, config: BuildConfig) -> dict[str, Any]:
        assert config.mining is not None
        return {**super().provenance(config), "mining_recipe": config.mining.to_dict(),
                "detector": _describe(config.detector)}

    def report(self, counters: np.ndarray, planned: np.ndarray) -> dict[str, Any] | None:
        mined = counters[planned]
        totals = dict(zip(MINING_FIELDS, mined.sum(axis=0).tolist(), strict=True))
        det = mined[:, MINING_FIELDS.index("detections")]
        pos_n, part_n = totals["positives"], totals["parts"]
        return {"mining": {
            "images": len(mined),
            "detections": totals,
            "before_cap": {"positive": pos_n, "part": part_n, "negative": totals["negatives"]},
            "after_cap": {"positive": pos_n, "part": part_n, "negative": totals["negatives_kept"]},
            "negatives_per_positive": round(totals["negatives_kept"] / max(1, pos_n), 3),
            "detections_per_image": _histogram(det),
            "detections_per_image_mean": round(float(det.mean()), 3) if len(det) else 0.0,
            "per_image_report": MINING_REPORT_NAME,
        }}

    def write_reports(self, directory: Path, tasks: TaskTable, counters: np.ndarray, status: list[str]) -> None:
        """mining-report.csv: per detection image, its status and counts (CSV, atomic)."""
        import pandas as pd

        frame = pd.DataFrame({"image_id": tasks.ids, "path": tasks.paths, "status": status})
        for k, name in enumerate(MINING_FIELDS):
            frame[name] = counters[:, k]
        with atomic_write(directory / MINING_REPORT_NAME, "w") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n")

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        mining = summary["mining"]
        b, a = mining["before_cap"], mining["after_cap"]
        hist = ", ".join(f"{k}: {v:,}" for k, v in mining["detections_per_image"].items())
        return [
            f"mined: {mining['images']:,} images, {mining['detections']['detections']:,} detections "
            f"(mean {mining['detections_per_image_mean']} per image)",
            f"  before cap: neg {b['negative']:,}, pos {b['positive']:,}, part {b['part']:,}; "
            f"after cap: neg {a['negative']:,} ({mining['negatives_per_positive']} per positive)",
            f"  detections per image: {hist} (each image: {mining['per_image_report']})",
        ]


def _describe(detector: Callable[[], Any] | None) -> Any:
    describe = getattr(detector, "describe", None)
    if callable(describe):
        return describe()
    return {"callable": getattr(detector, "__qualname__", type(detector).__name__)}


def _histogram(values: np.ndarray) -> dict[str, int]:
    out: dict[str, int] = {}
    bins = DETECTION_BINS
    for a, b in zip(bins, (*bins[1:], None), strict=True):
        n = int(((values >= a) & (values < b)).sum()) if b is not None else int((values >= a).sum())
        name = str(a) if b == a + 1 else (f"{a}-{b - 1}" if b is not None else f"{a}+")
        out[name] = n
    return out
