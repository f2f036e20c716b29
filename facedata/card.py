"""`facedata card`: a Markdown data card for a user's own manifest (ingested, filtered or fused).

The card follows the corpus cards in `data_cards/` (what it is, licence, counts, scheme and flips, quirks) and adds
what only this manifest can say: its computed statistics and its provenance. Every figure comes from the code
that computes it for `facedata stats` (`compute_stats`, which `report` uses too) and `filter` (the faces under
10 px are what `filter --min-size 10` removes); nothing is counted a second way. Licences and known quirks are
read from the corpus card of each source corpus, so they are written once. The corpus cards ship inside the package
(`facedata/data_cards/`, which the repository's top-level `data_cards/` links to), so a wheel install has them too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedata import __version__
from facedata.errors import FacedataError
from facedata.filters import MinSize, apply_filters
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest, read_metadata
from facedata.paths import atomic_write, same_file, sha256_file
from facedata.stats import DEFAULT_INPUTS, compute_stats, markdown_table

CARDS_DIR = Path(__file__).resolve().parent / "data_cards"  # the corpus cards, shipped in the package
SMALL_FACE = 10.0  # px: the Ultra-Light-Fast recipe's minimum face side (filter --min-size 10)
# Manifest `source` (the corpus a parser tags its images with) -> its corpus card in data_cards/.
CORPUS_CARDS = {
    "wider_face": "wider_face.md",
    "cuhk_lfw_net": "cuhk_lfw_net.md",
    "wflw": "wflw.md",
    "lapa": "lapa.md",
    "300w_lp": "300w_lp.md",
    "aflw2000_3d": "aflw2000_3d.md",
    "ibug_300w": "ibug_300w.md",
    "ibug_300vw": "ibug_300w.md",
    "coco": "coco_keypoints.md",
    "dlib_faces": "dlib_faces.md",
}
_LICENCE = re.compile(r"\*\*Licen[cs]e[^*]*\*\*\s*(.*?)(?=\n\*\*\w[^*\n]*\.\*\*|\n\n|\Z)", re.S)
_QUIRK = re.compile(r"^- \*\*(.+?)\*\*", re.M)


@dataclass(frozen=True)
class CorpusCard:
    """What a card for a manifest takes from a shipped corpus card: its title, licence text and quirk titles."""

    path: Path
    title: str
    licence: str
    quirks: tuple[str, ...]


def corpus_card(source: str) -> CorpusCard | None:
    """The shipped card of a source corpus, or None for an unknown source."""
    name = CORPUS_CARDS.get(source)
    path = CARDS_DIR / name if name else None
    if path is None or not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    title = text.splitlines()[0].lstrip("# ").strip()
    licence = _LICENCE.search(text)
    known = text.split("## Known defects", 1)[1].split("\n## ", 1)[0] if "## Known defects" in text else ""
    quirks = tuple(q.strip().rstrip(".") for q in _QUIRK.findall(known))
    return CorpusCard(path, title, " ".join(licence.group(1).split()) if licence else "not stated", quirks)


def write_card(manifest_path: Path, out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Render the card of `manifest_path` to `out` (atomically); an existing `out` is replaced only with
    `overwrite`. Returns the statistics the card shows."""
    if same_file(manifest_path, out):
        raise FacedataError(f"-o/--output {out} is the same file as the manifest {manifest_path}: choose another path")
    if out.is_dir():
        raise FacedataError(f"-o/--output {out} is a folder: name the card file (e.g. {out / 'card.md'})")
    if out.exists() and not overwrite:
        raise FacedataError(f"-o/--output {out} exists; pass --overwrite to replace it")
    text, stats = render_card(manifest_path, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "w") as fh:
        fh.write(text)
    return stats


