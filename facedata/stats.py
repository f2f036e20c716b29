"""Corpus statistics for a manifest: one JSON-serialisable dict and plain-text / Markdown renderers.

Conventions (also stated in the rendered output):
- Faces flagged `ignore` (removed by `filter`, kept as ignore regions) are counted apart, in
  `ignored_faces`, and nowhere else: every other figure is about the faces left for training.
- Face size is the shorter side of the box (facedata.faces: the one convention of filter, stats and build)
  in original-image pixels, binned in powers of two. Degenerate boxes (w or h <= 0) are counted
  separately, not binned.
- The input-resolution survival table resizes each image to fit the detector input keeping its aspect
  ratio ("fit": scale = min(tw / W, th / H), the image may be scaled up) or stretching it to the input
  ("stretch": x scaled by tw / W, y by th / H, as Ultra-Light-Fast's cv2.resize to 320x240 does), then
  counts faces whose size (shorter side) falls under `survival_px` px. It needs image width/height; faces of
  images of unknown size are counted as unknown, never guessed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from facedata.console import number
from facedata.errors import FacedataError
from facedata.faces import degenerate as is_degenerate
from facedata.faces import face_boxes, face_size, flagged
from facedata.manifest import Manifest
from facedata.schema import ATTRIBUTE_CODES, BOX_DERIVED, FACE_ATTRIBUTES, UNKNOWN_ATTRIBUTE

DEFAULT_INPUTS: tuple[tuple[int, int], ...] = ((320, 240), (480, 360), (640, 480))
DEFAULT_SURVIVAL_PX = 10.0
RESIZE_RULES = ("fit", "stretch")
# Faces per image buckets: (label, low, high) inclusive.
_PER_IMAGE_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("0", 0, 0),
    ("1", 1, 1),
    ("2-5", 2, 5),
    ("6-10", 6, 10),
    ("11-50", 11, 50),
    (">50", 51, math.inf),
)
# Face size edges (px) for the shorter side: [0, 4), [4, 8), ... [512, 1024), [1024, inf).
_SIZE_EDGES: tuple[int, ...] = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_POSE_EDGES: tuple[float, ...] = (-60, -30, -15, 15, 30, 60)  # degrees
_EAR_EDGES: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)  # PFPLD keeps closed eyes at EAR <= 0.1
_NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?%?")


def parse_inputs(text: str) -> list[tuple[int, int]]:
    """'320x240,640x480' -> [(320, 240), (640, 480)]."""
    out: list[tuple[int, int]] = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = item.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise FacedataError(
                f"--inputs: {item!r} is not WIDTHxHEIGHT with positive integers (e.g. 320x240)"
            )
        out.append((int(parts[0]), int(parts[1])))
    if not out:
        raise FacedataError("--inputs: no input sizes given")
    return out


def compute_stats(
    manifest: Manifest,
    inputs: Sequence[tuple[int, int]] = DEFAULT_INPUTS,
    survival_px: float = DEFAULT_SURVIVAL_PX,
    resize: str = "fit",
) -> dict[str, Any]:
    """Everything `facedata stats` shows, as plain ints/floats/strings (json.dumps-able)."""
    if resize not in RESIZE_RULES:
        raise FacedataError(f"unknown resize rule {resize!r}; known: {', '.join(RESIZE_RULES)}")
    images, faces = manifest.images, manifest.faces
    ignored = faces["ignore"].to_numpy(bool)
    faces = faces.loc[~ignored]
    manifest = Manifest(images, faces, manifest.provenance)
    w = (faces["x2"] - faces["x1"]).to_numpy(np.float64)
    h = (faces["y2"] - faces["y1"]).to_numpy(np.float64)
    boxes = face_boxes(faces)
    degenerate = is_degenerate(boxes)
    per_image = faces.groupby("image_id", sort=False).size().reindex(images["image_id"], fill_value=0)
    known_size = images["width"].notna() & images["height"].notna()
    return {
        "images": int(len(images)),
        "faces": int(len(faces)),
        "ignored_faces": int(ignored.sum()),
        "images_without_faces": int((per_image == 0).sum()),
        "images_with_size": int(known_size.sum()),
        "by_split": _group_counts(images, faces, "split"),
        "by_source": _group_counts(images, faces, "source"),
        "faces_per_image": _per_image(per_image.to_numpy()),
        "face_size": _size_histogram(face_size(w, h)[~degenerate]),
        "flags": {
            "invalid": int(faces["invalid"].sum()),
            "degenerate": int(degenerate.sum()),
            "invalid_or_degenerate": int(flagged(boxes, faces["invalid"].to_numpy(bool)).sum()),
        },
        "attributes": _attributes(faces),
        "landmarks": _landmarks(faces, images),
        "survival": _survival(manifest, w, h, inputs, survival_px, resize),
    }


def _group_counts(images: pd.DataFrame, faces: pd.DataFrame, column: str) -> dict[str, dict[str, int]]:
    n_images = images.groupby(column, sort=True).size()
    face_groups = faces[["image_id"]].merge(images[["image_id", column]], on="image_id", how="left")
    n_faces = face_groups.groupby(column, sort=True).size()
    return {
        str(key): {"images": int(n_images[key]), "faces": int(n_faces.get(key, 0))} for key in n_images.index
    }


def _per_image(counts: np.ndarray) -> dict[str, Any]:
    buckets = {label: int(((counts >= lo) & (counts <= hi)).sum()) for label, lo, hi in _PER_IMAGE_BUCKETS}
    return {
        "buckets": buckets,
        "max": int(counts.max()) if len(counts) else 0,
        "mean": round(float(counts.mean()), 4) if len(counts) else 0.0,
        "median": float(np.median(counts)) if len(counts) else 0.0,
    }


def _size_histogram(sizes: np.ndarray) -> dict[str, Any]:
    edges = np.array([*_SIZE_EDGES, np.inf])
    counts, _ = np.histogram(sizes, bins=edges)
    labels = [f"{lo}-{hi}" for lo, hi in zip(_SIZE_EDGES[:-1], _SIZE_EDGES[1:], strict=True)]
    labels.append(f">={_SIZE_EDGES[-1]}")
    return {
        "measure": "shorter side min(w, h) px, bins [lo, hi); degenerate boxes excluded",
        "buckets": {label: int(c) for label, c in zip(labels, counts, strict=True)},
        "median": round(float(np.median(sizes)), 2) if len(sizes) else None,
    }


def _attributes(faces: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Counts per code name for each attribute (WIDER, WFLW); faces without the attribute count as unknown."""
    out: dict[str, dict[str, int]] = {}
    for name in (*FACE_ATTRIBUTES, "invalid"):
        codes = ATTRIBUTE_CODES[name]
        values = faces[name].astype("int64") if name == "invalid" else faces[name]
        counts = values.value_counts()
        table = {label: int(counts.get(code, 0)) for code, label in codes.items()}
        other = {
            int(c): int(n) for c, n in counts.items() if int(c) not in codes and int(c) != UNKNOWN_ATTRIBUTE
        }
        table.update({f"code {c}": n for c, n in sorted(other.items())})
        table["unknown"] = int(counts.get(UNKNOWN_ATTRIBUTE, 0))
        out[name] = table
    # `invalid` is a flag, always known; drop its (always zero) unknown row for clarity.
    out["invalid"].pop("unknown")
    return out


