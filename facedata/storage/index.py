"""The dataset index (`index.json`): schema, shard list with hashes and counts, provenance.

Everything a reader needs is plain JSON (the record dtype as `np.dtype.descr`), so no pickle is ever
involved, and the same description is the resume fingerprint of an interrupted build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from facedata.console import key_value_lines, label_name, labels_text, number
from facedata.errors import FacedataError
from facedata.paths import atomic_write

FORMAT_NAME = "facedata-shards"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
PARTIAL_INDEX_NAME = "index.partial.json"
SHARD_NAME = re.compile(r"^shard-(\d{5,})\.([a-z0-9]+)$")
# Provenance keys that may differ between an interrupted run and its resume without changing any byte.
VOLATILE_PROVENANCE_KEYS = frozenset({"command_line", "argv", "started_at", "created_at", "hostname"})
# Where a file identified by its sha256 was found: moving or renaming an input changes no byte.
LOCATION_KEYS = frozenset({"path", "name", "file"})
_ABSENT = object()


def shard_file_name(shard: int, suffix: str) -> str:
    return f"shard-{shard:05d}.{suffix}"


def samples_per_shard(shard_bytes: int, bytes_per_sample: int, block_samples: int) -> int:
    """Whole blocks per shard, at least one: shard k then holds global samples [kM, (k+1)M)."""
    if shard_bytes <= 0 or block_samples <= 0 or bytes_per_sample <= 0:
        raise FacedataError("shard_bytes, block_samples and the sample size must be positive")
    return max(block_samples, (shard_bytes // bytes_per_sample) // block_samples * block_samples)


def dtype_to_json(dtype: np.dtype) -> list:
    """A structured dtype as JSON-able `descr` (lists instead of tuples)."""
    return json.loads(json.dumps(np.dtype(dtype).descr))


def dtype_from_json(descr: list) -> np.dtype:
    """Inverse of `dtype_to_json`; refuses object fields so a hostile index cannot ask for pickles."""
    fields = []
    for item in descr:
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise FacedataError(f"bad record dtype entry in index: {item!r}")
        name, fmt = str(item[0]), str(item[1])
        if "O" in fmt:
            raise FacedataError(f"record field {name!r} has an object dtype, which is not allowed")
        fields.append((name, fmt) if len(item) == 2 else (name, fmt, tuple(int(x) for x in item[2])))
    try:
        return np.dtype(fields)
    except (TypeError, ValueError) as exc:
        raise FacedataError(f"bad record dtype in index: {descr!r} ({exc})") from None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _stable(layout: dict, provenance: dict) -> dict:
    """What fixes the shard bytes: the layout and the provenance without volatile keys and input locations."""
    stable = {k: _content(v) for k, v in provenance.items() if k not in VOLATILE_PROVENANCE_KEYS}
    return {"layout": layout, "provenance": stable}


def _content(value: Any) -> Any:
    """`value` without the location keys of content-addressed entries (dicts holding a sha256)."""
    if not isinstance(value, dict):
        return value
    located = "sha256" in value
    return {k: _content(v) for k, v in value.items() if not (located and k in LOCATION_KEYS)}


def fingerprint(layout: dict, provenance: dict) -> str:
    """sha256 of the layout and the provenance minus volatile keys: equal => the same shard bytes."""
    return hashlib.sha256(canonical_json(_stable(layout, provenance)).encode()).hexdigest()


def differences(index: dict, layout: dict, provenance: dict, limit: int = 8) -> list[str]:
    """What differs between an index's build and a (layout, provenance), one dotted key per item:
    `seed: 0 -> 1`, `inputs.detections.sha256 changed`, `crop_recipe.ignore_under: 20.0 -> 40.0`."""
    old = _flatten(_stable({k: index.get(k) for k in layout}, index.get("provenance", {})))
    new = _flatten(_stable(layout, provenance))
    items = []
    for key in sorted(set(old) | set(new), key=lambda k: (k.split(".")[0] == "layout", k)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a == b:
            continue
        name = key.split(".", 1)[1]
        shown = [_show(a), _show(b)]
        if name.endswith("sha256") or max(map(len, shown)) > 40:
            items.append(f"{name} changed")
        else:
            items.append(f"{name}: {shown[0]} -> {shown[1]}")
    if len(items) > limit:
        items[limit:] = [f"and {len(items) - limit} more"]
    return items


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.loads(canonical_json(value))}  # tuples and lists compare alike


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else canonical_json(value)


def write_json_atomic(path: Path, value: dict) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(value, fh, indent=1, sort_keys=False)
        fh.write("\n")


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except FileNotFoundError:
        raise FacedataError(f"{path}: not found (is this a facedata shard directory?)") from None
    except json.JSONDecodeError as exc:
        raise FacedataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FacedataError(f"{path}: expected a JSON object")
    return value


def load_index(directory: str | os.PathLike[str]) -> dict:
    """Read and sanity-check `index.json`: version, known fields, shard names that stay in the dir."""
    directory = Path(directory)
    index = read_json(directory / INDEX_NAME)
    check_index(index, directory / INDEX_NAME)
    return index


def check_index(index: dict, where: Path) -> None:
    if index.get("format") != FORMAT_NAME:
        raise FacedataError(f"{where}: not a facedata shard index (format={index.get('format')!r})")
    if index.get("version") != FORMAT_VERSION:
        raise FacedataError(f"{where}: index version {index.get('version')!r}, expected {FORMAT_VERSION}")
    for key in ("backend", "image_shape", "record_dtype", "samples", "samples_per_shard", "unit_samples",
                "block_samples", "shards"):
        if key not in index:
            raise FacedataError(f"{where}: missing {key!r}")
    _check_counts(index, ("samples", "samples_per_shard", "unit_samples", "block_samples"), where)
    for key in ("samples_per_shard", "unit_samples", "block_samples"):
        if index[key] == 0:
            raise FacedataError(f"{where}: {key} is 0")
    shape = index["image_shape"]
    if not isinstance(shape, list) or len(shape) != 3 or not all(_is_count(x) and x > 0 for x in shape):
        raise FacedataError(f"{where}: image_shape {shape!r} is not [height, width, channels]")
    if not isinstance(index["shards"], list):
        raise FacedataError(f"{where}: shards is not a list")
    for k, entry in enumerate(index["shards"]):
        name = entry.get("file", "") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not SHARD_NAME.match(name):
            raise FacedataError(f"{where}: refusing shard file name {name!r}")
        _check_counts(entry, ("samples", "bytes", "first_index"), f"{where}: shards[{k}] ({name})")
        if not isinstance(entry.get("sha256"), str):
            raise FacedataError(f"{where}: shards[{k}] ({name}): sha256 missing or not a string")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_counts(entry: dict, keys: tuple[str, ...], where: str | Path) -> None:
    """Each of `keys` a non-negative integer: a hand-edited or damaged index fails here in one line."""
    for key in keys:
        if not _is_count(entry.get(key)):
            raise FacedataError(f"{where}: {key} {entry.get(key)!r} is not a non-negative integer")


def _named_anchor(summary: dict) -> dict:
    """The mix's anchor class by name, as every other label is shown (index.json keeps its code)."""
    mixing = summary.get("mixing")
    if not isinstance(mixing, dict) or "anchor" not in mixing:
        return summary
    return {**summary, "mixing": {**mixing, "anchor": label_name(mixing["anchor"])}}


