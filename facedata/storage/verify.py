"""Integrity check of a shard directory: every shard re-hashed and re-counted against index.json.

Each problem is a `Finding` (kind, file, detail), so callers test its kind instead of parsing text;
`str(finding)` is the one line the CLI prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.console import labels_text, number
from facedata.errors import FacedataError
from facedata.paths import sha256_file
from facedata.storage.base import BACKENDS, Backend, ShardSchema, file_digests
from facedata.storage.index import INDEX_NAME, PARTIAL_INDEX_NAME, SHARD_NAME, load_index

# Finding kinds. INDEX: index.json itself (unreadable, inconsistent, or not written yet).
INDEX, MISSING, TRUNCATED, LONGER, CHANGED, UNREADABLE, COUNT, LABELS, UNEXPECTED = (
    "index", "missing", "truncated", "longer", "changed", "unreadable", "count", "labels", "unexpected")


@dataclass(frozen=True)
class Finding:
    """One fault: its `kind` (a constant above), the `file` it is in (a shard, index.json, or an unexpected
    file) and a human `detail`."""

    kind: str
    file: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.detail}"


def verify_dataset(path: str | os.PathLike[str]) -> list[Finding]:
    """Problems found, each naming its shard (or index.json, or an unexpected file); [] when the directory
    is sound."""
    path = Path(path)
    if not (path / INDEX_NAME).exists() and (path / PARTIAL_INDEX_NAME).exists():
        return [Finding(INDEX, INDEX_NAME, f"not written yet: {path} holds an interrupted build; run the same build "
                        "command again to resume it (complete shards are kept)")]
    try:
        index = load_index(path)
        backend = BACKENDS.get(index["backend"])()
        schema = ShardSchema.from_index(index)
    except FacedataError as exc:
        return [Finding(INDEX, INDEX_NAME, str(exc))]
    problems: list[Finding] = []
    total = 0
    totals: dict[str, int] = {}
    listed = set()
    for k, entry in enumerate(index["shards"]):
        name = entry["file"]
        listed.add(name)
        if entry.get("first_index") != k * schema.samples_per_shard:
            problems.append(Finding(COUNT, name, f"first_index {number(entry.get('first_index'))}, expected "
                                    f"{number(k * schema.samples_per_shard)} (shard {k} of "
                                    f"{number(schema.samples_per_shard)} samples each)"))
        if k < len(index["shards"]) - 1 and entry.get("samples") != schema.samples_per_shard:
            problems.append(Finding(COUNT, name, f"{number(entry.get('samples'))} samples, expected "
                                    f"{number(schema.samples_per_shard)}"))
        total += int(entry.get("samples", 0))
        for label, count in entry.get("label_counts", {}).items():
            totals[label] = totals.get(label, 0) + count
        problems.extend(_check_shard(path / name, entry, backend, schema))
    if total != index["samples"] and not any(p.kind == COUNT for p in problems):  # else a shard line says why
        problems.append(Finding(COUNT, INDEX_NAME,
                                f"says {number(index['samples'])} samples but its shards list {number(total)}"))
    if totals != index.get("label_counts", {}):
        problems.append(Finding(LABELS, INDEX_NAME, f"label counts {labels_text(index.get('label_counts', {}))} "
                                f"!= sum over shards {labels_text(totals)}"))
    return problems + _unexpected_files(path, index, listed)


def _unexpected_files(path: Path, index: dict, listed: set[str]) -> list[Finding]:
    """Entries of the directory that a complete build does not leave: an unlisted shard, a stray temp or
    plan file, anything copied in. Expected: index.json, its shards, and the per-image reports its summary
    names (e.g. mining-report.csv)."""
    expected = {INDEX_NAME, *listed}
    for section in (index.get("summary") or {}).values():
        if isinstance(section, dict) and isinstance(section.get("per_image_report"), str):
            expected.add(section["per_image_report"])
    problems = []
    for file in sorted(path.iterdir()):
        if file.name in expected:
            continue
        what = "shard file" if SHARD_NAME.match(file.name) else "folder" if file.is_dir() else "file"
        problems.append(Finding(UNEXPECTED, file.name, f"unexpected {what}: not listed in {INDEX_NAME}"))
    return problems


def _check_shard(file: Path, entry: dict, backend: Backend, schema: ShardSchema) -> list[Finding]:
    """At most one finding for the file itself (missing, wrong size, changed bytes, unreadable), then counts."""
    name = file.name
    if not file.is_file():
        return [Finding(MISSING, name, f"missing (listed in {INDEX_NAME})")]
    size = file.stat().st_size
    if size != entry.get("bytes"):
        kind = TRUNCATED if size < entry.get("bytes", 0) else LONGER
        state = "truncated" if kind == TRUNCATED else "longer than recorded"
        return [Finding(kind, name, f"{state}: {size:,} bytes on disk, {INDEX_NAME} says {entry.get('bytes'):,}")]
    if sha256_file(file) != entry.get("sha256"):
        # Not opened with the backend's reader: a corrupt LMDB page can crash the reading process, not just raise.
        detail = f"sha256 mismatch: the bytes changed since the build (same size, {size:,} bytes)"
        return [Finding(CHANGED, name, detail + _where_changed(file, entry, backend, schema))]
    try:
        source = backend.open_source(file, schema, int(entry["samples"]))
        try:
            labels = source.labels()
        finally:
            source.close()
    except Exception as exc:  # a corrupt shard can fail inside LMDB/Arrow in many ways; report, don't crash
        return [Finding(UNREADABLE, name, f"unreadable ({exc.__class__.__name__}: {exc})")]
    if len(labels) != entry["samples"]:
        return [Finding(COUNT, name, f"holds {number(len(labels))} samples, {INDEX_NAME} says "
                        f"{number(entry['samples'])}")]
    values, counts = np.unique(labels, return_counts=True)
    found = {str(v): c for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
    expected = {str(k): v for k, v in entry.get("label_counts", {}).items()}
    if found != expected:
        return [Finding(LABELS, name, f"label counts {labels_text(found)} differ from {INDEX_NAME}'s "
                        f"{labels_text(expected)}")]
    return []


def _where_changed(file: Path, entry: dict, backend: Backend, schema: ShardSchema) -> str:
    """"; in block 3 (samples 3,072-4,095)": the pieces whose digest differs from the one index.json recorded
    (the sample numbers are the dataset's), or why they cannot be told; "" for an index without digests."""
    recorded = entry.get("piece_sha256")
    if not isinstance(recorded, list):
        return ""
    try:
        pieces = backend.pieces(file, schema, int(entry["samples"]))
        current = file_digests(file, pieces)[1]
    except Exception as exc:  # the changed bytes broke the file's own block table or footer
        return f"; its {backend.name} metadata is damaged too ({exc.__class__.__name__}: {exc})"
    if len(current) != len(recorded):
        return f"; it now lists {len(current)} pieces, {INDEX_NAME} recorded {len(recorded)}"
    base = int(entry.get("first_index", 0))
    changed = [f"{p.name} (samples {base + p.first:,}-{base + p.first + p.samples - 1:,})"
               for p, old, new in zip(pieces, recorded, current, strict=True) if old != new]
    if not changed:
        return "; every sample's bytes are intact: the change is in the file's metadata (page headers, footer)"
    return "; in " + ", ".join(changed)
