"""The export registry, the check of what a format cannot hold, and `export` (check -> atomic write).

Every format writes boxes; what else it holds differs. Before writing, `losses` counts the manifest contents
outside `holds` so nothing is dropped silently: the CLI warns with the counts, or refuses under --strict.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np
import pandas as pd

from facedata.errors import FacedataError
from facedata.manifest import Manifest
from facedata.paths import atomic_write, full_disk_error
from facedata.registry import Registry
from facedata.schema import BOX_DERIVED, FACE_ATTRIBUTES, UNKNOWN_ATTRIBUTE, VISIBILITY_HIDDEN

LANDMARK_SCHEME = "mtcnn5"  # the 5 points (eye centres, nose, mouth corners) every face format carries
N_POINTS = 5

# What a manifest may carry beyond boxes, each with how to count the faces (or images) that have it.
MTCNN5, OTHER_POINTS, HIDDEN, ATTRIBUTES, POSE, IGNORE, DERIVED, WEIGHTS, SIZES = (
    "mtcnn5 points", "points of other schemes", "hidden-point visibility", "attributes", "head pose",
    "ignore regions", "boxes derived from points", "sampling weights", "image sizes",
)


def has_points(faces: pd.DataFrame) -> pd.Series:
    return faces["points"].map(lambda p: p is not None and len(p) > 0)


def _attributes(faces: pd.DataFrame) -> pd.Series:
    known = (faces[list(FACE_ATTRIBUTES)] != UNKNOWN_ATTRIBUTE).any(axis=1)
    return known | faces["invalid"].astype(bool)


def _hidden(faces: pd.DataFrame) -> pd.Series:
    return faces["visible"].map(lambda v: v is not None and bool((np.asarray(v) == VISIBILITY_HIDDEN).any()))


CONTENTS: dict[str, Callable[[Manifest], pd.Series]] = {
    MTCNN5: lambda m: has_points(m.faces) & (m.faces["scheme"] == LANDMARK_SCHEME),
    OTHER_POINTS: lambda m: has_points(m.faces) & (m.faces["scheme"] != LANDMARK_SCHEME),
    HIDDEN: lambda m: _hidden(m.faces) & (m.faces["scheme"] == LANDMARK_SCHEME),
    ATTRIBUTES: lambda m: _attributes(m.faces),
    POSE: lambda m: m.faces[["yaw", "pitch", "roll"]].notna().any(axis=1),
    IGNORE: lambda m: m.faces["ignore"].astype(bool),
    DERIVED: lambda m: m.faces["box_source"] == BOX_DERIVED,  # read back as annotated boxes
    WEIGHTS: lambda m: m.faces["weight"].fillna(1) != 1,
    SIZES: lambda m: m.images["width"].notna() & m.images["height"].notna(),
}
_UNIT = {SIZES: "images"}


class Exporter(Protocol):
    name: str
    description: str
    holds: frozenset[str]  # CONTENTS keys the format carries
    partly: dict[str, Callable[[Manifest], pd.Series]]  # what it holds only in part: name -> the faces it cannot
    needs_sizes: bool  # normalised coordinates: every image needs its width and height
    single_file: bool  # one output file (else a folder of per-image files, named with `suffix`)

    def write(self, manifest: Manifest, out: Path) -> None: ...


EXPORTS: Registry[Exporter] = Registry("export format")


def register(exporter: Exporter) -> Exporter:
    return EXPORTS.register(exporter.name)(exporter)


@dataclass(frozen=True)
class Loss:
    content: str
    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count:,} {self.unit} with {self.content}"


def losses(manifest: Manifest, exporter: Exporter) -> list[Loss]:
    """The manifest contents `exporter` cannot hold, with how many faces (or images) carry each."""
    found = []
    for content, select in CONTENTS.items():
        if content in exporter.holds:
            continue
        count = int(select(manifest).sum())
        if count:
            found.append(Loss(_named(manifest, content), count, _UNIT.get(content, "faces")))
    for content, select in exporter.partly.items():
        count = int(select(manifest).sum())
        if count:
            found.append(Loss(content, count, "faces"))
    return found


def _named(manifest: Manifest, content: str) -> str:
    """The content with the names behind it: which attributes, which landmark schemes."""
    faces = manifest.faces
    if content == ATTRIBUTES:
        names = [a for a in FACE_ATTRIBUTES if (faces[a] != UNKNOWN_ATTRIBUTE).any()]
        return f"{content} ({', '.join(names + (['invalid'] if faces['invalid'].any() else []))})"
    if content == OTHER_POINTS:
        schemes = sorted(set(faces.loc[CONTENTS[OTHER_POINTS](manifest), "scheme"].astype(str)))
        return f"points of scheme(s) {', '.join(schemes)}"
    return content


def check_exportable(manifest: Manifest, exporter: Exporter, source: str) -> None:
    """Refuse what the format cannot write at all: normalised coordinates without image sizes, several roots."""
    if exporter.needs_sizes:
        unknown = manifest.images[manifest.images["width"].isna() | manifest.images["height"].isna()]
        if len(unknown):
            first = unknown["rel_path"].iloc[0]
            raise FacedataError(
                f"{source}: {exporter.name} needs image sizes but {len(unknown):,} image(s) have no width/height "
                f"(first {first}): ingest with --images to probe them"
            )
    if not exporter.single_file:
        targets = manifest.images["rel_path"].map(lambda p: str(PurePosixPath(p).with_suffix("")))
        clash = manifest.images["rel_path"][targets.duplicated(keep=False)]
        if len(clash):
            raise FacedataError(f"{source}: {exporter.name} writes one file per image but {', '.join(clash[:2])} "
                                f"would share one ({len(clash):,} images clash): rename or filter them first")
    roots = sorted(set(manifest.images["root"]))
    if len(roots) > 1:
        raise FacedataError(
            f"{source}: images under {len(roots)} roots ({', '.join(roots)}): {exporter.name} paths are relative "
            f"to one root; filter the manifest by root first"
        )


def export(manifest: Manifest, format_name: str, out: Path, *, source: str = "manifest",
           strict: bool = False, overwrite: bool = False) -> list[Loss]:
    """Write `manifest` as `format_name` to `out` (a file or a folder, atomically); returns what was not held.

    Under `strict` anything the format cannot hold is an error instead.
    """
    exporter = EXPORTS.get(format_name)
    check_exportable(manifest, exporter, source)
    lost = losses(manifest, exporter)
    if strict and lost:
        raise FacedataError(f"{source}: {exporter.name} cannot hold " + "; ".join(map(str, lost))
                            + " (drop --strict to export without them)")
    if out.exists() and not overwrite:
        raise FacedataError(f"-o/--output {out} exists: pass --overwrite to replace it")
    if out.is_dir():
        _check_replaceable(out, exporter)
    out.parent.mkdir(parents=True, exist_ok=True)
    with full_disk_error(out, "an existing output is left as it was"):
        if exporter.single_file:
            exporter.write(manifest, out)
        else:
            with _atomic_folder(out) as tmp:
                exporter.write(manifest, tmp)
    return lost


def _check_replaceable(out: Path, exporter: Exporter) -> None:
    """--overwrite replaces an earlier export only: a folder holding anything else (the input manifest,
    images, a project) is never removed."""
    suffix = getattr(exporter, "suffix", None)
    other = next((p for p in out.rglob("*") if p.is_file() and p.suffix != suffix), None) if suffix else out
    if other is not None:
        raise FacedataError(f"-o/--output {out} holds {other}, which is not a {exporter.name} export file: "
                            f"choose another output")


@contextmanager
def _atomic_folder(out: Path) -> Iterator[Path]:
    """Build a folder beside `out` and swap it in only when complete (an old `out` is removed after)."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def text_file(path: Path):
    """Atomic text write of one output file."""
    return atomic_write(path, "w")