def describe(index: dict) -> str:
    """A human summary of an index: layout, counts per label, shards, bytes, provenance highlights, the
    build summary; aligned keys, label names in class order, numbers as facedata.console prints them."""
    samples, shards = int(index["samples"]), index["shards"]
    per_sample = index.get("bytes", 0) / samples if samples else 0.0
    provenance = index.get("provenance", {})
    rows = [
        ("backend", f"{index['backend']} (format {index['format']} v{index['version']})"),
        ("samples", f"{number(samples)} in {number(len(shards))} shard(s) "
                    f"of up to {number(index['samples_per_shard'])}"),
        ("image", f"{'x'.join(map(str, index['image_shape']))} uint8, stored {index.get('image_encoding', 'raw')}"),
        ("record fields", ", ".join(str(item[0]) for item in index["record_dtype"])),
        ("bytes", f"{number(index.get('bytes', 0))} ({number(round(per_sample, 1))} per sample, "
                  f"raw {number(int(index.get('bytes_per_sample', 0)))})"),
        ("read unit", f"{number(index['unit_samples'])} samples (block {number(index['block_samples'])})"),
        ("labels", labels_text(index.get("label_counts", {}))),
        *((key, provenance[key]) for key in ("facedata_version", "seed", "command_line") if key in provenance),
        ("summary", _named_anchor(index.get("summary", {}))),
    ]
    lines = key_value_lines(rows)
    lines.append(f"shards ({number(len(shards))})")
    table = [(e["file"], number(e["samples"]), number(e["bytes"]), e["sha256"][:16]) for e in shards]
    widths = [max((len(row[k]) for row in table), default=0) for k in range(3)]
    lines += [f"  {name:<{widths[0]}}  {n:>{widths[1]}} samples  {size:>{widths[2]}} B  sha256 {sha}"
              for name, n, size, sha in table]
    return "\n".join(lines)
