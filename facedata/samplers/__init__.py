"""Samplers: pure, deterministic functions from manifest rows + seed to sample records (geometry and
targets only), the renderer that cuts their pixels, and the class-mixing selection.

SAMPLERS maps a sampler name to its planner; RECIPES maps a cascade stage to its default recipes
(the same code serves 12, 24 and 48 px).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from facedata.registry import Registry
from facedata.samplers.crops import (
    DROPPED,
    CropRecipe,
    classify,
    label_boxes,
    negative_mask,
    plan_crops,
)
from facedata.samplers.geometry import landmark_targets, offsets_for
from facedata.samplers.iou import iou_matrix
from facedata.samplers.landmarks import LandmarkRecipe, plan_landmarks
from facedata.samplers.mixing import DEFAULT_RATIO, MixPlan, mixing_plan, select
from facedata.samplers.render import render
from facedata.samplers.tasks import ImageTask, image_tasks
from facedata.samples import ORIGIN_DETECTIONS, ORIGIN_LANDMARKS, STAGE_SIZE


@dataclass(frozen=True)
class Sampler:
    name: str
    origin: int  # which manifest it reads
    recipe_type: type
    plan: Callable[[ImageTask, Any, int], np.ndarray]


@dataclass(frozen=True)
class StageRecipes:
    crops: CropRecipe
    landmarks: LandmarkRecipe


SAMPLERS: Registry[Sampler] = Registry("sampler")
RECIPES: Registry[StageRecipes] = Registry("stage recipe")

SAMPLERS.register("crops")(Sampler("crops", ORIGIN_DETECTIONS, CropRecipe, plan_crops))
SAMPLERS.register("landmarks")(Sampler("landmarks", ORIGIN_LANDMARKS, LandmarkRecipe, plan_landmarks))
for _stage, _size in STAGE_SIZE.items():
    RECIPES.register(_stage)(StageRecipes(CropRecipe(size=_size), LandmarkRecipe(size=_size)))

__all__ = [
    "DEFAULT_RATIO",
    "DROPPED",
    "RECIPES",
    "SAMPLERS",
    "CropRecipe",
    "ImageTask",
    "LandmarkRecipe",
    "MixPlan",
    "Sampler",
    "StageRecipes",
    "classify",
    "image_tasks",
    "iou_matrix",
    "label_boxes",
    "landmark_targets",
    "mixing_plan",
    "negative_mask",
    "offsets_for",
    "plan_crops",
    "plan_landmarks",
    "render",
    "select",
]
