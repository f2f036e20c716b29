"""`facedata report`: a self-contained HTML page (`index.html`) plus `stats.json` for a manifest or a shard set.

Self-contained means every plot and image is inlined as a base64 PNG `data:` URI and the page has no
script, stylesheet or font from elsewhere: it opens from file, offline, and can be mailed as one file.
The figures are those of `facedata stats` (facedata.stats.compute_stats, the one place they are
computed) with the survival table extended to 1024x768, plus what only a picture shows: the mean
landmark shape per scheme (points in box units, with their per-point spread) and a grid of random
images with their boxes (green), ignore regions (red) and points (blue) drawn.

For a shard directory the samples are counted from the records themselves (not from index.json's counts):
samples per label per shard, the class mix achieved against the ratio the build asked for (both as shares of
the samples), the box-offset and landmark-target distributions, the contact sheet of facedata.preview and the
build's provenance (command, seed, inputs with their checksums).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global figure state; savefig renders with Agg
from matplotlib.patches import Rectangle

from facedata import console
from facedata.errors import FacedataError
from facedata.imageio import ImageError, read_image
from facedata.manifest import Manifest
from facedata.paths import atomic_write
from facedata.samples import LABEL_LANDMARK, LABEL_NAMES, LABEL_ORDER, LABEL_PART, LABEL_POSITIVE
from facedata.stats import DEFAULT_INPUTS, DEFAULT_SURVIVAL_PX, compute_stats

REPORT_INPUTS: tuple[tuple[int, int], ...] = (*DEFAULT_INPUTS, (1024, 768))
_CELL = 256  # px per image in the random grid
DEFAULT_BATCH = 384  # the MTCNN ports' usual batch size
# Bins of 1/32: edges exact in binary, so a target on an edge falls in the same bin whoever recounts it.
_OFFSET_EDGES = np.linspace(-1.0, 1.0, 65)  # box offsets, in crop sides
_TARGET_EDGES = np.linspace(-0.5, 1.5, 65)  # landmark targets, in crop units (0..1 inside the crop)
_CHUNK = 1 << 15
_FACE, _IGNORE, _POINT = (0, 200, 0), (0, 0, 255), (255, 80, 0)  # BGR
_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#eee}img{max-width:100%}
.plots{display:flex;flex-wrap:wrap;gap:8px}"""


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_tag(bgr: np.ndarray, alt: str) -> str:
    """An <img> with the BGR image inlined as PNG."""
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise FacedataError(f"PNG encoding failed for {alt}")
    return f'<img alt="{html.escape(alt)}" src="{png_uri(data.tobytes())}">'


