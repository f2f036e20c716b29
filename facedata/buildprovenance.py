"""What a build records about its inputs: manifest content hashes and sizes, the mix as JSON."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from facedata.manifest import Manifest, to_table
from facedata.samplers.tasks import TaskTable, task_table
from facedata.samples import LABEL_NAMES

ManifestInput = Manifest | str | os.PathLike[str]


def manifest_sha256(manifest: Manifest) -> str:
    """Content hash of a manifest (images + faces, Arrow IPC), independent of its provenance."""
    table = to_table(manifest).replace_schema_metadata(None)
    digest = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(digest, mode="w"), table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 16)  # streamed into the hash, no IPC copy in RAM
    return digest.sha.hexdigest()


class _HashSink(io.RawIOBase):
    """A write-only file that hashes what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha.update(data)
        return len(memoryview(data))


def load_tasks(
    manifest: ManifestInput, origin: int, size_rule: tuple[float, str], roots: dict[str, str] | None
) -> tuple[TaskTable, dict[str, Any]]:
    """A manifest's task table and provenance entry (a manifest given as a path is read and dropped)."""
    path = None
    if not isinstance(manifest, Manifest):
        path = str(Path(manifest).resolve())
        manifest = Manifest.read(manifest)
    ignore_under, face_side = size_rule
    table = task_table(manifest, origin, ignore_under=ignore_under, face_side=face_side, roots=roots)
    return table, manifest_info(manifest, path)


def manifest_info(manifest: Manifest, path: str | None) -> dict[str, Any]:
    """Provenance of an input manifest; `path` (None for an in-memory manifest) lets verify find it."""
    return {
        "path": path,
        "sha256": manifest_sha256(manifest),
        "images": len(manifest.images),
        "faces": len(manifest.faces),
        "source_files": manifest.provenance.get("source_files", []),
    }


def ratio_json(ratio: dict[int, float]) -> dict[str, float]:
    return {LABEL_NAMES.get(k, str(k)): float(v) for k, v in sorted(ratio.items())}
