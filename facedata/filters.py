"""Composable manifest filters: each rule maps a Manifest to a smaller one and says what it removed.

Rules run in the order given. Rules that remove faces keep the faces' images. By default a removed face
stays in the manifest flagged `ignore`: the samplers treat it as an ignore region (like an invalid face),
so a face too small to learn from is neither cut as a negative nor turns its image into a pure negative.
With `removed="drop"` its row is deleted. Only `DropEmptyImages` (or a `Where` expression that uses image
columns only) removes images. Every run is appended to provenance["filters"], so a
filtered manifest says how it was derived from its input.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from facedata.console import number
from facedata.errors import FacedataError
from facedata.faces import face_boxes, flagged, large_enough
from facedata.manifest import Manifest, command_line
from facedata.query import Query, QueryError, evaluate, parse_query
from facedata.schema import FACE_ATTRIBUTES, FACE_COLUMNS, FACE_FIELDS, IMAGE_COLUMNS, UNKNOWN_ATTRIBUTE

# What happens to the faces a rule removes: flagged `ignore` (kept as ignore regions, so no negative crop
# is cut over them and their images do not become pure negatives by mistake) or deleted.
IGNORE, DROP = "ignore", "drop"
REMOVED_MODES = (IGNORE, DROP)
# Derived columns a --where query may use besides the manifest's face and image columns.
DERIVED_COLUMNS = {"box_w": "face width x2 - x1 (px)", "box_h": "face height y2 - y1 (px)"}
# Everything a face-level query may name: image columns, face columns, derived columns.
QUERY_COLUMNS = [*IMAGE_COLUMNS, *(c for c in FACE_COLUMNS if c != "image_id"), *DERIVED_COLUMNS]
_LIST_COLUMNS = frozenset(f.name for f in FACE_FIELDS if pa.types.is_list(f.type))


class Rule(Protocol):
    """A filter step: `name` is how reports and provenance refer to it."""

    @property
    def name(self) -> str: ...

    def apply(self, manifest: Manifest) -> Manifest: ...


@dataclass(frozen=True)
class MinSize:
    """Remove faces whose size, their shorter side (facedata.faces), is under `pixels`: width or height below
    it (the Ultra-Light-Fast recipe uses 10)."""

    pixels: float
    removed: str = IGNORE

    @property
    def name(self) -> str:
        return f"min_size {self.pixels:g}"

    def apply(self, manifest: Manifest) -> Manifest:
        small = ~large_enough(face_boxes(manifest.faces), self.pixels)
        return remove_faces(manifest, small, self.removed)


@dataclass(frozen=True)
class DropInvalid:
    """Remove faces flagged invalid (WIDER `invalid` = 1) or degenerate (zero or negative width/height)."""

    removed: str = IGNORE

    @property
    def name(self) -> str:
        return "drop_invalid"

    def apply(self, manifest: Manifest) -> Manifest:
        faces = manifest.faces
        bad = flagged(face_boxes(faces), faces["invalid"].to_numpy(bool))  # ignored faces stay ignored
        return remove_faces(manifest, bad, self.removed)


@dataclass(frozen=True)
class Where:
    """Keep rows matching an expression of the `--where` language (facedata.query), e.g.
    `blur < 2 and occlusion == 0`.

    If the expression names image columns only (e.g. `split == 'train'`, `width >= 400`) it selects images,
    and the faces of dropped images go with them. Otherwise it is evaluated on faces joined with their
    image's columns (plus box_w, box_h) and removes the faces that do not match, keeping their images.
    A comparison with an unknown value (null width, attribute -1) does not match; a column unknown for
    every row is an error, since the result would say nothing about the data.
    """

    query: str
    removed: str = IGNORE

    @property
    def name(self) -> str:
        return f"where {self.query}"

    def apply(self, manifest: Manifest) -> Manifest:
        try:
            query = parse_query(self.query, QUERY_COLUMNS)
            if query.names <= set(IMAGE_COLUMNS):
                return _with_images(manifest, evaluate_rows(query, manifest.images))
            keep = evaluate_rows(query, face_table(manifest))
        except QueryError as exc:
            raise FacedataError(f"--where {self.query!r}: {exc}") from None
        return remove_faces(manifest, ~keep, self.removed)


@dataclass(frozen=True)
class WiderSubset:
    """Keep the faces a WIDER evaluation level scores (`wider_<level>_val.mat` from `gt_dir`): every other face is
    removed (ignored by default). A face is in the subset when its image id and box equal a subset entry."""

    level: str
    gt_dir: str
    removed: str = IGNORE

    @property
    def name(self) -> str:
        return f"wider_subset {self.level}"

    def apply(self, manifest: Manifest) -> Manifest:
        from facedata.parsers.wider_subset import subset_boxes, subset_file

        subset = subset_boxes(subset_file(Path(self.gt_dir), self.level))
        faces = manifest.faces
        if not faces["image_id"].isin(subset.keys()).any():
            raise FacedataError(f"--wider-subset {self.level}: no image of the manifest is in the WIDER val subset "
                                f"(it selects WIDER val faces by event/name and box)")
        entries = [(image_id, *box) for image_id, boxes in subset.items() for box in boxes.tolist()]
        coords = (faces[c].to_numpy(np.float64).tolist() for c in ("x1", "y1", "x2", "y2"))
        rows = list(zip(faces["image_id"], *coords, strict=True))
        keys, present = set(entries), set(rows)
        inside = np.fromiter((row in keys for row in rows), bool, len(faces))
        result = remove_faces(manifest, ~inside, self.removed)
        # the published totals count subset entries; an identical repeated face is one manifest face
        return Manifest(result.images, result.faces, {**manifest.provenance, "wider_subset": {
            "level": self.level, "subset_faces": len(entries), "subset_faces_found": sum(e in present for e in entries),
            "faces_kept": int(inside.sum())}})


@dataclass(frozen=True)
class DropEmptyImages:
    """Drop images with no face left (ignored faces do not count): removes the pure negatives."""

    @property
    def name(self) -> str:
        return "drop_empty_images"

    def apply(self, manifest: Manifest) -> Manifest:
        keep = manifest.images["image_id"].isin(_active(manifest.faces)["image_id"])
        return _with_images(manifest, keep.to_numpy(bool))


@dataclass(frozen=True)
class StepResult:
    rule: str
    faces_removed: int  # faces dropped or newly ignored
    images_removed: int
    images_emptied: int  # images that had a face before this step and have none after it (still kept)
    faces_left: int  # faces not ignored
    faces_ignored: int  # ignore regions in the result
    images_left: int


@dataclass
class FilterReport:
    """What each rule removed, in the order the rules ran."""

    faces_in: int
    images_in: int
    removed: str
    steps: list[StepResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces_in": self.faces_in,
            "images_in": self.images_in,
            "removed": self.removed,
            "steps": [asdict(s) for s in self.steps],
        }

    def lines(self) -> list[str]:
        how = {IGNORE: "; removed faces kept as ignore regions", DROP: "; removed faces dropped"}.get(self.removed, "")
        out = [f"input: {number(self.images_in)} images, {number(self.faces_in)} faces{how}"]
        width = max((len(s.rule) for s in self.steps), default=0)
        for s in self.steps:
            ignored = f" (+{number(s.faces_ignored)} ignored)" if s.faces_ignored else ""
            out.append(
                f"{s.rule:<{width}}  removed {number(s.faces_removed)} faces, {number(s.images_removed)} images;"
                f" {number(s.images_emptied)} images lost all their faces"
                f"  -> {number(s.images_left)} images, {number(s.faces_left)} faces{ignored}"
            )
        return out


def rules_from_options(
    min_size: float | None = None,
    drop_invalid: bool = False,
    where: list[str] | tuple[str, ...] | str | None = None,
    drop_empty_images: bool = False,
    removed: str = IGNORE,
    wider_subset: tuple[str, str] | None = None,
) -> list[Rule]:
    """The CLI's fixed rule order: wider_subset (level, gt_dir), min_size, drop_invalid, each where query,
    drop_empty_images."""
    if removed not in REMOVED_MODES:
        raise FacedataError(f"--removed must be one of {', '.join(REMOVED_MODES)}, got {removed!r}")
    rules: list[Rule] = []
    if wider_subset is not None:
        rules.append(WiderSubset(*wider_subset, removed))
    if min_size is not None:
        if not math.isfinite(min_size) or min_size < 0:
            raise FacedataError(f"--min-size must be a finite number >= 0, got {min_size:g}")
        rules.append(MinSize(min_size, removed))
    if drop_invalid:
        rules.append(DropInvalid(removed))
    queries = [where] if isinstance(where, str) else list(where or [])
    rules.extend(Where(q, removed) for q in queries)
    if drop_empty_images:
        rules.append(DropEmptyImages())
    return rules


def apply_filters(manifest: Manifest, rules: list[Rule]) -> tuple[Manifest, FilterReport]:
    """Run the rules in order; the result's provenance is the input's plus this run's steps."""
    modes = sorted({rule.removed for rule in rules if hasattr(rule, "removed")})
    report = FilterReport(len(manifest.faces), len(manifest.images), "/".join(modes) or "none", [])
    current = manifest
    for rule in rules:
        result = rule.apply(current)
        before, after = _active(current.faces), _active(result.faces)
        had_faces = set(before["image_id"])
        emptied = result.images["image_id"].isin(had_faces) & ~result.images["image_id"].isin(after["image_id"])
        report.steps.append(
            StepResult(
                rule=rule.name,
                faces_removed=len(before) - len(after),
                images_removed=len(current.images) - len(result.images),
                images_emptied=int(emptied.sum()),
                faces_left=len(after),
                faces_ignored=len(result.faces) - len(after),
                images_left=len(result.images),
            )
        )
        current = result
    provenance = copy.deepcopy(current.provenance)  # the input's, plus what a rule recorded (wider_subset)
    provenance.setdefault("filters", []).append({"command": command_line(), **report.to_dict()})
    return Manifest(current.images, current.faces, provenance), report