def figure_tag(fig: Figure, alt: str) -> str:
    """An <img> with the matplotlib figure inlined as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return f'<img alt="{html.escape(alt)}" src="{png_uri(buffer.getvalue())}">'


def _subplots(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def bar_plot(counts: dict[str, int], title: str, *, log: bool = False, xlabel: str = "") -> str:
    fig, ax = _subplots(figsize=(5, 3))
    ax.bar(range(len(counts)), list(counts.values()), color="#4878d0")
    ax.set_xticks(range(len(counts)), list(counts), rotation=45, ha="right", fontsize=8)
    log = log and any(v > 0 for v in counts.values())  # a log axis needs a positive value
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count (log)" if log else "count")
    return figure_tag(fig, title)


def survival_plot(survival: dict[str, Any]) -> str:
    """Share of faces still at least `survival_px` px (shorter side) after resizing to each input."""
    rows = [r for r in survival["rows"] if r["share_under"] is not None]
    fig, ax = _subplots(figsize=(5, 3))
    ax.plot([r["input"] for r in rows], [1 - r["share_under"] for r in rows], marker="o")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of faces >= {survival['survival_px']:g} px")
    ax.set_title(f"input-resolution survival ({survival['resize']})")
    ax.grid(alpha=0.3)
    return figure_tag(fig, "survival curve")


def mean_shapes(faces: pd.DataFrame) -> dict[str, dict[str, list[list[float]]]]:
    """Per scheme: mean and standard deviation of each point in box units ((x - x1) / w, (y - y1) / h),
    over the faces where that point is present (visible > 0, finite); NaN where it never is."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    has = faces["scheme"].notna() & ~faces["ignore"].to_numpy(bool)
    for scheme, group in faces.loc[has].groupby("scheme", sort=True):
        lengths = group["points"].map(len)
        group = group.loc[lengths == lengths.max()]
        pts = np.stack([np.asarray(p, np.float64).reshape(-1, 2) for p in group["points"]])
        present = np.stack([np.asarray(v) > 0 for v in group["visible"]]) & np.isfinite(pts).all(axis=2)
        w = (group["x2"] - group["x1"]).to_numpy(np.float64)[:, None]
        h = (group["y2"] - group["y1"]).to_numpy(np.float64)[:, None]
        ok = present & (w > 0) & (h > 0)
        units = np.stack([(pts[..., 0] - group["x1"].to_numpy(np.float64)[:, None]) / w,
                          (pts[..., 1] - group["y1"].to_numpy(np.float64)[:, None]) / h], axis=2)
        units[~ok] = np.nan
        with warnings.catch_warnings():  # a point never present: all-NaN column, NaN is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(units, axis=0), np.nanstd(units, axis=0)
        out[str(scheme)] = {"mean": _rounded(mean), "std": _rounded(std)}
    return out


def _rounded(values: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 4) if np.isfinite(v) else None for v in row] for row in values]


def shape_plot(scheme: str, shape: dict[str, list[list[float]]]) -> str:
    mean = np.array(shape["mean"], dtype=np.float64)
    std = np.array(shape["std"], dtype=np.float64)
    fig, ax = _subplots(figsize=(4, 4))
    ax.errorbar(mean[:, 0], mean[:, 1], xerr=std[:, 0], yerr=std[:, 1], fmt="o", ms=3, elinewidth=0.6)
    ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, color="grey", ls="--"))
    ax.set_xlim(-0.25, 1.25)
    ax.set_ylim(1.25, -0.25)  # image y runs down
    ax.set_aspect("equal")
    ax.set_title(f"{scheme}: mean shape ± 1 sd (box units)")
    return figure_tag(fig, f"{scheme} mean shape")


def image_grid(manifest: Manifest, roots: dict[str, str] | None, count: int, seed: int) -> tuple[list[str], str]:
    """Up to `count` random images (seeded) with faces drawn; (shown rel_paths, note on what was not shown)."""
    if count <= 0 or not len(manifest.images):
        return [], "no images to show" if count > 0 else "no images requested (--grid 0)"
    try:
        paths = manifest.image_paths(roots)
    except FacedataError as err:
        return [], f"images not shown: {err}"
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(manifest.images))
    by_image = manifest.faces.groupby("image_id", sort=False)
    cells, shown, unusable = [], [], []
    for k in order:
        if len(cells) == count:
            break
        try:  # the readers' decode (EXIF orientation ignored: boxes are in stored pixels)
            img = read_image(paths.iloc[k])
        except ImageError as exc:
            unusable.append(str(exc))
            continue
        image_id = manifest.images["image_id"].iloc[k]
        faces = by_image.get_group(image_id) if image_id in by_image.groups else manifest.faces.iloc[:0]
        cells.append(_draw_image(img, faces))
        shown.append(str(manifest.images["rel_path"].iloc[k]))
    note = "" if len(cells) == min(count, len(order)) else f"{len(cells)} of {count} images found on disk"
    if unusable:  # missing, truncated, corrupt or too large: named with the reason
        note += ("; " if note else "") + f"{len(unusable)} image(s) not shown: " + "; ".join(unusable)
    return [image_tag(c, s) for c, s in zip(cells, shown, strict=True)], note


