"""Read, write and build manifests: two pandas DataFrames (images, faces) plus provenance."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from facedata import __version__
from facedata.errors import FacedataError
from facedata.faces import degenerate
from facedata.paths import atomic_write, first_outside, full_disk_error, is_normal_rel_path, sha256_file
from facedata.schema import (
    ADDED_IN_4,
    BOX_ANNOTATED,
    BOX_DERIVED,
    FACE_ATTRIBUTES,
    FACE_COLUMNS,
    IMAGE_COLUMNS,
    MANIFEST_SCHEMA,
    POSE_ANNOTATED,
    SCHEMA_UPGRADES,
    SCHEMA_VERSION,
    UNKNOWN_ATTRIBUTE,
)

_META_KEY = b"facedata"

_PANDAS_DTYPES: dict[str, Any] = {
    **{
        name: "str"
        for name in ("image_id", "root", "rel_path", "split", "source", "event", "tags", "scheme", "box_source",
                     "pose_source")
    },
    "width": "Int32",
    "height": "Int32",
    "face_id": "int64",
    "x1": "float32",
    "y1": "float32",
    "x2": "float32",
    "y2": "float32",
    "yaw": "float32",
    "pitch": "float32",
    "roll": "float32",
    **{name: "int8" for name in FACE_ATTRIBUTES},
    "invalid": "bool",
    "degenerate": "bool",
    "ignore": "bool",
    "source_line": "Int32",
    **{name: "float32" for name in ("ear_left", "ear_right", "ear_min", "mouth_open", "weight")},
}


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def source_provenance(paths: list[str | os.PathLike[str]]) -> list[dict[str, str]]:
    """Each source file with its sha256, for the manifest's provenance."""
    return [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in paths]


@dataclass
class Manifest:
    """images: one row per image (IMAGE_COLUMNS); faces: one row per face (FACE_COLUMNS)."""

    images: pd.DataFrame
    faces: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write atomically as one Parquet file (see schema.MANIFEST_SCHEMA)."""
        table = to_table(self)
        with full_disk_error(path, "an existing file of that name is left as it was"), atomic_write(path) as fh:
            pq.write_table(table, fh, compression="zstd")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Manifest:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise FacedataError(f"{path}: not a readable facedata manifest ({exc})") from None
        info = _metadata(table.schema, path)
        version = info.get("schema_version")
        if version not in SCHEMA_UPGRADES:
            raise FacedataError(
                f"{path}: manifest schema version {version}, expected one of {sorted(SCHEMA_UPGRADES)}"
            )
        for name, default in SCHEMA_UPGRADES[version].items():
            if name in table.column_names:
                continue
            table = table.append_column(name, pa.array([default] * len(table), MANIFEST_SCHEMA.field(name).type))
        manifest = from_table(table, info.get("provenance", {}))
        _check_rel_paths(path, manifest.images)
        return manifest

    @staticmethod
    def root_names(path: str | os.PathLike[str]) -> list[str]:
        """The image root names a manifest file uses, reading only that column."""
        try:
            column = pq.read_table(path, columns=["root"]).column("root")
        except (OSError, pa.ArrowException) as exc:
            raise FacedataError(f"{path}: not a readable facedata manifest ({exc})") from None
        return sorted({str(r) for r in column.unique().to_pylist() if r is not None})

    def image_paths(self, roots: dict[str, str] | None = None) -> pd.Series:
        """Absolute image paths, using `roots` (name -> dir) over provenance["roots"]; an image that resolves outside
        its root (a symlink out of it) is an error."""
        known = {
            name: path for name, path in {**self.provenance.get("roots", {}), **(roots or {})}.items() if path
        }
        missing = sorted(set(self.images["root"]) - set(known))
        if missing:
            raise FacedataError(f"no directory known for image root(s) {missing}; pass --images")
        for name, rel_paths in self.images.groupby("root")["rel_path"]:
            outside = first_outside(known[name], rel_paths)
            if outside is not None:
                raise FacedataError(f"image {outside!r} resolves outside its image root {known[name]} (a symlink?); "
                                    "refusing to read it")
        return self.images["root"].map(known) + "/" + self.images["rel_path"]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facedata metadata of a manifest file (schema_version, facedata_version, provenance), read from its
    Parquet footer only."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise FacedataError(f"{path}: not a readable facedata manifest ({exc})") from None
    return _metadata(schema, path)


def _metadata(schema: pa.Schema, path: str | os.PathLike[str]) -> dict[str, Any]:
    meta = (schema.metadata or {}).get(_META_KEY)
    if meta is None:
        raise FacedataError(f"{path}: Parquet file has no facedata manifest metadata")
    return json.loads(meta)


def to_table(manifest: Manifest) -> pa.Table:
    images = manifest.images[IMAGE_COLUMNS]
    faces = with_defaults(manifest.faces)[FACE_COLUMNS]
    unknown = set(faces["image_id"]) - set(images["image_id"])
    if unknown:
        raise FacedataError(f"{len(unknown)} face(s) refer to images not in the manifest")
    long = images.merge(faces, on="image_id", how="left", sort=False)
    long = long.astype({"face_id": "Int64", "source_line": "Int32"})
    meta = {
        "schema_version": SCHEMA_VERSION,
        "facedata_version": __version__,
        "provenance": manifest.provenance,
    }
    table = pa.Table.from_pandas(long, schema=MANIFEST_SCHEMA, preserve_index=False)
    return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})


def from_table(table: pa.Table, provenance: dict[str, Any]) -> Manifest:
    frame = table.to_pandas()
    images = frame[IMAGE_COLUMNS].drop_duplicates("image_id", ignore_index=True)
    faces = frame.loc[frame["face_id"].notna(), FACE_COLUMNS].reset_index(drop=True)
    return Manifest(_typed(images), _typed(faces), provenance)


def with_defaults(faces: pd.DataFrame) -> pd.DataFrame:
    """Faces with the schema-4 columns a producer left out (pose_source, EAR, weight...) at their defaults."""
    missing = {name: default for name, default in ADDED_IN_4.items() if name not in faces.columns}
    return _typed(faces.assign(**{k: pd.Series([v] * len(faces), index=faces.index, dtype=object)
                                  for k, v in missing.items()})) if missing else faces


def _check_rel_paths(path: str | os.PathLike[str], images: pd.DataFrame) -> None:
    """Refuse a manifest whose image paths are absolute or climb out with `..` (ingest never writes one: an edited
    or hostile file), before build, export or report joins them to a root or an output folder."""
    bad = images.loc[~images["rel_path"].map(is_normal_rel_path).astype(bool)]
    if len(bad):
        raise FacedataError(f"{path}: image {bad['image_id'].iloc[0]!r}: rel_path {bad['rel_path'].iloc[0]!r} is not a "
                            f"path relative to its root without '..' ({len(bad):,} such image(s)); refusing it")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the schema's pandas dtypes (columns already of their dtype are not converted again: each
    astype costs about 0.1 ms, and small files are ingested in their thousands by the fuzz tests)."""
    dtypes = {k: v for k, v in _PANDAS_DTYPES.items() if k in frame.columns and frame[k].dtype != v}
    if not dtypes:
        return frame
    return frame.assign(**{k: frame[k].astype(v) for k, v in dtypes.items()})  # astype(dict) copies every column