def _landmarks(faces: pd.DataFrame, images: pd.DataFrame) -> dict[str, Any]:
    """Per scheme: faces, points with coordinates, and (landmark corpora) faces per source, the share of each
    point group's points present (mask coverage), pose and EAR histograms, faces whose box is derived."""
    has = faces["scheme"].notna()
    sources = images.set_index("image_id")["source"].reindex(faces["image_id"]).to_numpy(object)
    schemes: dict[str, dict[str, Any]] = {}
    for scheme, group in faces.loc[has].groupby("scheme", sort=True):
        n_points = group["points"].map(len).to_numpy() // 2
        present = [np.asarray(v) > 0 for v in group["visible"]]
        schemes[str(scheme)] = {
            "faces": int(len(group)),
            "points_per_face": int(n_points.max()) if len(n_points) else 0,
            "points_with_coordinates": int(sum(int(p.sum()) for p in present)),
            "by_source": {str(k): int(v) for k, v in pd.Series(sources[group.index]).value_counts(sort=False).items()},
            "group_coverage": _group_coverage(str(scheme), present),
            "box_derived": int((group["box_source"] == BOX_DERIVED).sum()),
        }
    return {
        "faces_with_landmarks": int(has.sum()),
        "faces_without_landmarks": int((~has).sum()),
        "schemes": schemes,
        "pose_source": {str(k): int(v) for k, v in faces.loc[has, "pose_source"].value_counts().items()},
        "pose": {a: _histogram(faces.loc[has, a], _POSE_EDGES) for a in ("yaw", "pitch", "roll")},
        "ear_min": _histogram(faces.loc[has, "ear_min"], _EAR_EDGES),
    }


