"""Integrity check of a shard directory: every shard re-hashed and re-counted against index.json."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facedata.console import labels_text, number
from facedata.errors import FacedataError
from facedata.paths import sha256_file
from facedata.storage.base import BACKENDS, Backend, ShardSchema
from facedata.storage.index import INDEX_NAME, PARTIAL_INDEX_NAME, SHARD_NAME, load_index


def verify_dataset(path: str | os.PathLike[str]) -> list[str]:
    """Problems found, each naming its shard (or index.json); [] when the directory is sound."""
    path = Path(path)
    if not (path / INDEX_NAME).exists() and (path / PARTIAL_INDEX_NAME).exists():
        return [f"{INDEX_NAME}: not written yet: {path} holds an interrupted build; run the same build command "
                "again to resume it (complete shards are kept)"]
    try:
        index = load_index(path)
        backend = BACKENDS.get(index["backend"])()
        schema = ShardSchema.from_index(index)
    except FacedataError as exc:
        return [f"{INDEX_NAME}: {exc}"]
    problems: list[str] = []
    total = 0
    totals: dict[str, int] = {}
    listed = set()
    for k, entry in enumerate(index["shards"]):
        name = entry["file"]
        listed.add(name)
        if entry.get("first_index") != k * schema.samples_per_shard:
            problems.append(f"{name}: first_index {number(entry.get('first_index'))}, expected "
                            f"{number(k * schema.samples_per_shard)} (shard {k} of "
                            f"{number(schema.samples_per_shard)} samples each)")
        if k < len(index["shards"]) - 1 and entry.get("samples") != schema.samples_per_shard:
            problems.append(f"{name}: {number(entry.get('samples'))} samples, expected "
                            f"{number(schema.samples_per_shard)}")
        total += int(entry.get("samples", 0))
        for label, count in entry.get("label_counts", {}).items():
            totals[label] = totals.get(label, 0) + count
        problems.extend(_check_shard(path / name, entry, backend, schema))
    if total != index["samples"] and not any(" samples" in p for p in problems):  # else a shard line says why
        problems.append(f"{INDEX_NAME}: says {number(index['samples'])} samples but its shards list {number(total)}")
    if totals != index.get("label_counts", {}):
        problems.append(f"{INDEX_NAME}: label counts {labels_text(index.get('label_counts', {}))} != sum over shards "
                        f"{labels_text(totals)}")
    for file in sorted(path.iterdir()):
        if SHARD_NAME.match(file.name) and file.name not in listed:
            problems.append(f"{file.name}: shard file not listed in {INDEX_NAME}")
    return problems


def _check_shard(file: Path, entry: dict, backend: Backend, schema: ShardSchema) -> list[str]:
    """At most one line for the file itself (missing, wrong size, changed bytes, unreadable), then counts."""
    name = file.name
    if not file.is_file():
        return [f"{name}: missing (listed in {INDEX_NAME})"]
    size = file.stat().st_size
    if size != entry.get("bytes"):
        state = "truncated" if size < entry.get("bytes", 0) else "longer than recorded"
        return [f"{name}: {state}: {size:,} bytes on disk, {INDEX_NAME} says {entry.get('bytes'):,}"]
    if sha256_file(file) != entry.get("sha256"):
        # Not parsed further: a corrupt LMDB page can crash the reading process, not just raise.
        return [f"{name}: sha256 mismatch: the bytes changed since the build (same size, {size:,} bytes)"]
    try:
        source = backend.open_source(file, schema, int(entry["samples"]))
        try:
            labels = source.labels()
        finally:
            source.close()
    except Exception as exc:  # a corrupt shard can fail inside LMDB/Arrow in many ways; report, don't crash
        return [f"{name}: unreadable ({exc.__class__.__name__}: {exc})"]
    if len(labels) != entry["samples"]:
        return [f"{name}: holds {number(len(labels))} samples, {INDEX_NAME} says {number(entry['samples'])}"]
    values, counts = np.unique(labels, return_counts=True)
    found = {str(v): c for v, c in zip(values.tolist(), counts.tolist(), strict=True)}
    expected = {str(k): v for k, v in entry.get("label_counts", {}).items()}
    if found != expected:
        return [f"{name}: label counts {labels_text(found)} differ from {INDEX_NAME}'s {labels_text(expected)}"]
    return []