def empty_faces() -> pd.DataFrame:
    return _EMPTY_FACES.copy()


_EMPTY_FACES = _typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in FACE_COLUMNS}))


class ManifestBuilder:
    """Collects images and faces column-wise (vectorised per image) and builds a typed Manifest.

    Parsers call add_image once per image, then add_faces with arrays for that image's faces.
    """

    def __init__(self, source: str, split: str, root: str) -> None:
        self.source, self.split, self.root = source, split, root
        self._images: dict[str, list[Any]] = {c: [] for c in IMAGE_COLUMNS}
        self._face_blocks: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def add_image(
        self,
        image_id: str,
        rel_path: str,
        *,
        width: int | None = None,
        height: int | None = None,
        event: str | None = None,
        tags: dict[str, Any] | None = None,
        split: str | None = None,
    ) -> bool:
        """Add an image; False (and nothing added) if the id was already added."""
        if image_id in self._seen:
            return False
        self._seen.add(image_id)
        row = {
            "image_id": image_id,
            "root": self.root,
            "rel_path": rel_path,
            "split": split or self.split,
            "source": self.source,
            "width": width,
            "height": height,
            "event": event,
            "tags": json.dumps(tags, sort_keys=True) if tags else None,
        }
        for key, value in row.items():
            self._images[key].append(value)
        return True

    def add_faces(
        self,
        image_id: str | np.ndarray,
        boxes: np.ndarray,
        *,
        attributes: dict[str, np.ndarray] | None = None,
        invalid: np.ndarray | None = None,
        scheme: str | None = None,
        points: np.ndarray | None = None,
        visible: np.ndarray | None = None,
        head_pose: np.ndarray | None = None,
        source_lines: np.ndarray | None = None,
        derived_box: bool | np.ndarray = False,
        ignore: np.ndarray | None = None,
    ) -> None:
        """boxes (N, 4) x1 y1 x2 y2; points (N, K, 2); visible (N, K); head_pose (N, 3) yaw pitch roll in
        degrees (schema docstring); derived_box (one bool or (N,)): the boxes are the points' extent, not
        annotations; ignore (N,): faces kept as ignore regions (e.g. COCO crowds, dlib `ignore` boxes).

        `image_id` is one id for all N faces, or an (N,) array of ids so a parser can add a whole
        file in one vectorised call.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)
        if n == 0:
            return
        block: dict[str, Any] = {
            "image_id": np.full(n, image_id, dtype=object)
            if isinstance(image_id, str)
            else np.asarray(image_id, dtype=object),
            "x1": boxes[:, 0],
            "y1": boxes[:, 1],
            "x2": boxes[:, 2],
            "y2": boxes[:, 3],
            "invalid": np.zeros(n, bool) if invalid is None else np.asarray(invalid, bool),
            "source_lines": source_lines,
            "box_source": np.where(np.broadcast_to(np.asarray(derived_box, bool), n), BOX_DERIVED,
                                   BOX_ANNOTATED).astype(object),
            "ignore": np.zeros(n, bool) if ignore is None else np.asarray(ignore, bool),
        }
        for name in FACE_ATTRIBUTES:
            values = (attributes or {}).get(name)
            block[name] = (
                np.full(n, UNKNOWN_ATTRIBUTE, np.int8) if values is None else np.asarray(values, np.int8)
            )
        if points is not None:
            pts = np.asarray(points, np.float32).reshape(n, -1, 2)
            vis = np.full(pts.shape[:2], 2, np.int8) if visible is None else np.asarray(visible, np.int8)
            block["scheme"] = np.full(n, scheme, dtype=object)
            block["points"] = list(pts.reshape(n, -1))
            block["visible"] = list(vis.reshape(n, -1))
        block["head_pose"] = None if head_pose is None else np.asarray(head_pose, np.float32).reshape(n, 3)
        self._face_blocks.append(block)

    def build(self, provenance: dict[str, Any]) -> Manifest:
        images = _typed(pd.DataFrame(self._images, columns=IMAGE_COLUMNS))
        if not self._face_blocks:
            return Manifest(images, empty_faces(), provenance)
        columns: dict[str, Any] = {}
        for name in ("image_id", "x1", "y1", "x2", "y2", "invalid", "box_source", "ignore", *FACE_ATTRIBUTES):
            columns[name] = np.concatenate([b[name] for b in self._face_blocks])
        total = len(columns["x1"])
        columns["face_id"] = np.arange(total, dtype=np.int64)
        columns["scheme"] = _concat_optional(self._face_blocks, "scheme", None)
        columns["points"] = _concat_optional(self._face_blocks, "points", None)
        columns["visible"] = _concat_optional(self._face_blocks, "visible", None)
        lines = _concat_optional(self._face_blocks, "source_lines", None)
        columns["source_line"] = pd.array(lines, dtype="Int32")
        pose = np.concatenate(
            [
                b["head_pose"]
                if b["head_pose"] is not None
                else np.full((len(b["x1"]), 3), np.nan, np.float32)
                for b in self._face_blocks
            ]
        )
        columns["yaw"], columns["pitch"], columns["roll"] = pose[:, 0], pose[:, 1], pose[:, 2]
        columns["pose_source"] = np.where(np.isfinite(pose).any(axis=1), POSE_ANNOTATED, None)
        columns["degenerate"] = degenerate(np.stack([columns[k] for k in ("x1", "y1", "x2", "y2")], axis=1))
        columns.update({name: np.full(total, default, np.float32 if _PANDAS_DTYPES[name] == "float32" else object)
                        for name, default in ADDED_IN_4.items() if name not in columns})
        faces = _typed(pd.DataFrame(columns))
        return Manifest(images, faces[FACE_COLUMNS], provenance)


def _concat_optional(blocks: list[dict[str, Any]], key: str, fill: Any) -> list[Any]:
    out: list[Any] = []
    for block in blocks:
        values = block.get(key)
        out.extend([fill] * len(block["x1"]) if values is None else list(values))
    return out


def make_provenance(
    source_format: str,
    source_files: list[str | os.PathLike[str]],
    roots: dict[str, str],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "source_format": source_format,
        "source_files": source_provenance(source_files),
        "roots": roots,
        "facedata_version": __version__,
        "command": command_line(),
        **extra,
    }