def _draw_image(img: np.ndarray, faces: pd.DataFrame) -> np.ndarray:
    """The image fitted into _CELL x _CELL with boxes (ignore regions in red) and present points."""
    zoom = _CELL / max(img.shape[:2])
    small = cv2.resize(img, (max(1, round(img.shape[1] * zoom)), max(1, round(img.shape[0] * zoom))),
                       interpolation=cv2.INTER_AREA)
    cell = np.full((_CELL, _CELL, 3), 255, np.uint8)
    cell[: small.shape[0], : small.shape[1]] = small
    for face in faces.itertuples(index=False):
        colour = _IGNORE if face.ignore else _FACE
        p1 = (int(round(face.x1 * zoom)), int(round(face.y1 * zoom)))
        p2 = (int(round(face.x2 * zoom)), int(round(face.y2 * zoom)))
        cv2.rectangle(cell, p1, p2, colour, 1)
        if face.points is not None and len(face.points):
            pts = np.asarray(face.points, np.float64).reshape(-1, 2) * zoom
            for (x, y), vis in zip(pts, np.asarray(face.visible), strict=True):
                if vis > 0 and np.isfinite(x) and np.isfinite(y):
                    cv2.circle(cell, (int(round(x)), int(round(y))), 1, _POINT, -1)
    return cell


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    """Counts with thousands separators; the report's floats are shares, shown as percentages when in [0, 1]."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float) and 0 <= value <= 1:
        return f"{value:.2%}"
    return console.number(value)


def manifest_report(
    manifest: Manifest, *, roots: dict[str, str] | None = None, grid: int = 12, seed: int = 0,
    survival_px: float = DEFAULT_SURVIVAL_PX,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(stats.json content, [(section title, HTML fragment)]) for a manifest."""
    stats = compute_stats(manifest, REPORT_INPUTS, survival_px, "fit")
    shapes = mean_shapes(manifest.faces)
    stats["landmarks"]["mean_shape"] = shapes
    sections: list[tuple[str, str]] = []
    sections.append(("Overview", _table(
        ["images", "faces", "ignored faces", "images without faces", "images with size"],
        [[stats["images"], stats["faces"], stats["ignored_faces"], stats["images_without_faces"],
          stats["images_with_size"]]])))
    for key, title in (("by_split", "Per split"), ("by_source", "Per source")):
        sections.append((title, _table([key[3:], "images", "faces"],
                                       [[k, v["images"], v["faces"]] for k, v in stats[key].items()])))
    plots = [bar_plot(stats["faces_per_image"]["buckets"], "faces per image", xlabel="faces"),
             bar_plot(stats["face_size"]["buckets"], "face size min(w, h)", log=True, xlabel="px")]
    sections.append(("Faces per image and face size", f'<div class="plots">{"".join(plots)}</div>'))
    survival = stats["survival"]
    rows = [[r["input"], r["faces"], r["under"], None if r["share_under"] is None else 1 - r["share_under"]]
            for r in survival["rows"]]
    body = ""
    if survival["faces_with_image_size"]:
        body = survival_plot(survival) + _table(["input", "faces", f"under {survival_px:g} px", "surviving"], rows)
    if survival["note"]:
        body += f"<p>{html.escape(survival['note'])}</p>"
    sections.append(("Input-resolution survival", body))
    attrs = [bar_plot(counts, name) for name, counts in stats["attributes"].items()
             if sum(v for k, v in counts.items() if k != "unknown")]
    if attrs:
        sections.append(("Attributes", f'<div class="plots">{"".join(attrs)}</div>'))
    sections.extend(_landmark_sections(stats["landmarks"], shapes))
    tags, note = image_grid(manifest, roots, grid, seed)
    body = f'<div class="plots">{"".join(tags)}</div>' + (f"<p>{html.escape(note)}</p>" if note else "")
    sections.append(("Random images (green: faces, red: ignore regions, blue: points)", body))
    return stats, sections


