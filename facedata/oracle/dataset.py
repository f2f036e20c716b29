"""Run the oracle on a build directory: its rules, manifests and image decoding come from index.json.

The manifests a build recorded (path and content hash in provenance["inputs"]) are used when they are
still there and unchanged, so `--detections/--landmarks` are needed only when the files moved. A manifest
given explicitly is used as given, with a warning when its hash differs from the recorded one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.oracle.labels import DetectionRules, LabelReport, LandmarkRules, verify_labels
from facedata.oracle.pixels import PixelReport, verify_pixels
from facedata.samples import ORIGIN_DETECTIONS, ORIGIN_LANDMARKS

ManifestArg = Manifest | str | os.PathLike[str] | None
INPUTS = (("detections", ORIGIN_DETECTIONS), ("landmarks", ORIGIN_LANDMARKS))


def rules_from_index(index: dict[str, Any]) -> tuple[DetectionRules, LandmarkRules]:
    """The labelling rules a dataset was built with (its recorded recipes)."""
    prov = index.get("provenance", {})
    crop, lmk = prov.get("crop_recipe"), prov.get("landmark_recipe")
    if not isinstance(crop, dict) or not isinstance(lmk, dict):
        raise FacedataError("index.json has no recipe provenance (not built by facedata build)")
    try:
        return DetectionRules.from_recipes(crop, prov.get("mining_recipe")), LandmarkRules.from_recipe(lmk)
    except (TypeError, ValueError) as exc:
        raise FacedataError(f"index.json recipe provenance is not readable ({exc})") from None


def _hash(manifest: Manifest) -> str:
    from facedata.build import manifest_sha256

    return manifest_sha256(manifest)


def check_inputs(index: dict[str, Any], detections: Manifest | None, landmarks: Manifest | None) -> list[str]:
    """Warnings when the manifests given differ from those the dataset was built from."""
    inputs = index.get("provenance", {}).get("inputs", {})
    notes = []
    for (key, _), manifest in zip(INPUTS, (detections, landmarks), strict=True):
        recorded = inputs.get(key)
        if manifest is not None and recorded is not None and recorded.get("sha256") != _hash(manifest):
            notes.append(f"the {key} manifest differs from the one this dataset was built from")
    return notes


def build_manifests(index: dict[str, Any], detections: ManifestArg = None, landmarks: ManifestArg = None
                    ) -> tuple[Manifest | None, Manifest | None, list[str]]:
    """(detections, landmarks, warnings): the manifests given, else the ones index.json records.

    A recorded manifest that is missing, moved without a recorded path, or changed since the build is an
    error naming the option to pass.
    """
    inputs = index.get("provenance", {}).get("inputs", {})
    found: list[Manifest | None] = []
    for (key, _), given in zip(INPUTS, (detections, landmarks), strict=True):
        recorded = inputs.get(key)
        if given is not None:
            found.append(given if isinstance(given, Manifest) else Manifest.read(given))
            continue
        if recorded is None:
            found.append(None)
            continue
        path = recorded.get("path")
        if not path:
            raise FacedataError(f"index.json does not record where the {key} manifest is; pass --{key}")
        if not Path(path).is_file():
            raise FacedataError(f"the {key} manifest recorded in index.json, {path}, is missing; "
                                f"pass --{key} with the manifest this dataset was built from")
        manifest = Manifest.read(path)
        if _hash(manifest) != recorded.get("sha256"):
            raise FacedataError(f"the {key} manifest {path} has changed since the build (sha256 differs from "
                                f"index.json); pass --{key} with the manifest this dataset was built from")
        found.append(manifest)
    det, lmk = found
    notes = check_inputs(index, det if detections is not None else None, lmk if landmarks is not None else None)
    return det, lmk, notes


def verify_build_labels(path: str | os.PathLike[str], detections: ManifestArg = None,
                        landmarks: ManifestArg = None, max_listed: int = 20) -> tuple[LabelReport, list[str]]:
    """Re-derive every sample's label and targets with the rules recorded in the index.

    Returns (report, warnings about given manifests that differ from the build's).
    """
    from facedata.storage import ShardedDataset

    dataset = ShardedDataset(path)
    try:
        detection_rules, landmark_rules = rules_from_index(dataset.index)
        det, lmk, notes = build_manifests(dataset.index, detections, landmarks)
        report = verify_labels(dataset, det, lmk, detection_rules=detection_rules, landmark_rules=landmark_rules,
                               max_listed=max_listed)
    finally:
        dataset.close()
    return report, notes


def verify_build_pixels(path: str | os.PathLike[str], n: int, *, seed: int = 0, detections: ManifestArg = None,
                        landmarks: ManifestArg = None, images: Iterable[str] = ()) -> tuple[PixelReport, list[str]]:
    """Re-cut `n` samples of a build from their source images (resize as the build recorded).

    `images`: `--images [NAME=]DIR` values overriding the manifests' image roots.
    """
    from facedata.build import parse_roots
    from facedata.storage import ShardedDataset

    dataset = ShardedDataset(path)
    try:
        prov = dataset.index.get("provenance", {})
        interpolation = {origin: (prov.get(key) or {}).get("interpolation", "linear")
                         for key, origin in (("crop_recipe", ORIGIN_DETECTIONS),
                                             ("landmark_recipe", ORIGIN_LANDMARKS))}
        det, lmk, notes = build_manifests(dataset.index, detections, landmarks)
        names = [name for m in (det, lmk) if m is not None for name in m.images["root"].unique().tolist()]
        report = verify_pixels(dataset, det, lmk, n=n, seed=seed, interpolation=interpolation,
                               roots=parse_roots(images, names))
    finally:
        dataset.close()
    return report, notes
