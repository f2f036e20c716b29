"""Top-down keypoint crops (`facedata build topdown`): one stored crop per person or face of a keypoint
manifest (facedata.samplers.topdown), heatmap targets made at read time (facedata.readers.heatmaps).

The keypoint manifest is the build's single (primary) manifest; its recipe is a TopDownRecipe given as
the build's crop recipe. Nothing is mixed (every planned crop is written) and nothing is drawn at random.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.samplers.tasks import ImageTask
from facedata.samplers.topdown import COUNTERS, TopDownRecipe, plan_topdown, render_topdown, topdown_dtype
from facedata.stages.base import STAGES, BuildConfig, Stage


@dataclass(frozen=True)
class TopDownStage(Stage):
    counters: tuple[str, ...] = COUNTERS

    def configure(self, crop: Any, landmarks: Any, mining: Any, detector: Callable[[], Any] | None) -> BuildConfig:
        if not isinstance(crop, TopDownRecipe):
            raise FacedataError("build topdown takes a TopDownRecipe as its crop recipe")
        if landmarks is not None or mining is not None or detector is not None:
            raise FacedataError("build topdown reads one keypoint manifest: no landmark manifest, mining or detector")
        return BuildConfig(crop, None)  # type: ignore[arg-type]

    def image_shape(self, config: BuildConfig) -> tuple[int, int, int]:
        w, h = config.crop.stored
        return h, w, 3

    def record_dtype(self, config: BuildConfig) -> np.dtype:
        return topdown_dtype(config.crop.num_points)

    def size_rule(self, origin: int, config: BuildConfig) -> tuple[float, str]:
        return 0.0, "shorter"  # every annotated box counts; crowd and filtered ones are ignore regions anyway

    def plan(self, task: ImageTask, config: BuildConfig, seed: int, image: np.ndarray | None,
             model: Callable[[], Any]) -> tuple[np.ndarray, list[int] | None]:
        return plan_topdown(task, config.crop)

    def render(self, image: np.ndarray, records: np.ndarray, origin: int, config: BuildConfig) -> np.ndarray:
        return render_topdown(image, records, config.crop)

    def provenance(self, config: BuildConfig) -> dict[str, Any]:
        return {"topdown_recipe": config.crop.to_dict(), "crop_recipe": None, "landmark_recipe": None,
                "mining_recipe": None, "detector": None}

    def report(self, counters: np.ndarray, planned: np.ndarray) -> dict[str, Any] | None:
        rows = counters[planned]
        totals = dict(zip(COUNTERS, rows.sum(axis=0).tolist(), strict=True))
        persons, samples = rows[:, 0], rows[:, 1]
        totals["images_without_samples"] = int((samples == 0).sum())
        totals["images_only_ignored"] = int(((persons > 0) & (rows[:, 2] == persons)).sum())
        return {"topdown": totals}

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        t = summary["topdown"]
        return [
            f"topdown: {t['samples']:,} crops of {t['persons']:,} annotations; skipped: "
            f"{t['ignored']:,} crowd/ignored, {t['no_points']:,} without a labelled point, "
            f"{t['degenerate']:,} degenerate boxes",
            f"  images without a crop: {t['images_without_samples']:,} "
            f"(of which only crowd/ignored annotations: {t['images_only_ignored']:,})",
        ]


STAGES.register("topdown")(TopDownStage("topdown", 0))


def build_topdown(keypoints: str | os.PathLike[str], out_dir: str | os.PathLike[str], recipe: dict[str, Any],
                  **options: Any) -> dict[str, Any]:
    """Build top-down crops from a keypoint manifest; `recipe` holds TopDownRecipe fields except the scheme and
    its point count (the manifest's), `options` build_dataset's (backend, seed, workers, roots, ...)."""
    from facedata.build import build_dataset
    from facedata.fusion.schemes import SCHEMES
    from facedata.manifest import Manifest
    from facedata.paths import sha256_file
    from facedata.samplers.topdown import manifest_scheme

    manifest = Manifest.read(keypoints)
    scheme = manifest_scheme(manifest)
    crop = TopDownRecipe(scheme=scheme, num_points=SCHEMES.get(scheme).num_points, **recipe)
    files = {"keypoints_file": {"name": Path(keypoints).name, "sha256": sha256_file(keypoints)}}
    extra = {**options.pop("extra_provenance", {}), **files}
    return build_dataset(keypoints, None, out_dir, stage="topdown", crop_recipe=crop, mix=False,
                         extra_provenance=extra, **options)
