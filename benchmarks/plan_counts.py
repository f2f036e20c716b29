"""Planned PNet class counts at full scale: WIDER train (real GT, 12,880 images) + CUHK train (10,000 faces).

Geometry only, no pixels: the samplers plan from boxes and image sizes. WIDER train image sizes are not in
the annotation; every WIDER image is 1024 px wide, so each train image gets width 1024 and a height drawn
(from its id) from the WIDER val heights (libfacedetection labelv2 lists them), raised to cover its boxes.
CUHK images: lfw_5590 250 x 250, net_7876 400 x 400. Prints, per landmark recipe, the class counts before
mixing and the landmark share the default 3:1:1:2 mix reaches (2/7 = 28.6 % when landmarks suffice).

    python benchmarks/plan_counts.py [--realdata DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from facedata.manifest import Manifest
from facedata.parsers import ingest
from facedata.realdata import realdata_dir
from facedata.samplers import CropRecipe, LandmarkRecipe, mixing_plan, plan_crops, plan_landmarks
from facedata.samplers.tasks import task_table
from facedata.samples import ORIGIN_DETECTIONS, ORIGIN_LANDMARKS, image_rng


def _val_heights(realdata: Path) -> np.ndarray:
    lines = (realdata / "wider_face_libfacedetection/labelv2/val/labelv2.txt").read_text().splitlines()
    return np.array([int(line.split()[3]) for line in lines if line.startswith("#")])


def wider_train(realdata: Path, limit: int | None = None) -> Manifest:
    """Full WIDER train GT (the official .mat through facedata's parser) with planned image sizes."""
    manifest, _ = ingest(realdata / "wider_face" / "wider_face_train.mat")
    images, faces = manifest.images, manifest.faces
    if limit:
        images = images[:limit]
        faces = faces[faces["image_id"].isin(images["image_id"])]
    heights = _val_heights(realdata)
    extent = faces.groupby("image_id")[["x2", "y2"]].max().reindex(images["image_id"]).fillna(0)
    pick = [int(image_rng(0, i).integers(len(heights))) for i in images["image_id"]]
    width = np.maximum(1024, np.ceil(extent["x2"].to_numpy())).astype(np.int64)
    height = np.maximum(heights[pick], np.ceil(extent["y2"].to_numpy())).astype(np.int64)
    images = images.assign(width=pd.array(width, "Int32"), height=pd.array(height, "Int32"))
    return Manifest(images.reset_index(drop=True), faces.reset_index(drop=True), manifest.provenance)


def cuhk_train(realdata: Path) -> Manifest:
    """trainImageList.txt (facedata's parser) with the CUHK image sizes: lfw_5590 250 px, net_7876 400 px."""
    manifest, _ = ingest(realdata / "lfw_net_7876" / "trainImageList.txt")
    side = np.where(manifest.images["image_id"].str.startswith("lfw_5590"), 250, 400)
    images = manifest.images.assign(width=pd.array(side, "Int32"), height=pd.array(side, "Int32"))
    return Manifest(images, manifest.faces, manifest.provenance)


def planned_counts(manifest: Manifest, origin: int, recipe, seed: int = 0) -> dict[int, int]:
    plan = plan_crops if origin == ORIGIN_DETECTIONS else plan_landmarks
    roots = {name: "." for name in set(manifest.images["root"])}  # no pixels are read
    table = task_table(manifest, origin, ignore_under=recipe.ignore_under, face_side=recipe.face_side, roots=roots)
    counts: dict[int, int] = {}
    for i in range(len(table)):
        labels, n = np.unique(plan(table[i], recipe, seed)["label"], return_counts=True)
        for label, k in zip(labels.tolist(), n.tolist(), strict=True):
            counts[label] = counts.get(label, 0) + k
    return counts


RECIPES = {  # name: (crop recipe, landmark recipe)
    "before (50 negatives/image, 10 shifts x 1)": (
        CropRecipe(negatives_per_image=50), LandmarkRecipe(shifts_per_face=10, copies_per_shift=1)),
    "reference variants (10 shifts x 3.5)": (
        CropRecipe(negatives_per_image=50),
        LandmarkRecipe(shifts_per_face=10, copies_per_shift=1, variants="reference")),
    "default": (CropRecipe(), LandmarkRecipe()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realdata", type=Path, default=realdata_dir(),
                        help="real-data folder (default: FACEDATA_REALDATA or ../shared/realdata)")
    parser.add_argument("--limit", type=int, help="first N WIDER images only (a quick look)")
    args = parser.parse_args()
    if args.realdata is None:
        raise SystemExit("the real-data folder was not found: pass --realdata or set FACEDATA_REALDATA")
    start = time.perf_counter()
    wider, cuhk = wider_train(args.realdata, args.limit), cuhk_train(args.realdata)
    print(f"WIDER train: {len(wider.images):,} images, {len(wider.faces):,} faces; "
          f"CUHK: {len(cuhk.faces):,} faces\n")
    print("| recipe | negatives | positives | parts | landmarks (per face) | shortages at 3:1:1:2 | "
          "landmark share after mixing (goal 28.6 %) |")
    print("|---|---|---|---|---|---|---|")
    for name, (crop, lmk) in RECIPES.items():
        counts = {**planned_counts(wider, ORIGIN_DETECTIONS, crop), **planned_counts(cuhk, ORIGIN_LANDMARKS, lmk)}
        plan = mixing_plan(counts)
        expected = plan.expected()
        share = expected[-2] / sum(expected.values())
        print(f"| {name} | {counts.get(0, 0):,} | {counts.get(1, 0):,} | {counts.get(-1, 0):,} | "
              f"{counts.get(-2, 0):,} ({counts.get(-2, 0) / len(cuhk.faces):.1f}) | "
              f"{'; '.join(plan.shortages) or 'none'} | {100 * share:.1f} % |")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