def _landmark_sections(landmarks: dict[str, Any], shapes: dict[str, Any]) -> list[tuple[str, str]]:
    if not landmarks["schemes"]:
        return []
    rows = [[name, s["faces"], s["points_per_face"], s["points_with_coordinates"], s["box_derived"],
             ", ".join(f"{g} {c:.0%}" for g, c in s["group_coverage"].items())]
            for name, s in landmarks["schemes"].items()]
    body = _table(["scheme", "faces", "points", "points present", "box derived", "mask coverage"], rows)
    plots = [shape_plot(name, shape) for name, shape in shapes.items()]
    plots += [bar_plot(h, f"{axis} (deg)") for axis, h in landmarks["pose"].items() if h]
    if landmarks["ear_min"]:
        plots.append(bar_plot(landmarks["ear_min"], "min eye aspect ratio"))
    return [("Landmarks", body + f'<div class="plots">{"".join(plots)}</div>')]


def render_html(title: str, sections: Sequence[tuple[str, str]]) -> str:
    parts = [f"<h2>{html.escape(t)}</h2>\n{body}" for t, body in sections]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body><h1>{html.escape(title)}</h1>\n" + "\n".join(parts)
            + "\n</body></html>\n")


def compare_report(before: Manifest, after: Manifest) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """What a filter or a fusion changed from `before` to `after` (the reported manifest): totals side by side,
    the faces removed (dropped, or kept as ignore regions) and added, and the images that lost all their faces.
    Images match by rel_path, faces by image and box (2 decimals)."""
    old, new = _kept_faces(before), _kept_faces(after)
    removed_keys = old.index.difference(new.index)
    all_after = _face_keys(after)
    dropped = removed_keys.difference(all_after.index)
    removed = before.faces.loc[old.loc[removed_keys, "row"].to_numpy()]
    had = set(old["rel_path"])
    lost = sorted(had - set(new["rel_path"]))
    b, a = compute_stats(before, REPORT_INPUTS), compute_stats(after, REPORT_INPUTS)
    removed_stats = compute_stats(Manifest(before.images, removed, before.provenance), REPORT_INPUTS)
    result = {
        "before": {k: b[k] for k in ("images", "faces", "ignored_faces", "images_without_faces")},
        "after": {k: a[k] for k in ("images", "faces", "ignored_faces", "images_without_faces")},
        "faces_removed": int(len(removed_keys)),
        "faces_dropped": int(len(dropped)),
        "faces_now_ignore": int(len(removed_keys) - len(dropped)),
        "faces_added": int(len(new.index.difference(old.index))),
        "images_lost_all_faces": len(lost),
        "images_lost_all_faces_list": lost,
        "removed_face_size": removed_stats["face_size"]["buckets"],
    }
    rows = [[k, result["before"][k], result["after"][k], result["after"][k] - result["before"][k]]
            for k in result["before"]]
    body = _table(["", "before", "after", "change"], rows) + _table(
        ["faces removed", "of which dropped", "of which kept as ignore", "faces added", "images that lost all faces"],
        [[result["faces_removed"], result["faces_dropped"], result["faces_now_ignore"], result["faces_added"],
          len(lost)]])
    sizes = _side_by_side(b["face_size"]["buckets"], a["face_size"]["buckets"], "face size min(w, h), before/after")
    body += f'<div class="plots">{sizes}{bar_plot(result["removed_face_size"], "removed faces: size", log=True)}</div>'
    shown = "".join(f"<li>{html.escape(p)}</li>" for p in lost[:200])
    more = f"<p>… and {len(lost) - 200:,} more (all in stats.json)</p>" if len(lost) > 200 else ""
    body += f"<h3>Images that lost all their faces ({len(lost):,})</h3><ul>{shown}</ul>{more}"
    return result, [("Compared with the 'before' manifest", body)]


def _kept_faces(manifest: Manifest) -> pd.DataFrame:
    keys = _face_keys(manifest)
    return keys.loc[~manifest.faces["ignore"].to_numpy(bool)]


