"""Run the oracle on a build directory: its rules, manifests and image decoding come from index.json.

pnet/rnet/onet builds are checked by facedata.oracle.labels / pixels, pfld and topdown builds by
facedata.oracle.keypoints (which stage: the recipe index.json records). The manifests a build recorded (path
and content hash in provenance["inputs"], pfld's in "pfld_inputs") are used when they are still there and
unchanged, so `--detections/--landmarks` (pfld: every input, in order; topdown: `--keypoints`, whose path
build topdown does not record) are needed only when the files moved. A manifest given explicitly is used as
given, with a warning when its hash differs from the recorded one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.oracle.labels import DetectionRules, LabelReport, LandmarkRules, run_checks, verify_labels
from facedata.oracle.pixels import PixelReport, tolerance_for, verify_pixels
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
    from facedata.buildprovenance import manifest_sha256  # the recorded provenance hash, not code the oracle checks

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


def _recorded(recorded: dict[str, Any], key: str, option: str) -> Manifest:
    """The manifest index.json records (path and sha256); missing, unrecorded or changed is an error naming
    the option to pass."""
    path = recorded.get("path")
    if not path:
        raise FacedataError(f"index.json does not record where the {key} manifest is; pass {option}")
    if not Path(path).is_file():
        raise FacedataError(f"the {key} manifest recorded in index.json, {path}, is missing; "
                            f"pass {option} with the manifest this dataset was built from")
    manifest = Manifest.read(path)
    if _hash(manifest) != recorded.get("sha256"):
        raise FacedataError(f"the {key} manifest {path} has changed since the build (sha256 differs from "
                            f"index.json); pass {option} with the manifest this dataset was built from")
    return manifest


def _read(given: ManifestArg) -> Manifest:
    return given if isinstance(given, Manifest) else Manifest.read(given)  # type: ignore[arg-type]


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
            found.append(_read(given))
        else:
            found.append(None if recorded is None else _recorded(recorded, key, f"--{key}"))
    det, lmk = found
    notes = check_inputs(index, det if detections is not None else None, lmk if landmarks is not None else None)
    return det, lmk, notes


def stage_of(index: dict[str, Any]) -> str:
    """"pfld", "topdown" or "detection" (pnet/rnet/onet): which oracle checks the build; else a one-line error."""
    prov = index.get("provenance", {})
    if isinstance(prov.get("pfld_recipe"), dict):
        return "pfld"
    if isinstance(prov.get("topdown_recipe"), dict):
        return "topdown"
    if isinstance(prov.get("crop_recipe"), dict) and isinstance(prov.get("landmark_recipe"), dict):
        return "detection"
    stage = prov.get("stage")
    if stage is None:
        raise FacedataError("index.json has no recipe provenance (not built by facedata build)")
    raise FacedataError(f"index.json: the oracle cannot check stage {stage!r} (it knows pnet, rnet, onet, pfld "
                        "and topdown builds)")


def pfld_manifest(index: dict[str, Any], landmarks: Sequence[ManifestArg] = ()) -> tuple[Manifest, list[str]]:
    """A pfld build's inputs concatenated in the build's order: the given ones, else those `pfld_inputs`
    records (each checked against its recorded sha256)."""
    from facedata.oracle.keypoints import concat_manifests

    recorded = index["provenance"].get("pfld_inputs") or []
    if not landmarks:
        if not recorded:
            raise FacedataError("index.json does not record the pfld build's inputs; pass --landmarks (each input, "
                                "in the build's order)")
        return concat_manifests(_recorded(r, "landmarks", "--landmarks (each input, in the build's order)")
                                for r in recorded), []
    given = [_read(m) for m in landmarks]
    notes = []
    if len(given) != len(recorded):
        notes.append(f"{len(given)} landmark manifest(s) given, the build had {len(recorded)}")
    elif any(_hash(m) != r.get("sha256") for m, r in zip(given, recorded, strict=True)):
        notes.append("a landmark manifest differs from the one this dataset was built from")
    return concat_manifests(given), notes


def topdown_manifest(index: dict[str, Any], keypoints: ManifestArg = None) -> tuple[Manifest, list[str]]:
    """A topdown build's keypoint manifest: the given one, else the recorded one (build's primary input)."""
    recorded = index["provenance"].get("inputs", {}).get("detections") or {}
    if keypoints is None:
        return _recorded(recorded, "keypoints", "--keypoints"), []
    manifest = _read(keypoints)
    differs = recorded.get("sha256") not in (None, _hash(manifest))
    return manifest, ["the keypoints manifest differs from the one this dataset was built from"] if differs else []


def _one(landmarks: ManifestArg | Sequence[ManifestArg]) -> ManifestArg:
    """The single landmark manifest of a detection build (--landmarks given at most once)."""
    if isinstance(landmarks, Sequence) and not isinstance(landmarks, str):
        if len(landmarks) > 1:
            raise FacedataError("--landmarks: a pnet/rnet/onet build has one landmark manifest, not "
                                f"{len(landmarks)}")
        return landmarks[0] if landmarks else None
    return landmarks


def _many(landmarks: ManifestArg | Sequence[ManifestArg]) -> list[ManifestArg]:
    if landmarks is None:
        return []
    return list(landmarks) if isinstance(landmarks, Sequence) and not isinstance(landmarks, str) else [landmarks]


def verify_build_labels(path: str | os.PathLike[str], detections: ManifestArg = None,
                        landmarks: ManifestArg | Sequence[ManifestArg] = None, max_listed: int = 20,
                        keypoints: ManifestArg = None) -> tuple[LabelReport, list[str]]:
    """Re-derive every sample's label and targets with the rules recorded in the index.

    `landmarks`: one manifest, or (pfld) every input in the build's order; `keypoints`: a topdown build's
    manifest. Returns (report, warnings about given manifests that differ from the build's).
    """
    from facedata.oracle.keypoints import PfldOracle, PfldRules, TopDownOracle, TopDownRules
    from facedata.storage import ShardedDataset

    dataset = ShardedDataset(path)
    try:
        index = dataset.index
        prov = index.get("provenance", {})
        stage = stage_of(index)
        if stage == "pfld":
            manifest, notes = pfld_manifest(index, _many(landmarks))
            oracle = PfldOracle(manifest, _rules(PfldRules.from_recipe, prov["pfld_recipe"]),
                                list(prov.get("pfld_corpora", [])))
            return run_checks(oracle.check, dataset, max_listed), notes
        if stage == "topdown":
            manifest, notes = topdown_manifest(index, keypoints if keypoints is not None else detections)
            oracle = TopDownOracle(manifest, _rules(TopDownRules.from_recipe, prov["topdown_recipe"]))
            return run_checks(oracle.check, dataset, max_listed), notes
        detection_rules, landmark_rules = rules_from_index(index)
        det, lmk, notes = build_manifests(index, detections, _one(landmarks))
        report = verify_labels(dataset, det, lmk, detection_rules=detection_rules, landmark_rules=landmark_rules,
                               max_listed=max_listed)
    finally:
        dataset.close()
    return report, notes


def _rules(make: Any, recipe: dict[str, Any]) -> Any:
    try:
        return make(recipe)
    except (TypeError, ValueError, KeyError) as exc:
        raise FacedataError(f"index.json recipe provenance is not readable ({exc})") from None


def verify_build_pixels(path: str | os.PathLike[str], n: int, *, seed: int = 0, detections: ManifestArg = None,
                        landmarks: ManifestArg | Sequence[ManifestArg] = None, images: Iterable[str] = (),
                        keypoints: ManifestArg = None) -> tuple[PixelReport, list[str]]:
    """Re-cut `n` samples of a build from their source images (resize as the build recorded).

    `images`: `--images [NAME=]DIR` values overriding the manifests' image roots.
    """
    from facedata.buildoptions import parse_roots
    from facedata.oracle.keypoints import verify_topdown_pixels
    from facedata.storage import ShardedDataset

    dataset = ShardedDataset(path)
    try:
        index = dataset.index
        prov = index.get("provenance", {})
        stage = stage_of(index)
        tolerance = tolerance_for(index.get("image_encoding", "raw"))
        if stage == "topdown":
            manifest, notes = topdown_manifest(index, keypoints if keypoints is not None else detections)
            roots = parse_roots(images, manifest.images["root"].unique().tolist())
            return verify_topdown_pixels(dataset, manifest, n=n, seed=seed, roots=roots, tolerance=tolerance), notes
        if stage == "pfld":
            lmk, notes = pfld_manifest(index, _many(landmarks))
            det = None
            interpolation = {ORIGIN_LANDMARKS: prov["pfld_recipe"].get("interpolation", "linear")}
        else:
            interpolation = {origin: (prov.get(key) or {}).get("interpolation", "linear")
                             for key, origin in (("crop_recipe", ORIGIN_DETECTIONS),
                                                 ("landmark_recipe", ORIGIN_LANDMARKS))}
            det, lmk, notes = build_manifests(index, detections, _one(landmarks))
        names = [name for m in (det, lmk) if m is not None for name in m.images["root"].unique().tolist()]
        report = verify_pixels(dataset, det, lmk, n=n, seed=seed, interpolation=interpolation,
                               roots=parse_roots(images, names), tolerance=tolerance)
    finally:
        dataset.close()
    return report, notes
