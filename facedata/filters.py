"""Composable manifest filters: each rule maps a Manifest to a smaller one and says what it removed.

Rules run in the order given. Rules that drop faces keep the faces' images: an image left with no
faces is a pure negative, which detector training wants. Only `DropEmptyImages` (or a `Where` query
that uses image columns only) removes images. Every run is appended to provenance["filters"], so a
filtered manifest says how it was derived from its input.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from facedata.errors import FacedataError
from facedata.faces import face_boxes, flagged
from facedata.manifest import Manifest, command_line
from facedata.schema import IMAGE_COLUMNS

# Derived columns a --where query may use besides the manifest's face and image columns.
DERIVED_COLUMNS = {"box_w": "face width x2 - x1 (px)", "box_h": "face height y2 - y1 (px)"}


class Rule(Protocol):
    """A filter step: `name` is how reports and provenance refer to it."""

    @property
    def name(self) -> str: ...

    def apply(self, manifest: Manifest) -> Manifest: ...


@dataclass(frozen=True)
class MinSize:
    """Drop faces whose width or height is below `pixels` (the Ultra-Light-Fast recipe uses 10)."""

    pixels: float

    @property
    def name(self) -> str:
        return f"min_size {self.pixels:g}"

    def apply(self, manifest: Manifest) -> Manifest:
        faces = manifest.faces
        keep = ((faces["x2"] - faces["x1"]) >= self.pixels) & ((faces["y2"] - faces["y1"]) >= self.pixels)
        return _with_faces(manifest, keep.to_numpy(bool))


@dataclass(frozen=True)
class DropInvalid:
    """Drop faces flagged invalid (WIDER `invalid` = 1) or degenerate (zero or negative width/height)."""

    @property
    def name(self) -> str:
        return "drop_invalid"

    def apply(self, manifest: Manifest) -> Manifest:
        faces = manifest.faces
        return _with_faces(manifest, ~flagged(face_boxes(faces), faces["invalid"].to_numpy(bool)))


@dataclass(frozen=True)
class Where:
    """Keep rows matching a pandas query (DataFrame.eval syntax), e.g. `blur < 2 and occlusion == 0`.

    If the query names image columns only (e.g. `split == 'train'`, `width >= 400`) it selects images,
    and the faces of dropped images go with them. Otherwise it is evaluated on faces joined with their
    image's columns (plus box_w, box_h) and selects faces, keeping their images. A comparison with an
    unknown value (null width, for instance) does not match.
    """

    query: str

    @property
    def name(self) -> str:
        return f"where {self.query}"

    def apply(self, manifest: Manifest) -> Manifest:
        images = manifest.images
        try:
            mask = _evaluate(images, self.query)
        except _QueryError:
            mask = None
        if mask is not None:
            kept = images.loc[mask].reset_index(drop=True)
            faces = manifest.faces
            faces = faces.loc[faces["image_id"].isin(kept["image_id"])].reset_index(drop=True)
            return Manifest(kept, faces, manifest.provenance)
        joined = face_table(manifest)
        try:
            mask = _evaluate(joined, self.query)
        except _QueryError as exc:
            raise FacedataError(f"--where {self.query!r}: {exc}") from None
        return _with_faces(manifest, mask)


@dataclass(frozen=True)
class DropEmptyImages:
    """Drop images that have no faces left (removes the pure negatives)."""

    @property
    def name(self) -> str:
        return "drop_empty_images"

    def apply(self, manifest: Manifest) -> Manifest:
        keep = manifest.images["image_id"].isin(manifest.faces["image_id"])
        return Manifest(manifest.images.loc[keep].reset_index(drop=True), manifest.faces, manifest.provenance)


@dataclass(frozen=True)
class StepResult:
    rule: str
    faces_removed: int
    images_removed: int
    faces_left: int
    images_left: int


@dataclass
class FilterReport:
    """What each rule removed, in the order the rules ran."""

    faces_in: int
    images_in: int
    steps: list[StepResult]

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces_in": self.faces_in,
            "images_in": self.images_in,
            "steps": [asdict(s) for s in self.steps],
        }

    def lines(self) -> list[str]:
        out = [f"input: {self.images_in} images, {self.faces_in} faces"]
        width = max((len(s.rule) for s in self.steps), default=0)
        for s in self.steps:
            out.append(
                f"{s.rule:<{width}}  removed {s.faces_removed} faces, {s.images_removed} images"
                f"  -> {s.images_left} images, {s.faces_left} faces"
            )
        return out


def rules_from_options(
    min_size: float | None = None,
    drop_invalid: bool = False,
    where: list[str] | tuple[str, ...] | str | None = None,
    drop_empty_images: bool = False,
) -> list[Rule]:
    """The CLI's fixed rule order: min_size, drop_invalid, each where query, drop_empty_images."""
    rules: list[Rule] = []
    if min_size is not None:
        if min_size < 0:
            raise FacedataError(f"--min-size must be >= 0, got {min_size:g}")
        rules.append(MinSize(min_size))
    if drop_invalid:
        rules.append(DropInvalid())
    queries = [where] if isinstance(where, str) else list(where or [])
    rules.extend(Where(q) for q in queries)
    if drop_empty_images:
        rules.append(DropEmptyImages())
    return rules