def _face_keys(manifest: Manifest) -> pd.DataFrame:
    """Faces indexed by (rel_path, x1, y1, x2, y2) rounded to 2 decimals; `row` is the face's position."""
    paths = manifest.images.set_index("image_id")["rel_path"].reindex(manifest.faces["image_id"]).to_numpy(object)
    boxes = manifest.faces[["x1", "y1", "x2", "y2"]].to_numpy(np.float64).round(2)
    frame = pd.DataFrame({"rel_path": paths, "x1": boxes[:, 0], "y1": boxes[:, 1], "x2": boxes[:, 2],
                          "y2": boxes[:, 3], "row": manifest.faces.index})
    frame.index = pd.MultiIndex.from_frame(frame[["rel_path", "x1", "y1", "x2", "y2"]])
    return frame[~frame.index.duplicated()]


def _side_by_side(before: dict[str, int], after: dict[str, int], title: str) -> str:
    fig, ax = _subplots(figsize=(5, 3))
    x = np.arange(len(before))
    ax.bar(x - 0.2, list(before.values()), width=0.4, label="before", color="#999999")
    ax.bar(x + 0.2, [after.get(k, 0) for k in before], width=0.4, label="after", color="#4878d0")
    ax.set_xticks(x, list(before), rotation=45, ha="right", fontsize=8)
    if any(v > 0 for v in (*before.values(), *after.values())):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return figure_tag(fig, title)