def number(value: float) -> str:
    """A float32 value as the shortest text that reads back to the same float32."""
    return np.format_float_positional(np.float32(value), trim="-", unique=True)


def faces_by_image(manifest: Manifest) -> dict[str, pd.DataFrame]:
    """Faces grouped by image_id in manifest order (images without faces get none)."""
    return {key: group for key, group in manifest.faces.groupby("image_id", sort=False)}


def mtcnn5_points(face) -> tuple[np.ndarray, np.ndarray] | None:
    """(5x2 float points, 5 visibility codes) of an mtcnn5 face, absent points (code 0 or NaN) code 0; else None."""
    if face.scheme != LANDMARK_SCHEME or face.points is None or len(face.points) != 2 * N_POINTS:
        return None
    points = np.asarray(face.points, np.float32).reshape(N_POINTS, 2)
    visible = np.asarray(face.visible if face.visible is not None else [2] * N_POINTS, np.int8).copy()
    visible[~np.isfinite(points).all(axis=1)] = 0
    return points, visible


def point_fields(face, absent: str, present: Callable[[float, float, int], str]) -> list[str]:
    """The 5 point fields of a face line: `present(x, y, code)` per annotated point, `absent` otherwise."""
    points = mtcnn5_points(face)
    if points is None:
        return [absent] * N_POINTS
    return [present(float(x), float(y), int(v)) if v else absent for (x, y), v in zip(*points, strict=True)]


def write_per_image(manifest: Manifest, out: Path, suffix: str, render: Callable[[Any, list], str]) -> None:
    """One text file per image at its rel_path with `suffix`: `render(image row, its face rows)`."""
    groups = faces_by_image(manifest)
    for image in manifest.images.itertuples(index=False):
        target = out / Path(image.rel_path).with_suffix(suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        group = groups.get(image.image_id)
        with text_file(target) as fh:
            fh.write(render(image, [] if group is None else list(group.itertuples())))
