"""`facedata fuse`: several landmark manifests -> one manifest in one target scheme, with masks, derived query
columns and sampling weights.

- Every face with landmarks is mapped to the target scheme along the registered maps (facedata.fusion.convert).
  A target point without a true source has NaN coordinates and visibility 0 (mask == visible > 0): no mask
  column, no sentinel values. Faces without landmarks (ignore boxes, COCO persons without points) are kept
  as they are (scheme null). An input with no landmarks at all, or with a scheme that has no route to the
  target, is refused naming the file and the scheme.
- The source corpus stays in the image column `source` (it replaces PFPLD's per-sample type flag).
- Derived columns: ear_left / ear_right / ear_min, mouth_open, and a head pose where none is annotated,
  estimated from the fused points (facedata.fusion.derived), with `pose_source` annotated / estimated.
- `--weight "QUERY=K"` rules (the `--where` language) multiply the `weight` of the faces they match (a face
  matched by two rules gets the product); with `repeat` the faces are written K times instead (K whole).
- With several inputs, image ids become `<input number>:<id>` and a root name that two inputs use for
  different folders gets the input number appended, so images never mix up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facedata import __version__, console
from facedata.errors import FacedataError
from facedata.filters import QUERY_COLUMNS, evaluate_rows, face_table
from facedata.fusion.convert import conversion
from facedata.fusion.derived import estimable, estimate_pose, eye_mouth_ratios
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest, command_line, source_provenance, with_defaults
from facedata.paths import same_file
from facedata.query import Query, QueryError, parse_query
from facedata.schema import POSE_ANNOTATED, POSE_ESTIMATED


@dataclass(frozen=True)
class WeightRule:
    """`QUERY=K`: faces matching QUERY get their weight multiplied by K."""

    query: Query
    factor: float

    @property
    def text(self) -> str:
        return f"{self.query.text}={self.factor:g}"

    @classmethod
    def parse(cls, text: str, repeat: bool = False) -> WeightRule:
        query_text, sep, factor_text = text.rpartition("=")
        if not sep or not query_text.strip() or query_text.rstrip()[-1] in "=!<>":
            raise FacedataError(f"--weight {text!r}: expected QUERY=K, e.g. \"ear_min < 0.1=3\"")
        try:
            factor = float(factor_text)
        except ValueError:
            raise FacedataError(f"--weight {text!r}: K {factor_text.strip()!r} is not a number") from None
        if not math.isfinite(factor) or factor <= 0 or (repeat and (factor != int(factor) or factor > 1000)):
            need = "a whole number 1..1000 with --repeat" if repeat else "a finite number > 0"
            raise FacedataError(f"--weight {text!r}: K must be {need}, got {factor_text.strip()}")
        try:
            query = parse_query(query_text, QUERY_COLUMNS)
        except QueryError as exc:
            raise FacedataError(f"--weight {text!r}: {exc}") from None
        return cls(query, factor)


@dataclass
class SourceReport:
    """What one (input, source corpus, scheme) contributes."""

    input: int
    path: str
    source: str
    scheme: str
    route: str
    faces: int
    present: dict[str, float]  # group -> mean points present per face
    group_sizes: dict[str, int]

    def line(self) -> str:
        total, size = sum(self.present.values()), sum(self.group_sizes.values())
        groups = ", ".join(f"{g} {self.present[g]:.3g}/{n}" for g, n in self.group_sizes.items())
        route = self.route if "->" in self.route else "no map"
        return (f"input {self.input} {self.source} ({self.scheme}, {route}): {console.number(self.faces)} faces, "
                f"{total:.3g}/{size} points per face ({size - total:.3g} masked): {groups}")


@dataclass
class FuseReport:
    target: str
    sources: list[SourceReport] = field(default_factory=list)
    without_landmarks: dict[str, int] = field(default_factory=dict)  # input path -> faces kept without points
    pose: dict[str, int] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    repeats: dict[str, Any] = field(default_factory=dict)  # faces dropped as repeats of an earlier input's face
    faces_out: int = 0

    def lines(self) -> list[str]:
        out = [f"target {self.target}: {console.number(self.faces_out)} faces written"]
        out += [s.line() for s in self.sources]
        out += [f"{path}: {console.number(n)} faces without landmarks kept as they are"
                for path, n in self.without_landmarks.items()]
        if self.repeats:
            out.append(f"{console.number(self.repeats['faces'])} faces repeat a face of an earlier input (same image "
                       f"file, same points; e.g. overlapping WFLW subsets), kept once: first {self.repeats['first']}")
        out.append("pose: " + ", ".join(f"{console.number(n)} {kind}" for kind, n in self.pose.items()))
        for rule in self.rules:
            per = ", ".join(f"{k} {console.number(v)}" for k, v in rule["by_source"].items()) or "none"
            out.append(f"weight {rule['rule']}: {console.number(rule['faces'])} faces ({per})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "faces": self.faces_out, "pose": self.pose, "rules": self.rules,
                "sources": [vars(s) for s in self.sources], "without_landmarks": self.without_landmarks,
                "repeats": self.repeats}


def fuse_files(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], target: str,
               weights: Sequence[str] = (), repeat: bool = False) -> FuseReport:
    """Read the inputs, fuse them and write `output` atomically (never over an input)."""
    if target not in SCHEMES:
        raise FacedataError(f"--to: unknown landmark scheme {target!r}; known: {', '.join(SCHEMES.names())}")
    rules = [WeightRule.parse(w, repeat) for w in weights]
    if not inputs:
        raise FacedataError("fuse: no input manifest given")
    for path in inputs:
        if same_file(path, output):
            raise FacedataError(f"-o/--output {output} is the same file as the input {path}: choose another path")
    manifests = [(str(p), Manifest.read(p)) for p in inputs]
    fused, report = fuse(manifests, target, rules, repeat)
    fused.provenance["source_files"] = source_provenance(list(inputs))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fused.write(output)
    return report


def fuse(manifests: Sequence[tuple[str, Manifest]], target: str, rules: Sequence[WeightRule] = (),
         repeat: bool = False) -> tuple[Manifest, FuseReport]:
    """Map every (name, manifest) to `target`; see the module docstring."""
    report = FuseReport(target)
    roots: dict[str, str] = {}
    images, faces = [], []
    for number, (name, manifest) in enumerate(manifests, 1):
        mapped = _map_faces(number, name, manifest, target, report)
        imgs, mapped = _namespaced(number, len(manifests) > 1, manifest, mapped, roots)
        images.append(imgs)
        faces.append(mapped)
    all_images, all_faces = _drop_repeats(pd.concat(images, ignore_index=True), pd.concat(faces, ignore_index=True),
                                          roots, report)
    all_faces["face_id"] = np.arange(len(all_faces), dtype=np.int64)
    fused = Manifest(all_images, with_defaults(all_faces), {})
    _derive(fused.faces, target, report)
    fused = _weigh(fused, rules, repeat, report)
    report.faces_out = len(fused.faces)
    fused.provenance = {
        "source_format": "fuse", "roots": roots, "facedata_version": __version__, "command": command_line(),
        "fuse": {**report.to_dict(), "repeat": repeat,
                 "mask": "NaN coordinates and visible 0 where a target point has no true source"},
        "inputs": [{"name": name, "provenance": m.provenance} for name, m in manifests],
    }
    return fused, report


def _map_faces(number: int, name: str, manifest: Manifest, target: str, report: FuseReport) -> pd.DataFrame:
    faces = manifest.faces.copy()
    has = faces["scheme"].notna().to_numpy(bool)
    if not has.any():
        raise FacedataError(f"{name}: no face has landmarks (a detection-only manifest?): nothing to fuse into "
                            f"{target}")
    if not has.all():
        report.without_landmarks[name] = int((~has).sum())
    source_of = manifest.images.set_index("image_id")["source"]
    points, visible = (faces[c].to_numpy(object, copy=True) for c in ("points", "visible"))
    for scheme in sorted(faces.loc[has, "scheme"].unique()):
        rows = np.flatnonzero(has & (faces["scheme"] == scheme).to_numpy(bool))
        try:
            convert = conversion(scheme, target)
        except FacedataError as exc:
            raise FacedataError(f"{name}: {len(rows)} face(s) of scheme {scheme!r} cannot be fused into "
                                f"{target}: {exc}") from None
        pts, vis = _stacked(name, scheme, points[rows], visible[rows])
        new_pts, new_vis, mask = convert.apply(pts, vis)
        points[rows] = list(new_pts.astype(np.float32))
        visible[rows] = list(new_vis)
        sources = source_of.reindex(faces["image_id"].iloc[rows]).to_numpy(object)
        for source in sorted(set(sources)):
            _report_source(report, number, name, str(source), scheme, convert.route, mask[sources == source], target)
    faces["points"], faces["visible"] = points, visible
    faces.loc[has, "scheme"] = target
    return faces


def _stacked(name: str, scheme: str, points: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = SCHEMES.get(scheme).num_points
    bad = next((i for i, (p, v) in enumerate(zip(points, visible, strict=True)) if len(p) != 2 * n or len(v) != n),
               None)
    if bad is not None:
        raise FacedataError(f"{name}: a face of scheme {scheme!r} has {len(points[bad]) // 2} points and "
                            f"{len(visible[bad])} visibility codes, expected {n}")
    return np.stack(points).astype(np.float64), np.stack(visible).astype(np.int8)


def _report_source(report: FuseReport, number: int, name: str, source: str, scheme: str, route: tuple[str, ...],
                   mask: np.ndarray, target: str) -> None:
    groups = SCHEMES.get(target).groups
    report.sources.append(SourceReport(
        number, name, source, scheme, " -> ".join(route), int(len(mask)),
        {g: round(float(mask[:, list(idx)].sum(axis=1).mean()), 3) for g, idx in groups.items()},
        {g: len(idx) for g, idx in groups.items()},
    ))


def _namespaced(number: int, prefix: bool, manifest: Manifest, faces: pd.DataFrame,
                roots: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images and faces with ids prefixed by the input number (several inputs) and root names made unique."""
    images = manifest.images.copy()
    renamed = {}
    for root, folder in manifest.provenance.get("roots", {}).items():
        new = root if roots.get(root, folder) == folder else f"{root}_{number}"
        roots[new] = folder
        renamed[root] = new
    images["root"] = images["root"].map(lambda r: renamed.get(r, r))
    if prefix:
        images["image_id"] = f"{number}:" + images["image_id"]
        faces = faces.assign(image_id=f"{number}:" + faces["image_id"])
    return images, faces