def shard_report(
    path: str | os.PathLike[str], *, seed: int = 0, batch_size: int = DEFAULT_BATCH, progress: bool = True
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(stats.json content, [(section title, HTML fragment)]) for a shard directory."""
    from facedata.preview import contact_sheet
    from facedata.storage import ShardedDataset

    dataset = ShardedDataset(path)
    try:
        counted = _count_shards(dataset, progress)
        unit_samples = dataset.unit_samples
        provenance = dataset.index.get("provenance", {})
        summary = dataset.index.get("summary", {})
    finally:
        dataset.close()
    stats: dict[str, Any] = {"kind": "shards", "samples": counted["samples"], "per_shard": counted["per_shard"],
                             "mix": _mix(counted["labels"], summary.get("mixing")),
                             "box_offsets": counted["box_offsets"], "landmark_targets": counted["landmark_targets"],
                             "batches": _batch_shares(counted["labels"], unit_samples, batch_size, seed,
                                                      summary.get("mixing")),
                             "provenance": provenance}
    sections = [("Samples per label per shard", _table(
        ["shard", *(LABEL_NAMES[lab] for lab in LABEL_ORDER), "samples"],
        [[row["file"], *(row["labels"][LABEL_NAMES[lab]] for lab in LABEL_ORDER), row["samples"]]
         for row in stats["per_shard"]]))]
    mix = stats["mix"]
    sections.append(("Class mix: achieved against requested", _table(
        ["label", "requested ratio", "requested share", "samples", "achieved share"],
        [[name, _ratio(m["requested_ratio"]), m["requested_share"], m["samples"], m["achieved_share"]]
         for name, m in mix.items()])))
    sections.append(_batch_section(stats["batches"]))
    plots = [_histogram_plot(h, f"box offset {coord} (crop sides)") for coord, h in stats["box_offsets"].items()]
    if stats["landmark_targets"]["counts"] and sum(stats["landmark_targets"]["counts"]):
        plots.append(_histogram_plot(stats["landmark_targets"], "landmark targets (crop units)"))
    if plots:
        sections.append(("Regression targets", f'<div class="plots">{"".join(plots)}</div>'))
    if counted["samples"]:
        sheet, _ = contact_sheet(path, seed=seed)
        sections.append(("Contact sheet per label (targets drawn back)", image_tag(sheet, "contact sheet")))
    sections.append(("Provenance", _provenance(provenance)))
    return stats, sections


def _count_shards(dataset: Any, progress: bool) -> dict[str, Any]:
    """Labels per shard and target histograms, from the records read chunk by chunk."""
    names = dataset.record_dtype.names or ()
    labels = np.empty(len(dataset), np.int8)
    offsets = {c: np.zeros(len(_OFFSET_EDGES) - 1, np.int64) for c in ("x1", "y1", "x2", "y2")}
    targets = np.zeros(len(_TARGET_EDGES) - 1, np.int64)
    bar = console.progress(len(dataset), "report", "sample", enabled=progress)
    for start in range(0, len(dataset), _CHUNK):
        _, records = dataset.read_range(start, start + _CHUNK)
        bar.update(len(records))
        labels[start : start + len(records)] = records["label"]
        if "bbox" in names:
            boxed = np.isin(records["label"], (LABEL_POSITIVE, LABEL_PART))
            for k, coord in enumerate(offsets):
                offsets[coord] += np.histogram(records["bbox"][boxed, k], bins=_OFFSET_EDGES)[0]
        if "landmarks" in names:
            points = np.asarray(records["landmarks"][records["label"] == LABEL_LANDMARK], np.float64).ravel()
            targets += np.histogram(points[np.isfinite(points)], bins=_TARGET_EDGES)[0]
    bar.close()
    per_shard = []
    for entry in dataset.index["shards"]:
        first, n = int(entry["first_index"]), int(entry["samples"])
        chunk = labels[first : first + n]
        per_shard.append({"file": entry["file"], "samples": n,
                          "labels": {LABEL_NAMES[lab]: int((chunk == lab).sum()) for lab in LABEL_ORDER}})
    edges = [float(e) for e in _OFFSET_EDGES]
    return {
        "samples": int(len(labels)),
        "labels": labels,
        "per_shard": per_shard,
        "box_offsets": {c: {"edges": edges, "counts": [int(v) for v in h]} for c, h in offsets.items()
                        if h.sum()},
        "landmark_targets": {"edges": [float(e) for e in _TARGET_EDGES],
                             "counts": [int(v) for v in targets] if targets.sum() else []},
    }


def _mix(labels: np.ndarray, mixing: Any) -> dict[str, dict[str, Any]]:
    """Per label: the requested ratio and share (None when the build did not mix) and the achieved share."""
    ratio = mixing.get("ratio", {}) if isinstance(mixing, dict) else {}
    requested = {lab: float(ratio.get(str(lab), 0.0)) for lab in LABEL_ORDER}
    total_ratio = sum(requested.values())
    out = {}
    for lab in LABEL_ORDER:
        n = int((labels == lab).sum())
        out[LABEL_NAMES[lab]] = {
            "requested_ratio": requested[lab] if ratio else None,
            "requested_share": round(requested[lab] / total_ratio, 4) if ratio and total_ratio else None,
            "samples": n,
            "achieved_share": round(n / len(labels), 4) if len(labels) else None,
        }
    return out


def _batch_shares(labels: np.ndarray, unit_samples: int, batch_size: int, seed: int, mixing: Any
                  ) -> dict[str, Any]:
    """Class share per batch over epoch 0 of the readers' order (facedata.readers.order): the default shuffle,
    and `batch_mix` at the build's ratio (3:1:1:2 when it did not mix; 0 for a class the set does not hold).
    Min / mean / max per class over the full batches."""
    from facedata.readers.order import ReadOrder

    ratio = mixing.get("ratio", {}) if isinstance(mixing, dict) else {}
    wanted = [float(ratio.get(str(lab), 0)) for lab in LABEL_ORDER] if ratio else [3.0, 1.0, 1.0, 2.0]
    present = [bool((labels == lab).any()) for lab in LABEL_ORDER]
    mix = ":".join(f"{r:g}" if here else "0" for r, here in zip(wanted, present, strict=True))  # absent: 0
    out: dict[str, Any] = {"batch_size": batch_size, "seed": seed, "mix_ratio": mix}
    for name, options in (("shuffle", {}), ("batch_mix", {"batch_mix": mix, "labels": labels})):
        try:
            order = ReadOrder(len(labels), unit_samples, batch_size, seed=seed, drop_last=True, **options).epoch(0)
        except FacedataError as err:  # one-class sets (pfld, topdown) refuse a mix
            out[name] = {"note": str(err)}
            continue
        full = len(order) // batch_size * batch_size  # the last, short batch is left out (drop_last)
        batches = labels[order[:full]].reshape(-1, batch_size)
        out[name] = {LABEL_NAMES[lab]: _spread((batches == lab).mean(axis=1)) for lab in LABEL_ORDER} if len(batches) \
            else {"note": f"fewer than {batch_size} samples: no full batch"}
    return out


def _spread(shares: np.ndarray) -> dict[str, float]:
    return {"min": round(float(shares.min()), 4), "mean": round(float(shares.mean()), 4),
            "max": round(float(shares.max()), 4)}


def _batch_section(batches: dict[str, Any]) -> tuple[str, str]:
    rows = []
    for order in ("shuffle", "batch_mix"):
        result = batches[order]
        if "note" in result:
            rows.append([order, result["note"], "", "", ""])
            continue
        for name, spread in result.items():
            rows.append([order, name, spread["min"], spread["mean"], spread["max"]])
    title = (f"Class share per batch of {batches['batch_size']:,} (epoch 0, seed {batches['seed']}; "
             f"batch_mix {batches['mix_ratio']})")
    return title, _table(["reader order", "label", "min", "mean", "max"], rows)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _histogram_plot(hist: dict[str, list], title: str) -> str:
    edges = np.asarray(hist["edges"])
    fig, ax = _subplots(figsize=(4, 2.6))
    ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="#4878d0")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("count")
    return figure_tag(fig, title)


def _provenance(provenance: dict[str, Any]) -> str:
    """Command, seed and inputs (path, checksum, counts) as a table, then the full record."""
    rows = [["command", provenance.get("command_line", "")], ["seed", provenance.get("seed", "")],
            ["facedata", provenance.get("facedata_version", "")]]
    for role, entry in (provenance.get("inputs") or {}).items():
        if isinstance(entry, dict):
            rows.append([f"input {role}", f"{entry.get('path', '')} (sha256 {str(entry.get('sha256', ''))[:16]}…, "
                                          f"{console.number(entry.get('images', '?'))} images, "
                                          f"{console.number(entry.get('faces', '?'))} faces)"])
    table = _table(["", "value"], rows)
    full = html.escape(json.dumps(provenance, indent=1, sort_keys=True))
    return f"{table}<details><summary>full provenance</summary><pre>{full}</pre></details>"


def write_report(
    source: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, overwrite: bool = False,
    compare: str | os.PathLike[str] | None = None, progress: bool = True, **options: Any
) -> Path:
    """Write `index.html` and `stats.json` for a manifest or a shard directory into out_dir (atomically;
    existing files only with overwrite). `compare`: the manifest before (a filter, a fusion); `progress`: while
    the shards are read. Returns the index."""
    out = Path(out_dir)
    index, stats_path = out / "index.html", out / "stats.json"
    existing = [p for p in (index, stats_path) if p.exists()]
    if existing and not overwrite:
        raise FacedataError(f"{existing[0]} exists; pass --overwrite to replace the report")
    if Path(source).is_dir():
        stats, sections = shard_report(source, seed=options.get("seed", 0),
                                       batch_size=options.get("batch_size", DEFAULT_BATCH), progress=progress)
    else:
        manifest = Manifest.read(source)
        stats, sections = manifest_report(manifest, **{k: v for k, v in options.items() if k != "batch_size"})
        if compare is not None:
            stats["compare"], more = compare_report(Manifest.read(compare), manifest)
            stats["compare"]["before_path"] = str(compare)
            sections = sections[:1] + more + sections[1:]
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(stats_path) as fh:
        fh.write(json.dumps(stats, indent=2, sort_keys=False).encode())
    with atomic_write(index) as fh:
        fh.write(render_html(f"facedata report: {Path(source).name}", sections).encode())
    return index
