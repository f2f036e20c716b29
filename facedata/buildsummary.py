"""What a build reports: the summary (also in index.json) and the CLI's table of it."""

from __future__ import annotations

from typing import Any

import numpy as np

from facedata.buildworker import PLANNED, Job
from facedata.console import in_class_order, labels_text, number
from facedata.samplers.mixing import MixPlan
from facedata.samples import LABEL_NAMES, LABEL_ORDER, ORIGIN_DETECTIONS
from facedata.stages import STAGES


def _label_dict(counts: np.ndarray) -> dict[str, int]:
    return {LABEL_NAMES[lab]: int(c) for lab, c in zip(LABEL_ORDER, counts.tolist(), strict=True)}


def build_summary(
    job: Job, plan: np.ndarray, table: np.ndarray, skipped: list[dict[str, str]], mix: MixPlan | None
) -> dict[str, Any]:
    n_det = job.n_det
    det = job.detection_positions
    is_det = np.zeros(job.n, bool)
    is_det[det] = True
    ok = plan["status"] == PLANNED
    per_origin = {
        "detections": _label_dict(table["counts"][is_det].sum(axis=0)),
        "landmarks": _label_dict(table["counts"][~is_det].sum(axis=0)),
    }
    h, w, _ = job.image_shape
    summary: dict[str, Any] = {
        "stage": job.stage.name,
        "size": h if h == w else f"{w}x{h}",
        "images": {"detections": n_det, "landmarks": job.n - n_det, "skipped": len(skipped)},
        "planned": _label_dict(plan["labels"][ok].sum(axis=0)),
        "samples_by_origin": per_origin,
        "shortages": [] if mix is None else list(mix.shortages),
        "mixing": "off: every planned sample written" if mix is None else mix.to_dict(),
        "skipped": skipped,
    }
    counted = det if job.stage.counts_origin == ORIGIN_DETECTIONS else np.flatnonzero(~is_det)
    summary.update(job.stage.report(plan["counters"][counted], ok[counted]) or {})
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The CLI's final table: samples per label, shards, bytes, seconds, shortages, skipped images."""
    if summary.get("already_complete"):
        checked = "shards re-hashed" if summary["verified"] else "shard sizes checked; --verify re-hashes"
        return (f"{summary['out_dir']}: already complete with these inputs and options "
                f"({number(summary['samples'])} samples in {number(summary['shards'])} shard(s), {checked}); "
                "nothing written")
    lines = [f"{summary['stage']} shards ({summary['size']} px) in {summary.get('out_dir', '?')}", ""]
    lines.append(f"{'label':<10} {'samples':>12}")
    for name, count in in_class_order(summary["label_counts"]):
        lines.append(f"{name:<10} {number(count):>12}")
    lines.append(f"{'total':<10} {number(summary['samples']):>12}")
    planned = summary.get("planned")
    if planned:
        mixing = summary.get("mixing")
        ratio = mixing.get("ratio", {}) if isinstance(mixing, dict) else {}
        mixed = "mixed at " + ":".join(f"{ratio.get(str(lab), 0):g}" for lab in LABEL_ORDER) if ratio else "no mixing"
        lines.append(f"planned before mixing: {labels_text(planned)} ({mixed})")
    lines.append("")
    engine = "" if summary.get("engine", "local") == "local" else f" on {summary['engine']}"
    lines.append(f"shards {number(summary['shards'])}, {number(round(summary['bytes'] / 1e6, 1))} MB, "
                 f"{summary['seconds']:.1f} s with {summary['workers']} worker(s){engine}")
    images = summary["images"]
    lines.append(f"images: {number(images['detections'])} detection, {number(images['landmarks'])} landmark, "
                 f"{number(images['skipped'])} skipped")
    stage = STAGES.get(summary["stage"])
    if summary.get("resumed_plan_from_image"):
        lines.append(f"resumed: {number(summary['resumed_plan_from_image'])} images already {stage.verb} "
                     "were not redone")
    if summary.get("resumed_from_sample"):
        lines.append(f"resumed after {number(summary['resumed_from_sample'])} samples already in complete shards")
    lines.extend(stage.summary_lines(summary))
    return "\n".join(lines + summary_warnings(summary))


def summary_warnings(summary: dict[str, Any]) -> list[str]:
    """What a build could not do as asked (shortages, skipped images): the end of the table, and all that
    `--quiet` prints."""
    lines = [f"shortage: {text}" for text in summary.get("shortages", [])]
    skipped = summary.get("skipped", [])
    lines += [f"skipped {item['path']}: {item['reason']}" for item in skipped[:20]]
    if len(skipped) > 20:
        lines.append(f"... and {number(len(skipped) - 20)} more skipped images (see index.json summary)")
    return lines