def apply_filters(manifest: Manifest, rules: list[Rule]) -> tuple[Manifest, FilterReport]:
    """Run the rules in order; the result's provenance is the input's plus this run's steps."""
    report = FilterReport(len(manifest.faces), len(manifest.images), [])
    current = manifest
    for rule in rules:
        result = rule.apply(current)
        report.steps.append(
            StepResult(
                rule=rule.name,
                faces_removed=len(current.faces) - len(result.faces),
                images_removed=len(current.images) - len(result.images),
                faces_left=len(result.faces),
                images_left=len(result.images),
            )
        )
        current = result
    provenance = copy.deepcopy(manifest.provenance)
    provenance.setdefault("filters", []).append({"command": command_line(), **report.to_dict()})
    return Manifest(current.images, current.faces, provenance), report


def face_table(manifest: Manifest) -> pd.DataFrame:
    """Faces joined with their image's columns, plus box_w and box_h, in face order."""
    joined = manifest.faces.merge(manifest.images[IMAGE_COLUMNS], on="image_id", how="left", sort=False)
    joined["box_w"] = joined["x2"] - joined["x1"]
    joined["box_h"] = joined["y2"] - joined["y1"]
    return joined


class _QueryError(Exception):
    pass


def _evaluate(frame: pd.DataFrame, query: str) -> np.ndarray:
    """Boolean mask of `query` on `frame`; nulls count as False."""
    if not query.strip():
        raise _QueryError("empty query")
    try:
        result = frame.eval(query, engine="python")
    except pd.errors.UndefinedVariableError as exc:
        known = ", ".join([*frame.columns, *(c for c in DERIVED_COLUMNS if c not in frame.columns)])
        raise _QueryError(f"{exc}; columns: {known}") from None
    except SyntaxError as exc:
        raise _QueryError(f"invalid syntax ({exc.msg})") from None
    except (TypeError, ValueError, KeyError, AttributeError, NotImplementedError) as exc:
        raise _QueryError(f"{type(exc).__name__}: {exc}") from None
    if np.isscalar(result) and isinstance(result, bool | np.bool_):
        return np.full(len(frame), bool(result))
    if not isinstance(result, pd.Series) or len(result) != len(frame):
        raise _QueryError("the query must be a condition (true/false per row), not a value or an assignment")
    if not (pd.api.types.is_bool_dtype(result.dtype)):
        raise _QueryError(
            f"the query must be a condition (true/false per row), it gives {result.dtype} values"
        )
    return result.fillna(False).to_numpy(bool)


def _with_faces(manifest: Manifest, keep: np.ndarray) -> Manifest:
    """Keep the faces where `keep`; every image stays (a face-less image is a negative)."""
    return Manifest(manifest.images, manifest.faces.loc[keep].reset_index(drop=True), manifest.provenance)