def render_card(manifest_path: Path, card_dir: Path) -> tuple[str, dict[str, Any]]:
    """The card's Markdown (links to corpus cards relative to `card_dir`) and the statistics it shows."""
    manifest = Manifest.read(manifest_path)
    meta = read_metadata(manifest_path)
    stats = compute_stats(manifest, DEFAULT_INPUTS)
    small = _small_faces(manifest)
    sources = list(stats["by_source"])
    cards = {s: corpus_card(s) for s in sources}
    parts = [
        _about(manifest_path, manifest, stats, cards, card_dir),
        _licences(cards, card_dir),
        _counts(stats),
        _sizes(stats, small),
        _landmarks(stats),
        _attributes(stats),
        _pose(stats),
        _provenance(manifest_path, meta, manifest.provenance),
        _quirks(manifest, stats, cards, card_dir),
    ]
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n", {**stats, "small_faces": small}


# --- sections ---------------------------------------------------------------------------------------------


def _about(path: Path, manifest: Manifest, stats: dict[str, Any], cards: dict[str, CorpusCard | None],
           card_dir: Path) -> str:
    fmt = manifest.provenance.get("source_format", "unknown")
    made = "fused by `facedata fuse`" if fmt == "fuse" else f"ingested from the `{fmt}` format"
    if manifest.provenance.get("filters"):
        made += f", then filtered ({len(manifest.provenance['filters'])} `facedata filter` run(s))"
    corpora = ", ".join(_corpus_link(s, cards[s], card_dir) for s in cards) or "none"
    ignored = f" (+{stats['ignored_faces']:,} ignore regions)" if stats["ignored_faces"] else ""
    return (
        f"# Data card: {path.name}\n\n"
        f"**What it is.** A facedata manifest of {stats['images']:,} images and {stats['faces']:,} faces{ignored}, "
        f"{made}. Source corpora: {corpora}. Splits: {', '.join(stats['by_split']) or 'none'}. "
        f"Boxes are `x1 y1 x2 y2` in original-image pixels (x2 = x1 + width); facedata stores paths, never pixels."
    )


def _corpus_link(source: str, card: CorpusCard | None, card_dir: Path) -> str:
    if card is None:
        return f"`{source}` (no corpus card)"
    return f"[{card.title}]({_relative(card.path, card_dir)}) (`{source}`)"


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start.resolve())).as_posix()


def _licences(cards: dict[str, CorpusCard | None], card_dir: Path) -> str:
    lines = ["## Licences and terms", "",
             "The terms of every source corpus apply to this manifest and to anything built from it (the strictest "
             "wins). From the corpus cards:", ""]
    for source, card in cards.items():
        text = card.licence if card else "unknown: no corpus card for this source; check the corpus's own terms"
        lines.append(f"- {_corpus_link(source, card, card_dir)}: {text}")
    return "\n".join(lines)


def _counts(stats: dict[str, Any]) -> str:
    lines = ["## Splits and counts", ""]
    lines += _table(["split", "images", "faces"], [[k, v["images"], v["faces"]] for k, v in stats["by_split"].items()])
    lines += [""] + _table(["source", "images", "faces"],
                           [[k, v["images"], v["faces"]] for k, v in stats["by_source"].items()])
    per, flags = stats["faces_per_image"], stats["flags"]
    lines += [
        "",
        f"Faces are those left for training: {stats['ignored_faces']:,} ignore regions (faces a filter removed, kept "
        f"so no negative crop covers them) are counted apart. {stats['images_without_faces']:,} images have no face "
        f"(pure negatives). Faces per image: mean {per['mean']:.2f}, median {per['median']:g}, max {per['max']:,}. "
        f"Flagged: {flags['invalid']:,} invalid, {flags['degenerate']:,} degenerate (width or height <= 0). "
        f"{stats['images_with_size']:,} of {stats['images']:,} images have a known size.",
    ]
    return "\n".join(lines)


