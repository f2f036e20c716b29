"""Named recipe presets for the PNet build: facedata's fixed recipe (the default) and the reference's.

"reference" reproduces the conventions of the reference generator (yeyupiaoling/Pytorch-MTCNN
train_PNet/generate_PNet_data.py, spec §1-2) so that on the same corpus its class counts before mixing
match the reference script's: +1-pixel widths and areas, its integer draws, crops clamped at the image
border, no ignore-region exclusion of negatives (every annotated face counts only through IoU < 0.3), an
unbounded-in-practice random negative loop, its size rules (max(w, h) < 20 for crops, < 40 for landmark
faces, on x2 - x1 + 1 widths, i.e. 19 / 39 px on facedata's x2 - x1: the larger side, where facedata
measures the shorter, facedata.faces) and its landmark variants.
What stays facedata's even here: seeded draws per image, float32 targets (no `%.2f`), invalid and
degenerate faces are never sampled (the reference samples invalid faces), the original landmark face
sample needs to lie inside the image.
"""

from __future__ import annotations

from dataclasses import replace

from facedata.errors import FacedataError
from facedata.samplers.crops import CropRecipe
from facedata.samplers.landmarks import LandmarkRecipe

PRESETS = ("fixed", "reference")


def preset_recipes(name: str, size: int) -> tuple[CropRecipe, LandmarkRecipe]:
    """(crop recipe, landmark recipe) of a named preset at `size` px."""
    if name == "fixed":
        return CropRecipe(size=size), LandmarkRecipe(size=size)
    if name != "reference":
        raise FacedataError(f"unknown recipe {name!r}; known: {', '.join(PRESETS)}")
    crop = replace(
        CropRecipe(size=size), draws="reference", plus_one_iou=True, ignore_cover=1.0, ignore_under=19.0,
        face_side="larger", negatives_per_image=50, negative_max_tries=100_000,
    )
    landmarks = replace(
        LandmarkRecipe(size=size), draws="reference", variants="reference", shifts_per_face=10,
        copies_per_shift=1, ignore_under=39.0, face_side="larger", max_rotation=5.0, mirror=True,
    )
    return crop, landmarks