def _drop_repeats(images: pd.DataFrame, faces: pd.DataFrame, roots: dict[str, str],
                  report: FuseReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first of faces with the same image file and the same points (inputs that overlap, like WFLW's
    attribute subsets); an image left without faces by this goes too (it is not a negative: its faces are
    already in the earlier input's copy of it)."""
    files = images["root"].map(roots).fillna("") + "/" + images["rel_path"]
    file_of = dict(zip(images["image_id"], files, strict=True))
    has = faces["scheme"].notna().to_numpy(bool)
    keys = pd.Series([(file_of[i], np.asarray(p).tobytes()) if h else (None, k)
                      for k, (i, p, h) in enumerate(zip(faces["image_id"], faces["points"], has, strict=True))])
    repeat = keys.duplicated().to_numpy(bool)
    if not repeat.any():
        return images, faces
    first = faces.loc[repeat, "image_id"].iloc[0]
    report.repeats = {"faces": int(repeat.sum()), "first": f"{first} ({file_of[first]})"}
    emptied = set(faces.loc[repeat, "image_id"]) - set(faces.loc[~repeat, "image_id"])
    return (images.loc[~images["image_id"].isin(emptied)].reset_index(drop=True),
            faces.loc[~repeat].reset_index(drop=True))


def _derive(faces: pd.DataFrame, target: str, report: FuseReport) -> None:
    """EAR, mouth opening and the pose source, in place; the pose estimated where none is annotated."""
    rows = np.flatnonzero(faces["scheme"].notna().to_numpy(bool))
    pts = np.stack(faces["points"].to_numpy(object)[rows]) if len(rows) else np.zeros((0, 0))
    vis = np.stack(faces["visible"].to_numpy(object)[rows]) if len(rows) else np.zeros((0, 0), np.int8)
    for column, values in eye_mouth_ratios(target, pts).items():
        faces.loc[rows, column] = values.astype(np.float32)
    pose = faces[["pitch", "yaw", "roll"]].to_numpy(np.float64)
    annotated = np.isfinite(pose).any(axis=1)
    given = faces["pose_source"].notna().to_numpy(bool)
    faces.loc[annotated & ~given, "pose_source"] = POSE_ANNOTATED
    todo = rows[~annotated[rows]]
    if len(todo) and estimable(target):
        estimated = estimate_pose(target, pts[~annotated[rows]], vis[~annotated[rows]])
        ok = np.isfinite(estimated).all(axis=1)
        faces.loc[todo[ok], ["pitch", "yaw", "roll"]] = estimated[ok].astype(np.float32)
        faces.loc[todo[ok], "pose_source"] = POSE_ESTIMATED
    counts = faces["pose_source"].value_counts()
    report.pose = {kind: int(counts.get(kind, 0)) for kind in (POSE_ANNOTATED, POSE_ESTIMATED)}
    report.pose["none"] = int(faces["pose_source"].isna().sum())


def _weigh(manifest: Manifest, rules: Sequence[WeightRule], repeat: bool, report: FuseReport) -> Manifest:
    faces = manifest.faces
    if not rules:
        return manifest
    table = face_table(manifest)
    weight = faces["weight"].to_numpy(np.float64).copy()
    for rule in rules:
        try:
            matched = evaluate_rows(rule.query, table)
        except QueryError as exc:
            raise FacedataError(f"--weight {rule.text!r}: {exc}") from None
        weight[matched] *= rule.factor
        by_source = table.loc[matched, "source"].value_counts().sort_index()
        report.rules.append({"rule": rule.text, "faces": int(matched.sum()),
                             "by_source": {str(k): int(v) for k, v in by_source.items()}})
    if not repeat:
        return Manifest(manifest.images, faces.assign(weight=weight.astype(np.float32)), manifest.provenance)
    copies = np.maximum(np.rint(weight), 1).astype(np.int64)  # a repeat never drops a face
    repeated = faces.loc[np.repeat(faces.index.to_numpy(), copies)].reset_index(drop=True)
    repeated["face_id"] = np.arange(len(repeated), dtype=np.int64)
    repeated["weight"] = np.float32(1.0)  # the copies are the weight
    return Manifest(manifest.images, repeated, manifest.provenance)