def _sizes(stats: dict[str, Any], small: dict[str, Any]) -> str:
    size = stats["face_size"]
    lines = ["## Face sizes", ""]
    lines += _table(["shorter side px", "faces"], [[k, v] for k, v in size["buckets"].items()])
    median = "n/a" if size["median"] is None else f"{size['median']:g} px"
    lines += ["", f"Median face size {median} ({size['measure']}).", "",
              f"**Under {SMALL_FACE:g} px:** {small['faces']:,} of {small['of']:,} faces ({_percent(small['share'])}) "
              f"have a width or height under {SMALL_FACE:g} px (what `facedata filter --min-size {SMALL_FACE:g}` "
              f"removes; degenerate boxes included)."]
    surv = stats["survival"]
    if surv["faces_with_image_size"]:
        lines += ["", f"Input-resolution survival: faces whose {surv['measure']} after resizing ({surv['rule']}):", ""]
        lines += _table(["input", "faces", "under", "share"],
                        [[r["input"], r["faces"], r["under"], _percent(r["share_under"])] for r in surv["rows"]])
    if surv["note"]:
        lines += ["", f"Survival: {surv['note']}."]
    return "\n".join(lines)


def _landmarks(stats: dict[str, Any]) -> str:
    lm = stats["landmarks"]
    if not lm["schemes"]:
        return "## Landmark schemes\n\nNo face has landmarks."
    lines = ["## Landmark schemes", ""]
    lines += _table(["scheme", "faces", "points/face", "points present", "boxes derived from points"],
                    [[k, v["faces"], v["points_per_face"], v["points_with_coordinates"], v["box_derived"]]
                     for k, v in lm["schemes"].items()])
    lines += ["", f"{lm['faces_without_landmarks']:,} faces have no landmarks. A point is present when its visibility "
                  "is above 0 (absent points are NaN)."]
    for name, info in lm["schemes"].items():
        lines += ["", f"**{name}**: " + ", ".join(f"{k} {v:,} faces" for k, v in info["by_source"].items()) + "."]
        if info["group_coverage"]:
            lines.append("Mask coverage (share of each group's points present): "
                         + ", ".join(f"{g} {_percent(c)}" for g, c in info["group_coverage"].items()) + ".")
        if name in SCHEMES:
            scheme = SCHEMES.get(name)
            left = "image-left" if scheme.left == "image" else "the person's left"
            pairs = " ".join(f"{a}-{b}" for a, b in scheme.flip_pairs)
            lines.append(f"Flip pairs (0-based, swapped by a horizontal mirror; \"left\" is {left}): {pairs}.")
    return "\n".join(lines)


def _attributes(stats: dict[str, Any]) -> str:
    rows = []
    for name, counts in stats["attributes"].items():
        total = sum(counts.values())
        if not total or counts.get("unknown", 0) == total or (name == "invalid" and not counts.get("invalid", 0)):
            continue
        rows += [[name, label, n, _percent(n / total)] for label, n in counts.items() if n]
    if not rows:
        return "## Attributes\n\nNo attribute is annotated."
    present = sorted({r[0] for r in rows}, key=[r[0] for r in rows].index)
    return "\n".join(["## Attributes", "", f"Present: {', '.join(present)}.", "",
                      *_table(["attribute", "value", "faces", "share"], rows)])


def _pose(stats: dict[str, Any]) -> str:
    lm = stats["landmarks"]
    hists = {k: v for k, v in [*lm["pose"].items(), ("ear_min", lm["ear_min"])] if v}
    if not hists:
        return ""
    lines = ["## Head pose and eye aspect ratio", ""]
    if lm["pose_source"]:
        lines += ["Pose source: " + ", ".join(f"{k} {v:,}" for k, v in lm["pose_source"].items())
                  + " faces (degrees; yaw > 0 turns towards image-left).", ""]
    for name, hist in hists.items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k} {v:,}" for k, v in hist.items()))
    return "\n".join(lines)


def _provenance(path: Path, meta: dict[str, Any], provenance: dict[str, Any]) -> str:
    lines = ["## Provenance", "",
             f"- manifest: `{path.name}`, {path.stat().st_size:,} bytes, sha256 `{sha256_file(path)}`",
             f"- schema version {meta.get('schema_version')}, written by facedata {meta.get('facedata_version')}; "
             f"card rendered by facedata {__version__}"]
    lines += _how_made(provenance, "")
    return "\n".join(lines)


