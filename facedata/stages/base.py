"""The interface of a build stage, and the MTCNN crop + landmark stage every cascade stage starts from.

A stage declares its sample schema (crop side, record dtype), how its options resolve into the recipes
that run (`configure`: whatever index.json records is what runs), its planner (records of one image,
before mixing; from geometry, or from the decoded image and a per-worker model) and its renderer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.registry import Registry
from facedata.samplers.crops import CropRecipe, plan_crops
from facedata.samplers.landmarks import LandmarkRecipe, plan_landmarks
from facedata.samplers.mined import MiningRecipe
from facedata.samplers.render import render
from facedata.samplers.tasks import ImageTask, TaskTable
from facedata.samples import ORIGIN_DETECTIONS, sample_dtype


@dataclass(frozen=True)
class BuildConfig:
    """The recipes (and the per-worker model factory) a build runs with, as resolved by its stage."""

    crop: CropRecipe
    landmarks: LandmarkRecipe
    mining: MiningRecipe | None = None
    detector: Callable[[], Any] | None = None  # zero-argument factory, called once in each worker


@dataclass(frozen=True)
class Stage:
    """A cascade stage trained on `size` px crops: IoU-labelled crops around the detection manifest's faces
    (planned from geometry alone) and landmark crops from the landmark manifest."""

    name: str
    size: int
    verb: str = "planned"  # what pass 1 does to an image, in the summary
    chunk_images: int = 32  # images per worker task, at most (mining an image takes ~40x longer)
    counters: tuple[str, ...] = ()  # per-image counts the planner returns (kept in the plan table)
    counts_origin: int = ORIGIN_DETECTIONS  # the manifest whose images `report` sums the counters of

    def configure(
        self, crop: CropRecipe | None, landmarks: LandmarkRecipe | None, mining: MiningRecipe | None,
        detector: Callable[[], Any] | None,
    ) -> BuildConfig:
        """The effective recipes, checked against this stage."""
        crop, landmarks = crop or CropRecipe(size=self.size), landmarks or LandmarkRecipe(size=self.size)
        if crop.size != self.size or landmarks.size != self.size:
            raise FacedataError(f"{self.name} samples are {self.size} px; recipes say {crop.size}/{landmarks.size}")
        if mining is not None or detector is not None:
            raise FacedataError(f"build {self.name} plans from geometry: it takes no mining recipe or detector")
        return BuildConfig(crop, landmarks)

    def image_shape(self, config: BuildConfig) -> tuple[int, int, int]:
        """(h, w, 3) of the stored samples."""
        return self.size, self.size, 3

    def record_dtype(self, config: BuildConfig) -> np.dtype:
        return sample_dtype(len(config.landmarks.flip_permutation))

    def size_rule(self, origin: int, config: BuildConfig) -> tuple[float, str]:
        """(px, side): faces of this origin whose side is under px are ignore regions (the task tables are
        built with it; facedata.faces)."""
        recipe = config.crop if origin == ORIGIN_DETECTIONS else config.landmarks
        return recipe.ignore_under, recipe.face_side

    def decodes(self, origin: int) -> bool:
        """Whether planning an image of this origin needs its pixels (and the model)."""
        return False

    def plan(
        self, task: ImageTask, config: BuildConfig, seed: int, image: np.ndarray | None, model: Callable[[], Any]
    ) -> tuple[np.ndarray, list[int] | None]:
        """The image's records before mixing, and its counters (None: this stage counts nothing)."""
        if task.origin == ORIGIN_DETECTIONS:
            return plan_crops(task, config.crop, seed), None
        return plan_landmarks(task, config.landmarks, seed), None

    def render(self, image: np.ndarray, records: np.ndarray, origin: int, config: BuildConfig) -> np.ndarray:
        recipe = config.crop if origin == ORIGIN_DETECTIONS else config.landmarks
        return render(image, records, self.size, recipe.interpolation)

    def provenance(self, config: BuildConfig) -> dict[str, Any]:
        """The recipes as recorded in index.json (verify --labels re-derives labels with them)."""
        return {"crop_recipe": config.crop.to_dict(), "landmark_recipe": config.landmarks.to_dict(),
                "mining_recipe": None, "detector": None}

    def report(self, counters: np.ndarray, planned: np.ndarray) -> dict[str, Any] | None:
        """Sections of the summary from the counters of the `counts_origin` images (rows where `planned`), or
        None."""
        return None

    def write_reports(self, directory: Path, tasks: TaskTable, counters: np.ndarray, status: list[str]) -> None:
        """Files beside the shards from the detection images' counters and status words (e.g. the mining
        report)."""

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """Lines of `format_summary` for this stage's report section."""
        return []


STAGES: Registry[Stage] = Registry("build stage")