def face_table(manifest: Manifest) -> pd.DataFrame:
    """Faces joined with their image's columns, plus box_w and box_h, in face order."""
    joined = manifest.faces.merge(manifest.images[IMAGE_COLUMNS], on="image_id", how="left", sort=False)
    joined["box_w"] = joined["x2"] - joined["x1"]
    joined["box_h"] = joined["y2"] - joined["y1"]
    return joined


def remove_faces(manifest: Manifest, remove: np.ndarray, removed: str) -> Manifest:
    """Drop the faces where `remove`, or flag them `ignore` (kept as ignore regions). Every image stays:
    an image left without faces is a negative, and its ignored faces keep negatives off them."""
    faces = manifest.faces
    if removed == DROP:
        faces = faces.loc[~remove].reset_index(drop=True)
    else:
        faces = faces.assign(ignore=faces["ignore"].to_numpy(bool) | remove)
    return Manifest(manifest.images, faces, manifest.provenance)


def _with_images(manifest: Manifest, keep: np.ndarray) -> Manifest:
    """Keep the images where `keep`, with all their faces (ignored ones included)."""
    images = manifest.images.loc[keep].reset_index(drop=True)
    faces = manifest.faces.loc[manifest.faces["image_id"].isin(images["image_id"])].reset_index(drop=True)
    return Manifest(images, faces, manifest.provenance)


def _active(faces: pd.DataFrame) -> pd.DataFrame:
    """The faces not flagged `ignore`."""
    return faces.loc[~faces["ignore"].to_numpy(bool)]


def evaluate_rows(query: Query, frame: pd.DataFrame) -> np.ndarray:
    """The query's mask on `frame`. WIDER attributes' -1 counts as unknown, like a null; a column
    unknown for every row is an error."""

    def column(name: str) -> pd.Series:
        if name in _LIST_COLUMNS:
            raise QueryError(f"column {name!r} holds lists and cannot be compared")
        values = frame[name]
        if name in FACE_ATTRIBUTES:
            values = values.astype("Int16").mask(values == UNKNOWN_ATTRIBUTE)
        if len(values) and values.isna().all():
            hint = " (ingest with --images to record image sizes)" if name in ("width", "height") else ""
            raise QueryError(f"column {name!r} is unknown for every row{hint}")
        return values

    return evaluate(query, column, len(frame))