def _how_made(provenance: dict[str, Any], indent: str) -> list[str]:
    """The provenance a manifest records, nested for fused inputs."""
    lines = []
    if "source_format" in provenance:
        lines.append(f"{indent}- format `{provenance['source_format']}`")
    if provenance.get("command"):
        lines.append(f"{indent}- command: `{provenance['command']}`")
    for item in provenance.get("source_files", []):
        lines.append(f"{indent}- source file `{item['path']}` sha256 `{item['sha256']}`")
    for name, root in provenance.get("roots", {}).items():
        lines.append(f"{indent}- image root `{name}`: {f'`{root}`' if root else 'not given (no --images)'}")
    for key in ("rejects", "duplicates", "records"):
        if key in provenance:
            lines.append(f"{indent}- {key}: {_value(provenance[key])}")
    for run in provenance.get("filters", []):
        steps = "; ".join(f"{s['rule']}: {s['faces_removed']:,} faces removed" for s in run.get("steps", []))
        lines.append(f"{indent}- filter: `{run.get('command', '')}` ({steps}; removed faces: {run.get('removed')})")
    if "fuse" in provenance:
        fuse = provenance["fuse"]
        lines.append(f"{indent}- fused to `{fuse['target']}`: {fuse['faces']:,} faces; {fuse['mask']}")
        lines += [f"{indent}  - from `{s['path']}`: {s['faces']:,} `{s['source']}` faces, {s['route']}"
                  for s in fuse.get("sources", [])]
        how = "repeats each face" if fuse.get("repeat") else "multiplies the `weight` of"
        lines += [f"{indent}  - `--weight {r['rule']}` {how} {r['faces']:,} faces" for r in fuse.get("rules", [])]
    for entry in provenance.get("inputs", []):
        lines.append(f"{indent}- input `{entry['name']}`:")
        lines += _how_made(entry.get("provenance", {}), indent + "  ")
    return lines


def _quirks(manifest: Manifest, stats: dict[str, Any], cards: dict[str, CorpusCard | None], card_dir: Path) -> str:
    lines = ["## Known quirks", "", "In this manifest:", ""]
    flags, prov = stats["flags"], manifest.provenance
    found = [
        (flags["degenerate"], "faces with a degenerate box (kept and flagged; `filter --min-size` removes them)"),
        (flags["invalid"], "faces flagged invalid (never sampled; ignore regions in builds)"),
        (stats["ignored_faces"], "ignore regions (removed by a filter, kept so no negative covers them)"),
        (stats["images_without_faces"], "images without faces (pure negatives)"),
        (stats["images"] - stats["images_with_size"], "images of unknown size (ingest with --images to probe them)"),
        (_number(prov.get("duplicates")), "face line(s) repeated identically in the source, kept once"),
        (_number(prov.get("rejects")), "item(s) in the ingest rejects report (skipped, or repeats kept once)"),
    ]
    found += [(v["box_derived"], f"{k} faces whose box is the extent of their points")
              for k, v in stats["landmarks"]["schemes"].items()]
    lines += [f"- {count:,} {text}" for count, text in found if count] or ["- none found"]
    known = [(s, c) for s, c in cards.items() if c is not None and c.quirks]
    if known:
        lines += ["", "Known defects of the source corpora that facedata handles (see each corpus card):", ""]
        lines += [f"- {_corpus_link(s, c, card_dir)}: {'; '.join(c.quirks)}" for s, c in known]
    return "\n".join(lines)


# --- helpers ----------------------------------------------------------------------------------------------


def _small_faces(manifest: Manifest) -> dict[str, Any]:
    """Faces under SMALL_FACE px, counted by the filter rule that would remove them (ignore regions excluded)."""
    _, report = apply_filters(manifest, [MinSize(SMALL_FACE)])
    step = report.steps[0]
    of = step.faces_removed + step.faces_left
    return {"faces": step.faces_removed, "of": of, "share": step.faces_removed / of if of else None}


def _number(value: Any) -> int:
    """A provenance count (an int, or a list of items) as a number."""
    if isinstance(value, list):
        return len(value)
    return int(value) if isinstance(value, int | float) else 0


def _value(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else (f"{len(value):,}" if isinstance(value, list) else str(value))


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.2f} %"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return markdown_table(header, [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows])
