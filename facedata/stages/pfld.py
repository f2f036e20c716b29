"""PFLD (112 px): face crops of one or more landmark manifests in one scheme, with build-time augmentation
and the targets PFLD-style regressors train on (facedata.samplers.pfld). Every sample is a landmark sample;
there is no detection manifest and no class mix.

The inputs are concatenated in the order given: a record's image_index / face_index are rows of that
concatenation (index.json `pfld_inputs` lists the manifests with their sha256 and row offsets).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import FacedataError
from facedata.samplers.crops import CropRecipe
from facedata.samplers.landmarks import LandmarkRecipe
from facedata.samplers.mined import MiningRecipe
from facedata.samplers.pfld import ATTRIBUTES, COUNTERS, PfldFaces, PfldRecipe, pfld_dtype, plan_pfld
from facedata.samplers.render import render
from facedata.samplers.tasks import ImageTask
from facedata.samples import ORIGIN_LANDMARKS
from facedata.stages.base import STAGES, BuildConfig, Stage

PFLD_SIZE = 112


@dataclass(frozen=True)
class PfldConfig(BuildConfig):
    pfld: PfldRecipe | None = None
    faces: PfldFaces | None = None


@dataclass(frozen=True)
class PfldStage(Stage):
    """Registered with no recipe (for summaries); `build_pfld` builds with a copy that carries the recipe,
    the per-face columns and the corpus names of its inputs."""

    counters: tuple[str, ...] = COUNTERS
    counts_origin: int = ORIGIN_LANDMARKS
    recipe: PfldRecipe | None = None
    faces: PfldFaces | None = field(default=None, repr=False)
    corpora: tuple[str, ...] = ()

    def configure(
        self, crop: CropRecipe | None, landmarks: LandmarkRecipe | None, mining: MiningRecipe | None,
        detector: Callable[[], Any] | None,
    ) -> BuildConfig:
        if self.recipe is None or self.faces is None:
            raise FacedataError("build pfld needs its recipe and inputs (facedata.stages.pfld.build_pfld)")
        if crop is not None or landmarks is not None or mining is not None or detector is not None:
            raise FacedataError("build pfld takes its own recipe, not crop/landmark/mining recipes or a detector")
        return PfldConfig(CropRecipe(size=self.size), LandmarkRecipe(size=self.size, scheme=self.recipe.scheme),
                          pfld=self.recipe, faces=self.faces)

    def record_dtype(self, config: BuildConfig) -> np.dtype:
        assert isinstance(config, PfldConfig) and config.pfld is not None
        return pfld_dtype(config.pfld.num_points)

    def size_rule(self, origin: int, config: BuildConfig) -> tuple[float, str]:
        return 0.0, "shorter"  # every face with enough present points is a sample (PFLD has no size limit)

    def plan(
        self, task: ImageTask, config: BuildConfig, seed: int, image: np.ndarray | None, model: Callable[[], Any]
    ) -> tuple[np.ndarray, list[int] | None]:
        assert isinstance(config, PfldConfig) and config.pfld is not None and config.faces is not None
        return plan_pfld(task, config.pfld, config.faces, seed)

    def render(self, image: np.ndarray, records: np.ndarray, origin: int, config: BuildConfig) -> np.ndarray:
        assert isinstance(config, PfldConfig) and config.pfld is not None
        return render(image, records, self.size, config.pfld.interpolation)

    def provenance(self, config: BuildConfig) -> dict[str, Any]:
        assert isinstance(config, PfldConfig) and config.pfld is not None
        return {"crop_recipe": None, "landmark_recipe": None, "mining_recipe": None, "detector": None,
                "pfld_recipe": config.pfld.to_dict(), "pfld_corpora": list(self.corpora),
                "pfld_attributes": list(ATTRIBUTES), "pfld_euler": ["pitch", "yaw", "roll"]}

    def report(self, counters: np.ndarray, planned: np.ndarray) -> dict[str, Any] | None:
        totals = dict(zip(COUNTERS, counters[planned].sum(axis=0).tolist(), strict=True))
        return {"pfld": {"images": int(planned.sum()), **totals}}

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        p = summary["pfld"]
        return [f"pfld: {p['faces']:,} faces ({p['faces_skipped']:,} skipped: fewer than 2 points or unusable), "
                f"{p['repeats']:,} extra copies from --repeat-by weight, {p['redraws']:,} redrawn variants, "
                f"{p['variants_dropped']:,} variants dropped (no draw kept every point in the crop)"]


STAGES.register("pfld")(PfldStage("pfld", PFLD_SIZE, chunk_images=8))


def load_inputs(paths: list[str | os.PathLike[str]]) -> tuple[Any, str, list[dict[str, Any]]]:
    """(the inputs concatenated into one Manifest, their scheme, provenance per input); mixed schemes and
    image ids repeated across inputs are refused."""
    import pandas as pd

    from facedata.buildprovenance import manifest_info
    from facedata.manifest import Manifest

    if not paths:
        raise FacedataError("build pfld: give at least one --landmarks manifest")
    manifests = [Manifest.read(p) for p in paths]
    schemes: dict[str, str] = {}
    roots: dict[str, str] = {}
    info, image_rows, face_rows = [], 0, 0
    for path, m in zip(paths, manifests, strict=True):
        with_points = m.faces["points"].notna() if len(m.faces) else pd.Series([], dtype=bool)
        for scheme in sorted(set(m.faces.loc[with_points, "scheme"].dropna())):
            schemes.setdefault(scheme, str(path))
        for name, root in m.provenance.get("roots", {}).items():
            if roots.setdefault(name, root) != root:
                raise FacedataError(f"{path}: image root {name!r} is {root}, another input says {roots[name]}")
        info.append({**manifest_info(m, str(Path(path).resolve())), "first_image": image_rows,
                     "first_face": face_rows})
        image_rows, face_rows = image_rows + len(m.images), face_rows + len(m.faces)
    if not schemes:
        raise FacedataError(f"--landmarks: no face of {', '.join(Path(p).name for p in paths)} has landmark points")
    if len(schemes) > 1:
        found = ", ".join(f"{s} ({Path(p).name})" for s, p in schemes.items())
        raise FacedataError(f"--landmarks: the inputs must share one landmark scheme, found {found}; "
                            "fuse first (facedata fuse --to SCHEME)")
    images = pd.concat([m.images for m in manifests], ignore_index=True)
    repeated = images["image_id"][images["image_id"].duplicated()]
    if len(repeated):
        raise FacedataError(f"--landmarks: image id {repeated.iloc[0]!r} is in more than one input; fuse them "
                            "(fuse keeps a face once) or give each input once")
    faces = pd.concat([m.faces for m in manifests], ignore_index=True)
    return Manifest(images, faces, {"roots": roots}), schemes.popitem()[0], info


def face_columns(manifest: Any, corpora: list[str]) -> PfldFaces:
    """The per-face columns plan_pfld needs, in faces-table order."""
    from facedata.schema import POSE_ANNOTATED

    faces = manifest.faces
    pose = faces[["pitch", "yaw", "roll"]].to_numpy(np.float32)
    annotated = (faces["pose_source"] == POSE_ANNOTATED).to_numpy(bool) & np.isfinite(pose).all(axis=1)
    source = dict(zip(manifest.images["image_id"], manifest.images["source"], strict=True))
    corpus = np.array([corpora.index(source[i]) for i in faces["image_id"]], np.int16)
    return PfldFaces(
        pose=pose, annotated=annotated,
        attributes=faces[list(ATTRIBUTES)].fillna(-1).to_numpy(np.int8),
        weight=faces["weight"].fillna(1.0).to_numpy(np.float32),
        corpus=corpus,
    )


def build_pfld(landmarks: list[str | os.PathLike[str]], out_dir: str | os.PathLike[str], recipe: dict[str, Any],
               **options: Any) -> dict[str, Any]:
    """Build PFLD shards from landmark manifests; `recipe` holds PfldRecipe fields except the scheme (the
    inputs'), `options` build_dataset's (backend, seed, workers, roots, ...)."""
    from facedata.build import build_dataset
    from facedata.manifest import Manifest

    merged, scheme, info = load_inputs(landmarks)
    corpora = sorted(set(merged.images["source"]))
    pfld = PfldRecipe(scheme=scheme, **recipe)
    stage = replace(STAGES.get("pfld"), size=pfld.size, recipe=pfld, faces=face_columns(merged, corpora),
                    corpora=tuple(corpora))

    no_detections = Manifest(merged.images.iloc[:0], merged.faces.iloc[:0], merged.provenance)
    extra = {**options.pop("extra_provenance", {}), "pfld_inputs": info}
    return build_dataset(no_detections, merged, out_dir, stage=stage, mix=False, extra_provenance=extra, **options)