def _group_coverage(scheme: str, present: list[np.ndarray]) -> dict[str, float]:
    """Share of each point group's points present over the faces (empty for an unregistered scheme)."""
    from facedata.fusion.schemes import SCHEMES

    if scheme not in SCHEMES or not present or len({len(p) for p in present}) != 1:
        return {}
    stacked = np.stack(present)
    return {g: round(float(stacked[:, list(idx)].mean()), 4) for g, idx in SCHEMES.get(scheme).groups.items()}


def _histogram(values: pd.Series, edges: tuple[float, ...]) -> dict[str, int]:
    """Counts per bin [lo, hi), plus `unknown` for NaN; empty when every value is unknown."""
    data = values.to_numpy(np.float64)
    known = data[np.isfinite(data)]
    if not len(known):
        return {}
    bounds = np.array([-np.inf, *edges, np.inf])
    counts, _ = np.histogram(known, bins=bounds)
    labels = [f"<{edges[0]:g}", *(f"{lo:g}..{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)),
              f">={edges[-1]:g}"]
    return {**{label: int(c) for label, c in zip(labels, counts, strict=True)}, "unknown": int(len(data) - len(known))}


def _survival(
    manifest: Manifest,
    w: np.ndarray,
    h: np.ndarray,
    inputs: Sequence[tuple[int, int]],
    survival_px: float,
    resize: str,
) -> dict[str, Any]:
    sizes = manifest.images.set_index("image_id")[["width", "height"]]
    joined = sizes.reindex(manifest.faces["image_id"])
    img_w = joined["width"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    img_h = joined["height"].astype("Float64").to_numpy(np.float64, na_value=np.nan)
    known = np.isfinite(img_w) & np.isfinite(img_h) & (img_w > 0) & (img_h > 0)
    n_known = int(known.sum())
    fw, fh, iw, ih = w[known], h[known], img_w[known], img_h[known]
    rows = [_survival_row("native", 1.0, 1.0, fw, fh, survival_px, n_known)]
    for tw, th in inputs:
        sx, sy = tw / iw, th / ih
        if resize == "fit":
            sx = sy = np.minimum(sx, sy)
        rows.append(_survival_row(f"{tw}x{th}", sx, sy, fw, fh, survival_px, n_known))
    note = None
    if n_known < len(manifest.faces):
        note = (
            f"image size unknown for {number(len(manifest.faces) - n_known)} of {number(len(manifest.faces))} faces"
            " (ingest with --images to probe sizes); those faces are not in the table"
        )
    return {
        "survival_px": survival_px,
        "resize": resize,
        "rule": "fit: scale = min(tw/W, th/H) (aspect kept)"
        if resize == "fit"
        else "stretch: x*tw/W, y*th/H",
        "measure": f"shorter side of the resized box < {survival_px:g} px",
        "faces_with_image_size": n_known,
        "faces_unknown_size": int(len(manifest.faces) - n_known),
        "note": note,
        "rows": rows,
    }


def _survival_row(
    label: str, sx: Any, sy: Any, fw: np.ndarray, fh: np.ndarray, survival_px: float, n_known: int
) -> dict[str, Any]:
    under = int((face_size(fw * sx, fh * sy) < survival_px).sum())
    return {
        "input": label,
        "faces": n_known,
        "under": under,
        "share_under": round(under / n_known, 6) if n_known else None,
    }


# ----------------------------------------------------------------------------------------- renderers


def render_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, sort_keys=False)


def render_text(stats: dict[str, Any], title: str | None = None) -> str:
    """Plain-text tables for the terminal."""
    return "\n".join(_render(stats, title, markdown=False)) + "\n"


def render_markdown(stats: dict[str, Any], title: str | None = None) -> str:
    return "\n".join(_render(stats, title, markdown=True)) + "\n"


def _render(stats: dict[str, Any], title: str | None, markdown: bool) -> list[str]:
    out: list[str] = []

    def heading(text: str) -> None:
        out.append("")
        out.append(f"## {text}" if markdown else f"{text}\n{'-' * len(text)}")

    def table(header: list[str], rows: list[list[Any]]) -> None:
        out.extend(_table(header, [[_cell(v) for v in row] for row in rows], markdown))

    if title:
        out.append(f"# {title}" if markdown else title)
    ignored = f" (+{number(stats['ignored_faces'])} ignored)" if stats["ignored_faces"] else ""
    out.append(
        f"{number(stats['images'])} images, {number(stats['faces'])} faces{ignored},"
        f" {number(stats['images_without_faces'])} images without faces,"
        f" {number(stats['images_with_size'])} images with known size"
    )
    for key, label in (("by_split", "split"), ("by_source", "source")):
        heading(f"By {label}")
        table([label, "images", "faces"], [[k, v["images"], v["faces"]] for k, v in stats[key].items()])
    per = stats["faces_per_image"]
    heading("Faces per image")
    table(["faces", "images"], [[_bucket_text(k), v] for k, v in per["buckets"].items()])
    out.append(f"max {number(per['max'])}, mean {per['mean']:,.2f}, median {number(per['median'])}")
    size = stats["face_size"]
    heading("Face size")
    table(["min(w,h) px", "faces"], [[_bucket_text(k), v] for k, v in size["buckets"].items()])
    out.append(f"{size['measure']}; median {number(size['median'])}")
    flags = stats["flags"]
    heading("Flags")
    table(["flag", "faces"], [[k, v] for k, v in flags.items()])
    heading("Attributes")
    rows = []
    for name, counts in stats["attributes"].items():
        total = sum(counts.values()) or 1
        if counts.get("unknown", 0) == total:
            continue  # no face carries this attribute (e.g. a landmark set): nothing to show
        for label, n in counts.items():
            if n or label != "unknown":
                rows.append([name, label, n, f"{100 * n / total:.1f}%"])
    table(["attribute", "value", "faces", "share"], rows)
    lm = stats["landmarks"]
    heading("Landmarks")
    table(
        ["scheme", "faces", "points/face", "points with coords"],
        [
            [k, v["faces"], v["points_per_face"], v["points_with_coordinates"]]
            for k, v in lm["schemes"].items()
        ]
        + [["(none)", lm["faces_without_landmarks"], 0, 0]],
    )
    for scheme, info in lm["schemes"].items():
        out.append(f"{scheme}: by source " + ", ".join(f"{k} {number(v)}" for k, v in info["by_source"].items())
                   + f"; boxes derived from the points: {number(info['box_derived'])}")
        if info["group_coverage"]:
            out.append("  points present per group: "
                       + ", ".join(f"{g} {100 * c:.1f}%" for g, c in info["group_coverage"].items()))
    if lm["pose_source"]:
        out.append("pose source: " + ", ".join(f"{k} {number(v)}" for k, v in lm["pose_source"].items()))
    for name, hist in [*lm["pose"].items(), ("ear_min", lm["ear_min"])]:
        if hist:
            out.append(f"{name}: " + ", ".join(f"{k} {number(v)}" for k, v in hist.items()))
    surv = stats["survival"]
    heading(f"Input-resolution survival (faces under {surv['survival_px']:g} px)")
    table(
        ["input", "faces", "under", "share"],
        [
            [
                r["input"],
                r["faces"],
                r["under"],
                "n/a" if r["share_under"] is None else f"{100 * r['share_under']:.2f}%",
            ]
            for r in surv["rows"]
        ],
    )
    out.append(f"resize {surv['rule']}; {surv['measure']}")
    if surv["note"]:
        out.append(f"note: {surv['note']}")
    return out


def _numeric(text: str) -> bool:
    return text == "n/a" or bool(_NUMBER.fullmatch(text))


def _bucket_text(key: str) -> str:
    """A bucket key of the JSON ("512-1024", ">=1024") with its bounds written as every number is (512-1,024)."""
    return re.sub(r"\d+", lambda bound: number(int(bound[0])), key)


def _cell(value: Any) -> str:
    return "" if value is None else number(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table of text cells (also the data card's)."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["", *markdown_table(header, rows), ""]
    columns = list(zip(header, *rows, strict=True))
    widths = [max(len(c) for c in col) for col in columns]
    right = [bool(rows) and all(_numeric(c) for c in col[1:]) for col in columns]

    def fmt(row: list[str]) -> str:
        cells = [c.rjust(wd) if r else c.ljust(wd) for c, wd, r in zip(row, widths, right, strict=True)]
        return "  ".join(cells).rstrip()

    return [fmt(header), fmt(["-" * wd for wd in widths]), *(fmt(r) for r in rows)]
