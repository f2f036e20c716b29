"""The `facedata` command: parses options and calls the library; no logic lives here."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import NamedTuple

import click

from facedata import __version__
from facedata.buildoptions import Number, check_iou_order, check_values, root_folder
from facedata.console import number
from facedata.detect.settings import DETECTION_THRESHOLDS, LANDMARK_LAYOUTS, MINING_THRESHOLDS
from facedata.errors import FacedataError
from facedata.optionnames import RenamingCommand
from facedata.paths import DISK_FULL


class _Group(click.Group):
    """Prints library errors and bad option values of a command as one clear line (exit 2), not a traceback
    or a usage screen."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except FacedataError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # a full disk that no command names better (facedata.paths.full_disk_error)
            if exc.errno not in DISK_FULL:
                raise
            click.echo(f"error: {exc.filename or 'an output'}: {os.strerror(exc.errno)}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
def main() -> None:
    """Face detection and landmark corpora to sharded, checksummed training data."""


# --- issue 2: formats, ingest, filter, stats, demo -------------------------------------------------

SEED = Number(0, 2**32 - 1, integer=True)  # numpy seeds are unsigned 32-bit: a negative one is an error naming --seed

_quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Only errors and requested output (for scripts)."
)


_overwrite_manifest_option = click.option(
    "--overwrite", is_flag=True, help="Replace an existing output manifest (atomically, once the new one is written).")


_survival_option = click.option(
    "--survival-px", default=10.0, show_default=True, type=Number(0), metavar="PX",
    help="Survival table: a face is lost at an input size when its size there, its shorter side, is under PX.")


def _image_roots(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Callback of every `--images [NAME=]DIR` option: each DIR must be an existing folder."""
    for value in values:
        root_folder(value)
    return values


def _note(quiet: bool, message: str) -> None:
    """Progress and notices go to stderr so stdout stays clean for results (e.g. stats --json)."""
    if not quiet:
        click.echo(message, err=True)


@main.command()
@_quiet_option
def formats(quiet: bool) -> None:
    """List the annotation formats `ingest` understands (the list is the requested output: --quiet keeps it)."""
    from facedata.parsers import FORMATS

    items = list(FORMATS)
    width = max((len(name) for name, _ in items), default=0)
    for name, fmt in items:
        click.echo(f"{name:<{width}}  {fmt.description}")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--format", "format_name", metavar="NAME",
              help="Annotation format (default: sniffed; see `formats`).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image root: check and probe images, and check faces against the image size "
                   "(a folder SOURCE holds its images: default the folder).")
@click.option("--split", help="Split name (default: from the file name, e.g. train/val/test).")
@click.option("--strict", is_flag=True, help="Stop at the first bad item instead of skipping it.")
@click.option("--scheme", metavar="NAME",
              help="Landmark scheme of the keypoints (coco_keypoints; default: from keypoint names or count).")
@click.option("--wholebody-face", is_flag=True,
              help="COCO-WholeBody: read the 68 face points (face_kpts) instead of the body keypoints.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Rejects report (CSV; default OUT.rejects.csv, written when items were skipped, "
                   "a stale one removed otherwise).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest to write (.parquet).")
@_overwrite_manifest_option
@_quiet_option
def ingest(
    source: Path, format_name: str | None, images: Path | None, split: str | None, strict: bool,
    scheme: str | None, wholebody_face: bool, rejects_path: Path | None, output: Path, overwrite: bool,
    quiet: bool,
) -> None:
    """Parse an annotation file, or a folder corpus (a LaPa split, a folder of .pts files), into a manifest.

    Bad items are skipped and listed in the rejects report (--strict stops at the first): malformed lines,
    face counts that disagree with the face lines, repeated identical face lines (kept once), and with
    --images missing images and faces lying outside their image (the image is dropped).
    """
    from facedata.parsers import format_warnings, sniff_confidence
    from facedata.parsers import ingest as ingest_file

    report = rejects_path or output.with_name(output.name + ".rejects.csv")
    _refuse_same_file(source, output, "-o/--output")
    _refuse_same_file(source, report, "--rejects")
    _refuse_same_file(output, report, "--rejects")
    _refuse_existing(output, overwrite)
    if images is None and not source.is_dir():
        _note(quiet, "notice: no --images given: image files are not checked, image sizes stay unknown "
                     "and faces are not checked against them")
    given = {"scheme": scheme, "wholebody_face": wholebody_face or None}
    manifest, rejects = ingest_file(source, format=format_name, images=images, strict=strict, split=split,
                                    format_options={k: v for k, v in given.items() if v is not None})
    output.parent.mkdir(parents=True, exist_ok=True)
    manifest.write(output)
    fmt = manifest.provenance.get("source_format", format_name)
    confidence = None if format_name else sniff_confidence(source, fmt)
    how = " (sniffed)" if confidence is None else f" (sniffed, {confidence:.0%} of its head fits)"
    how = "" if format_name else how
    counts = f"{number(len(manifest.images))} images, {number(len(manifest.faces))} faces"
    _note(quiet, f"format {fmt}{how}: wrote {counts} to {output}")
    for warning in format_warnings(manifest, rejects, fmt):
        click.echo(f"warning: {warning}", err=True)
    if len(rejects) or not quiet:
        click.echo("\n".join(rejects.summary_lines()), err=True)
    if len(rejects) or rejects_path is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        rejects.write_csv(report)  # replaces the report of an earlier run
        if len(rejects) or not quiet:
            click.echo(f"rejects report: {report}", err=True)
    else:
        report.unlink(missing_ok=True)  # an earlier run's report would describe another manifest


def _refuse_existing(output: Path, overwrite: bool) -> None:
    """A finished output is never replaced silently."""
    if output.exists() and not overwrite:
        raise FacedataError(f"-o/--output {output} exists; pass --overwrite to replace it")


def _refuse_same_file(keep: Path, target: Path, option: str) -> None:
    """Writing `target` must not overwrite `keep` (the input, or another output)."""
    from facedata.paths import same_file

    if same_file(keep, target):
        raise FacedataError(f"{option} {target} is the same file as {keep}: choose another path")


@main.command(name="filter")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--min-size", type=float, metavar="PX",
              help="Remove faces whose size, their shorter side, is under PX (a 12x8 px face is under 10; the "
                   "Ultra-Light-Fast detector's WIDER filter is 10).")
@click.option("--drop-invalid", is_flag=True, help="Remove faces flagged invalid or degenerate.")
@click.option("--where", multiple=True, metavar="EXPR",
              help="Keep faces (or, naming image columns only, images) matching EXPR, e.g. "
                   "\"blur < 2 and occlusion == 0\": columns, literals, comparisons, in [...], and/or/not, "
                   "+ - * / (repeatable).")
@click.option("--removed", type=click.Choice(["ignore", "drop"]), default="ignore", show_default=True,
              help="Removed faces: ignore = kept, flagged as ignore regions (no negative crop is cut over them, "
                   "their image is not a pure negative); drop = deleted.")
@click.option("--drop-empty-images", is_flag=True,
              help="Drop images left without (non-ignored) faces (the negatives).")
@click.option("--wider-subset", type=click.Choice(["easy", "medium", "hard"]),
              help="Keep the WIDER val faces this evaluation level scores; the others are removed (see --removed). "
                   "Needs --gt-dir.")
@click.option("--gt-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The WIDER eval tool's ground_truth folder (wider_{easy,medium,hard}_val.mat), for --wider-subset.")
@_overwrite_manifest_option
@_quiet_option
def filter_command(
    source: Path, output: Path, min_size: float | None, drop_invalid: bool, where: tuple[str, ...],
    removed: str, drop_empty_images: bool, wider_subset: str | None, gt_dir: Path | None, overwrite: bool,
    quiet: bool,
) -> None:
    """Filter a manifest; rules run as wider-subset, min-size, drop-invalid, where..., drop-empty-images."""
    from facedata.filters import apply_filters, rules_from_options
    from facedata.manifest import Manifest

    _refuse_same_file(source, output, "-o/--output")  # the input manifest is never overwritten
    _refuse_existing(output, overwrite)
    if (wider_subset is None) != (gt_dir is None):
        raise click.UsageError("--wider-subset and --gt-dir go together")
    subset = None if wider_subset is None else (wider_subset, str(gt_dir))
    rules = rules_from_options(min_size, drop_invalid, where, drop_empty_images, removed, subset)
    if not rules:
        raise FacedataError(
            "no filter rule given (--min-size, --drop-invalid, --where, --drop-empty-images, --wider-subset)"
        )
    result, report = apply_filters(Manifest.read(source), rules)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.write(output)
    for line in report.lines():
        _note(quiet, line)
    if subset is not None:
        found = result.provenance["wider_subset"]
        _note(quiet, f"wider {wider_subset} subset: {number(found['subset_faces_found'])} of its "
                     f"{number(found['subset_faces'])} faces found in the manifest "
                     f"({number(found['faces_kept'])} distinct faces kept)")
    _note(quiet, f"wrote {output}")


def _export_formats() -> list[str]:
    from facedata.exports import EXPORTS

    return EXPORTS.names()


@main.command(name="export")
@click.argument("format_name", metavar="FORMAT", type=click.Choice(_export_formats()))
@click.argument("source", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output: a file (coco .json, retinaface label.txt) or a folder of per-image files (voc, yolo).")
@click.option("--strict", is_flag=True,
              help="Refuse to export when the format cannot hold some of the manifest (default: warn with counts).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@_quiet_option
def export_command(format_name: str, source: Path, output: Path, strict: bool, overwrite: bool, quiet: bool) -> None:
    """Write a manifest in a detector's training format: coco, voc, retinaface or yolo.

    What the format cannot hold (other schemes' points, attributes, pose, ignore regions...) is named with its
    count: a warning, or an error with --strict. Paths are the manifest's rel_path under its one image root.
    """
    from facedata.exports import export
    from facedata.manifest import Manifest

    _refuse_same_file(source, output, "-o/--output")
    manifest = Manifest.read(source)
    lost = export(manifest, format_name, output, source=str(source), strict=strict, overwrite=overwrite)
    for loss in lost:
        click.echo(f"warning: {format_name} cannot hold {loss}: not exported", err=True)
    _note(quiet, f"wrote {number(len(manifest.images))} images, {number(len(manifest.faces))} faces as {format_name} "
                 f"to {output}")


@main.command()
@click.argument("source", metavar="MANIFEST", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The Markdown card to write (e.g. card.md).")
@click.option("--overwrite", is_flag=True, help="Replace an existing card.")
@_quiet_option
def card(source: Path, output: Path, overwrite: bool, quiet: bool) -> None:
    """Write a Markdown data card for a manifest: sources and licences, counts, sizes, schemes, provenance."""
    from facedata.card import write_card

    stats = write_card(source, output, overwrite=overwrite)
    _note(quiet, f"wrote {output}: {stats['images']:,} images, {stats['faces']:,} faces")


@main.command(cls=RenamingCommand)
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--markdown", is_flag=True, help="Markdown tables.")
@click.option("--inputs", default="320x240,480x360,640x480", show_default=True,
              help="Detector input sizes for the survival table.")
@_survival_option
@click.option("--resize", type=click.Choice(["fit", "stretch"]), default="fit", show_default=True,
              help="fit: keep aspect, scale = min(tw/W, th/H); stretch: scale x and y separately.")
@_quiet_option
def stats(source: Path, as_json: bool, markdown: bool, inputs: str, survival_px: float, resize: str,
          quiet: bool) -> None:
    """Corpus statistics: counts, sizes, attributes, landmarks, input-resolution survival (the tables are the
    requested output: --quiet keeps them)."""
    from facedata.manifest import Manifest
    from facedata.stats import compute_stats, parse_inputs, render_json, render_markdown, render_text

    if as_json and markdown:
        raise FacedataError("--json and --markdown are exclusive")
    result = compute_stats(Manifest.read(source), parse_inputs(inputs), survival_px, resize)
    if as_json:
        click.echo(render_json(result))
    elif markdown:
        click.echo(render_markdown(result, title=source.name), nl=False)
    else:
        click.echo(render_text(result, title=str(source)), nl=False)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "target", required=True, metavar="SCHEME",
              help="Target landmark scheme (wflw98, ibug68, lapa106, mtcnn5, ...).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Fused manifest to write (.parquet; never one of the inputs).")
@click.option("--weight", "weights", multiple=True, metavar="QUERY=K",
              help="Multiply the weight of faces matching QUERY (the --where language) by K, e.g. "
                   "\"ear_min < 0.1=3\" or \"yaw > 30 or yaw < -30=2\" (repeatable; rules multiply).")
@click.option("--repeat", is_flag=True, help="Write matching faces K times instead of setting their weight.")
@_overwrite_manifest_option
@_quiet_option
def fuse(inputs: tuple[Path, ...], target: str, output: Path, weights: tuple[str, ...], repeat: bool,
         overwrite: bool, quiet: bool) -> None:
    """Map landmark manifests to one scheme with masks, derived columns (EAR, mouth, pose) and weights."""
    from facedata.fusion.fuse import fuse_files

    if not any(path.resolve() == output.resolve() for path in inputs):  # fuse_files names that case itself
        _refuse_existing(output, overwrite)

    report = fuse_files(inputs, output, target, weights, repeat)
    for line in report.lines():
        _note(quiet, line)
    _note(quiet, f"wrote {output}")


@main.command()
@click.option("-o", "--output", default="demo_out", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic corpus.")
@_quiet_option
def demo(output: Path, seed: int, quiet: bool) -> None:
    """Build the built-in demo corpus and run the pipeline on it end to end."""
    from facedata.demo import run_demo

    run_demo(output, seed=seed, quiet=quiet)


def _thresholds_text(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


_THRESHOLD_HELP = {
    "detect": "PNet,RNet,ONet score thresholds: the usual inference setting "
    f"(reference mining: {_thresholds_text(MINING_THRESHOLDS)}).",
    "mining": "PNet,RNet,ONet score thresholds of the mining cascade (build rnet uses the PNet one, build "
    "onet the first two). Default: the reference's mining setting, for recall: a face the previous stage "
    "misses never becomes a positive or part sample. With the pretrained MTCNN on real photos, PNet at 0.3 "
    "proposes ~3x the boxes of 0.6 for about the same CPU time (the pyramid pass dominates), and PNet+RNet "
    "at 0.3,0.1 keep ~13x the boxes of 0.6,0.7 for ~1.6x the time. "
    f"{_thresholds_text(DETECTION_THRESHOLDS)} is the detection setting.",
}


def cascade_options(use: str):
    """Model contract and cascade options shared by `detect` ("detect") and the hard-example builds
    ("mining"), which differ only in their default thresholds (facedata.detect.cascade says why)."""
    thresholds = DETECTION_THRESHOLDS if use == "detect" else MINING_THRESHOLDS
    options = [
        click.option("--pyramid-min-face", default=20.0, show_default=True, metavar="PX",
                     help="Smallest face the detector's image pyramid searches (its first level scales the "
                          "image by 12/PX)."),
        click.option("--factor", default=0.79, show_default=True, help="Pyramid scale step (paper: 0.709)."),
        click.option("--thresholds", default=_thresholds_text(thresholds), show_default=True,
                     help=_THRESHOLD_HELP[use]),
        click.option("--mean", default=127.5, show_default=True,
                     help="Pixel normalisation: (x - mean) * scale."),
        click.option("--scale", default=0.0078125, show_default=True,
                     help="Pixel normalisation scale (1/128)."),
        click.option("--channels", type=click.Choice(["bgr", "rgb"]), default="bgr", show_default=True,
                     help="Channel order the models were trained on."),
        click.option("--logits", is_flag=True, help="Models output logits: apply the softmax here."),
        click.option("--threads", default=1, show_default=True, help="onnxruntime threads per process."),
    ]

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _cascade_parts(pyramid_min_face, factor, thresholds, mean, scale, channels, logits, **layout):
    """CascadeConfig and ModelContract from `cascade_options` values (and `detect`'s landmark layout)."""
    from facedata.detect import CascadeConfig, ModelContract
    from facedata.detect.draw import parse_thresholds

    values = parse_thresholds(thresholds)
    check_values(  # one place for detect and the mining builds
        ("--pyramid-min-face", pyramid_min_face, Number(1)), ("--factor", factor, Number(0.01, 0.99)),
        ("--mean", mean, Number(-math.inf)), ("--scale", scale, Number(-math.inf)),
        *(("--thresholds", value, Number(0, 1)) for value in values),
    )
    config = CascadeConfig(pyramid_min_face=pyramid_min_face, factor=factor, thresholds=values)
    return config, ModelContract(mean=mean, scale=scale, channels=channels, logits=logits, **layout)


def make_cascade(pnet, rnet, onet, threads, **options):
    """A Cascade from `cascade_options` values (and `--landmark-layout`)."""
    from facedata.detect import Cascade

    check_values(("--threads", threads, Number(1, 256, integer=True)))
    config, contract = _cascade_parts(**options)
    return Cascade(pnet, rnet, onet, config=config, contract=contract, threads=threads)


@main.command(cls=RenamingCommand)
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pnet", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PNet ONNX model (dynamic height/width).")
@click.option("--rnet", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="RNet ONNX model.")
@click.option("--onet", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="ONet ONNX model.")
@cascade_options("detect")
@click.option("--landmark-layout", type=click.Choice(LANDMARK_LAYOUTS), default="xyxy", show_default=True,
              help="Order of the ONet's 10 landmark outputs: xyxy = x1 y1 ... x5 y5 (models trained on "
              "facedata or the reference's data); xxyy = x1..x5 y1..y5 (the original Caffe MTCNN and most "
              "converted models, e.g. facenet-pytorch's).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the detections as JSON on stdout (boxes, scores, 5 points per face), nothing else.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the image with boxes (and landmarks) drawn on it.")
@_quiet_option
def detect(
    image: Path, pnet: Path, rnet: Path | None, onet: Path | None, as_json: bool, output: Path | None,
    quiet: bool, **options,
) -> None:
    """Run the cascade on one image: list what it finds (--json for scripts) and optionally draw it
    (check a model and its contract options before a long mining run)."""
    from facedata.detect.draw import detect_file, detections_json

    dets = detect_file(image, output, make_cascade(pnet, rnet, onet, **options))
    if as_json:
        click.echo(detections_json(image, dets))
    else:
        stages = "/".join(str(n) for n in dets.proposals)
        click.echo(f"{len(dets)} face(s) in {image.name} (boxes after each stage: {stages})")
        for box, score in zip(dets.boxes, dets.scores, strict=True):
            click.echo(f"  {score:.3f}  " + " ".join(f"{v:.1f}" for v in box))
    if output is not None:
        _note(quiet, f"wrote {output}")


# --- issue 3: shard store (verify, inspect) ----------------------------------------------------------


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--labels", is_flag=True,
              help="Also re-derive every sample's label and targets with the independent oracle "
              "(rules from index.json).")
@click.option("--pixels", "n_pixels", type=click.IntRange(min=1), metavar="N",
              help="Also re-cut N random samples (mirrored and rotated ones included) from the source "
              "images with an independent warp and compare their pixels.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Which samples --pixels picks.")
@click.option("--detections", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Detection manifest the dataset was built from (default: the one index.json records, "
              "if unchanged).")
@click.option("--landmarks", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              help="Landmark manifest the dataset was built from (default: the one index.json records, "
              "if unchanged); a pfld build: repeat for each input, in the build's order.")
@click.option("--keypoints", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Keypoint manifest a topdown dataset was built from (build topdown records its hash, not "
              "its path).")
@click.option("--images", "roots", multiple=True, metavar="[NAME=]DIR", callback=_image_roots,
              help="Image root override for --pixels (repeatable; NAME is the manifest's root name).")
@click.option("--max-listed", default=20, show_default=True, type=click.IntRange(0),
              help="Label mismatches and pixel failures listed (all are counted).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the checks run and their verdicts as one JSON object on stdout, nothing else (the exit "
              "code is the same: 1 when a check fails).")
@_quiet_option
def verify(
    directory: Path, labels: bool, n_pixels: int | None, seed: int, detections: Path | None,
    landmarks: tuple[Path, ...], keypoints: Path | None, roots: tuple[str, ...], max_listed: int, as_json: bool,
    quiet: bool,
) -> None:
    """Re-hash every shard of DIRECTORY and check its sample and label counts against index.json.

    --labels and --pixels check the samples themselves with an oracle that shares no code with the
    samplers (pnet/rnet/onet, pfld and topdown builds); the manifests are the ones index.json records unless
    --detections/--landmarks/--keypoints say otherwise.
    """
    checks, warnings = _verify_checks(directory, labels, n_pixels, seed, detections, landmarks, keypoints, roots,
                                      max_listed)
    ok = all(check.verdict["ok"] for check in checks)
    if as_json:
        import json

        verdicts = {check.name: check.verdict for check in checks}
        click.echo(json.dumps({"directory": str(directory), "ok": ok, "checks": verdicts, "warnings": warnings},
                              indent=1))
    else:
        for check in checks:
            passed = check.verdict["ok"]
            if check.text and (not passed or not quiet):
                click.echo(check.text)
            if passed and check.done and not quiet:
                click.echo(check.done)
        problems = checks[0].verdict["problems"]
        if problems:
            click.echo(f"{number(len(problems))} problem(s) in {directory}", err=True)
    if not ok:
        sys.exit(1)


class _Check(NamedTuple):
    """One `verify` check: its verdict (JSON), its report text, and the line saying it passed."""

    name: str
    verdict: dict
    text: str
    done: str = ""


def _verify_checks(directory: Path, labels: bool, n_pixels: int | None, seed: int, detections: Path | None,
                   landmarks: tuple[Path, ...], keypoints: Path | None, roots: tuple[str, ...], max_listed: int,
                   ) -> tuple[list[_Check], list[str]]:
    """The checks `verify` asks for, in order (the samples only in sound shards), and the warnings (also
    printed on stderr as they come)."""
    from facedata.storage import verify_dataset

    findings = verify_dataset(directory)
    problems = [str(finding) for finding in findings]
    verdict = {"ok": not findings, "problems": problems,
               "findings": [{"kind": f.kind, "file": f.file, "detail": f.detail} for f in findings]}
    checks = [_Check("shards", verdict, "\n".join(problems), f"{directory}: all shards verified")]
    warnings: list[str] = []

    def warn(notes: list[str]) -> None:
        warnings.extend(notes)
        for note in notes:
            click.echo(f"warning: {note}", err=True)

    if not problems and (labels or ((detections or landmarks or keypoints) and not n_pixels)):
        from facedata.oracle import verify_build_labels

        report, notes = verify_build_labels(directory, detections, landmarks, max_listed, keypoints=keypoints)
        warn(notes)
        checks.append(_Check("labels", report.to_dict(), report.summary(),
                             f"{directory}: all labels re-derived, 0 mismatches"))
    if not problems and n_pixels:
        from facedata.oracle import verify_build_pixels

        pixel_report, notes = verify_build_pixels(directory, n_pixels, seed=seed, detections=detections,
                                                  landmarks=landmarks, images=roots, keypoints=keypoints)
        warn(notes)
        checks.append(_Check("pixels", pixel_report.to_dict(max_listed), pixel_report.summary(max_listed)))
    return checks, warnings


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print the index itself (index.json, the machine-readable form of this summary) on stdout.")
@_quiet_option
def inspect(directory: Path, as_json: bool, quiet: bool) -> None:
    """Print the summary of a shard directory's index (layout, counts per label, shards, provenance, the build's
    summary); the summary is the requested output: --quiet keeps it."""
    import json

    from facedata.storage.index import describe, load_index

    index = load_index(directory)
    click.echo(json.dumps(index, indent=1) if as_json else describe(index))


# --- issue 3/4: build pnet|rnet|onet, preview ---------------------------------------------------------


def _output_dir(ctx: click.Context, param: click.Parameter, value: str) -> Path:
    """-o as a local path: a path or a file:// URL (facedata.paths.local_path), not a file."""
    from facedata.paths import local_path

    path = local_path(value, "--output")
    if path.is_file():
        raise click.BadParameter(f"{value} is a file, not a directory", ctx, param)
    return path


_STORE_OPTIONS = [  # output, parallelism and safety options of every build
    click.option("-o", "--output", required=True, callback=_output_dir,
                 help="Shard directory (a path, or a file:// URL): an interrupted build there resumes; a complete "
                 "one is never modified (same inputs and options: 'already complete'; others: an error unless "
                 "--overwrite)."),
    click.option("--format", "backend", type=click.Choice(["lmdb", "parquet"]), default="lmdb",
                 show_default=True),
    click.option("--workers", type=Number(1, 1024, integer=True),
                 help="Worker processes of --engine local or dask-local (default: all cores)."),
    click.option("--engine", type=click.Choice(["local", "dask", "dask-local"]), default="local", show_default=True,
                 help="Where the work runs: a local process pool, a running Dask cluster (--scheduler) or a Dask "
                      "LocalCluster of --workers processes; every engine writes the same bytes."),
    click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler of --engine dask, e.g. tcp://10.0.0.1:8786."),
    click.option("--scheduler-timeout", default=10.0, show_default=True, type=Number(0.1, 3600),
                 help="Seconds to wait for the Dask scheduler, then for its first worker."),
    click.option("--images-per-task", "chunk_images", type=Number(1, 1_000_000, integer=True),
                 help="Images per worker task (default: the stage's, 32 for crop stages, 4 for mining, 8 for pfld, "
                      "fewer for small corpora so every worker gets about 16 tasks)."),
    click.option("--seed", default=0, show_default=True, type=SEED,
                 help="Every random choice comes from (seed, image id)."),
    click.option("--shard-size", default="256MB", show_default=True,
                 help="Shard roll-over size (whole blocks of 1,024 samples, at least one block)."),
    click.option("--images", "roots", multiple=True, metavar="[NAME=]DIR", callback=_image_roots,
                 help="Image root override (repeatable; NAME is the manifest's root name; DIR may be a file:// URL)."),
    click.option("--strict", is_flag=True,
                 help="Stop at the first unreadable image instead of skipping it."),
    click.option("--overwrite", is_flag=True,
                 help="Replace a complete dataset of other inputs or options in -o; it stays readable until "
                 "the new one is complete (built beside it, then swapped in)."),
    click.option("--verify", is_flag=True,
                 help="When -o already holds this build, re-hash its shards (default: check their sizes)."),
    _quiet_option,
]


def _store_options(func):
    """Output, parallelism and safety options shared by every build; the engine options reach the build
    as one `engine` (facedata.engines.Engine)."""
    import functools

    @functools.wraps(func)
    def with_engine(*args, engine: str, scheduler: str | None, scheduler_timeout: float, **kwargs):
        from facedata.engines import Engine

        return func(*args, engine=Engine(engine, scheduler, scheduler_timeout), **kwargs)

    for option in reversed(_STORE_OPTIONS):
        with_engine = option(with_engine)
    return with_engine


_interpolation_option = click.option(
    "--interpolation", type=click.Choice(["linear", "area"]), default="linear", show_default=True,
    help="Resampling of the crops (cv2 INTER_LINEAR or INTER_AREA).",
)

_encode_option = click.option(
    "--encode", type=click.Choice(["raw", "png", "jpeg"]), default="raw", show_default=True,
    help="Store each sample's image raw, as PNG (lossless, decoded bit-exact) or JPEG (quality 95, lossy); "
         "readers decode, so they return the same arrays.",
)


def _build_options(func):
    """Inputs, mixing and landmark options shared by the three cascade builds (plus `_store_options`)."""
    options = [
        _interpolation_option,
        click.option("--detections", required=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Detection manifest (e.g. WIDER train)."),
        click.option("--landmarks", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="5-point landmark manifest (e.g. CUHK LFW/net_7876)."),
        click.option("--ratio", default="3:1:1:2", show_default=True,
                     help="neg:pos:part:landmark mix, or 'all' to keep every planned sample."),
        click.option("--allow-repeat", is_flag=True,
                     help="Repeat samples of short classes (counted in the index)."),
        click.option("--landmark-shifts", default=100, show_default=True, type=Number(0, 1000, integer=True),
                     help="Shifted crops per landmark face."),
        click.option("--landmark-variants", type=click.Choice(["random", "reference"]), default="random",
                     show_default=True,
                     help="Samples per kept shift: 'random' = --landmark-copies, each randomly mirrored and rotated "
                          "within --max-rotation; 'reference' = plain + random mirror + random ±rotation pairs "
                          "(3.5 on average)."),
        click.option("--landmark-copies", default=2, show_default=True, type=Number(1, 100, integer=True),
                     help="Samples per kept shift with --landmark-variants random."),
        click.option("--ignore-under", default=20.0, show_default=True, type=Number(0), metavar="PX",
                     help="Detection faces whose size, their shorter side, is under PX are ignore regions: never "
                          "sampled, and no negative may cover them (build pnet --recipe reference: its larger "
                          "side, 19, the reference's 20 on x2-x1+1 widths)."),
        click.option("--landmark-ignore-under", default=20.0, show_default=True, type=Number(0), metavar="PX",
                     help="Landmark faces whose size, their shorter side, is under PX are not sampled "
                          "(build pnet --recipe reference: its larger side, 39)."),
        click.option("--max-rotation", default=5.0, show_default=True, type=Number(0, 180),
                     help="Landmark rotation range (degrees)."),
        click.option("--no-mirror", is_flag=True, help="No random mirroring of landmark samples."),
        click.option("--neg-iou", default=0.3, show_default=True, type=Number(0, 1),
                     help="Negative: max IoU below this."),
        click.option("--part-iou", default=0.4, show_default=True, type=Number(0, 1), help="Part: IoU at least this."),
        click.option("--pos-iou", default=0.65, show_default=True, type=Number(0, 1),
                     help="Positive: IoU at least this."),
    ]
    func = _store_options(func)
    for option in reversed(options):
        func = option(func)
    return func


def _run_build(stage: str, detections: Path, landmarks: Path | None, output: Path, backend: str,
               workers: int | None, seed: int, shard_size: str, roots: tuple[str, ...], ratio: str,
               allow_repeat: bool, interpolation: str, landmark_shifts: int, landmark_variants: str,
               landmark_copies: int, landmark_ignore_under: float, max_rotation: float, no_mirror: bool,
               quiet: bool, strict: bool, overwrite: bool, verify: bool, crop_recipe, landmark_recipe,
               **extra) -> None:
    import os
    from dataclasses import replace

    extra["engine"].prepare(workers or os.cpu_count() or 1)  # e.g. the local pool's server imports meanwhile
    from facedata.build import build_dataset, parse_ratio, parse_roots, parse_size
    from facedata.manifest import Manifest
    from facedata.paths import sha256_file

    root_names = Manifest.root_names(detections) + (Manifest.root_names(landmarks) if landmarks else [])
    given = _given(
        landmark_shifts=("shifts_per_face", landmark_shifts), landmark_variants=("variants", landmark_variants),
        landmark_copies=("copies_per_shift", landmark_copies), no_mirror=("mirror", not no_mirror),
        landmark_ignore_under=("ignore_under", landmark_ignore_under), max_rotation=("max_rotation", max_rotation),
    )
    if given.get("variants") == "reference":  # enumerates its own samples per shift
        given.setdefault("copies_per_shift", 1)
    landmark_recipe = replace(landmark_recipe, interpolation=interpolation, **given)
    ratio_map = parse_ratio(ratio)  # None: 'all', no mixing
    files = {"detections_file": {"name": detections.name, "sha256": sha256_file(detections)}}
    if landmarks:
        files["landmarks_file"] = {"name": landmarks.name, "sha256": sha256_file(landmarks)}
    summary = build_dataset(  # paths, not manifests: the build drops the tables once it has its tasks
        detections, landmarks, output, stage=stage, backend=backend,
        crop_recipe=replace(crop_recipe, interpolation=interpolation), landmark_recipe=landmark_recipe,
        ratio=ratio_map, mix=ratio_map is not None, allow_repeat=allow_repeat, seed=seed,
        workers=workers, shard_bytes=parse_size(shard_size), roots=parse_roots(roots, root_names),
        progress=not quiet, strict=strict, extra_provenance=files, overwrite=overwrite, verify=verify, **extra,
    )
    _print_summary(summary, quiet)


def _print_summary(summary: dict, quiet: bool) -> None:
    """The build's table on stdout; with --quiet only what it could not do as asked, as warnings."""
    from facedata.buildsummary import format_summary, summary_warnings

    if not quiet:
        click.echo(format_summary(summary))
        return
    for line in summary_warnings(summary):
        click.echo(f"warning: {line}", err=True)


# What every build shares (its inputs, where it writes, where and how it runs): `--help` lists these first, then
# the stage's own options.
_BUILD_INPUTS = ("detections", "landmarks", "keypoints", "pnet", "rnet")
_BUILD_COMMON = {*_BUILD_INPUTS, "output", "backend", "workers", "engine", "scheduler", "scheduler_timeout",
                 "chunk_images", "seed", "shard_size", "roots", "strict", "overwrite", "verify", "quiet"}


class _BuildCommand(RenamingCommand):
    """A build command whose help lists the common options first and the stage options after."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": [], "Stage options": []}
        params = sorted(self.get_params(ctx), key=lambda param: param.name not in _BUILD_INPUTS)  # inputs first
        for param in params:
            record = param.get_help_record(ctx)
            if record is not None:
                common = param.name in _BUILD_COMMON or "--help" in param.opts
                sections["Options" if common else "Stage options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class _BuildGroup(click.Group):
    command_class = _BuildCommand


@main.group(cls=_BuildGroup)
def build() -> None:
    """Build sharded training data: a cascade stage (pnet, rnet, onet), PFLD landmark crops (pfld) or top-down
    keypoint crops (topdown)."""


def _given(**options: tuple[str, object]) -> dict[str, object]:
    """{recipe field: value} of the options given on the command line (they override a --recipe preset;
    option defaults equal the fixed recipe's, tests/test_samplers.py checks it)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {field: value for name, (field, value) in options.items()
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}


@build.command(name="pnet")
@_build_options
@click.option("--recipe", type=click.Choice(["fixed", "reference"]), default="fixed", show_default=True,
              help="Recipe preset: facedata's fixed recipe, or the reference generator's conventions (+1 px "
                   "areas, its draws and size rules, no ignore-region exclusion, its landmark variants) to "
                   "reproduce its class counts. Options given explicitly override the preset.")
@click.option("--negatives-per-image", default=75, show_default=True, type=Number(0, 100_000, integer=True),
              help="Random negatives per image (reference: 50).")
@click.option("--near-negatives", default=5, show_default=True, type=Number(0, 10_000, integer=True),
              help="Near-face negative tries per face.")
@click.option("--positive-tries", default=20, show_default=True, type=Number(0, 10_000, integer=True),
              help="Positive/part tries per face.")
def build_pnet(recipe: str, negatives_per_image: int, near_negatives: int, positive_tries: int,
               ignore_under: float, neg_iou: float, part_iou: float, pos_iou: float, **options) -> None:
    """PNet (12 px): IoU crop sampler + landmark samples, mixed, in shards."""
    from dataclasses import replace

    from facedata.samplers.presets import preset_recipes

    crop, landmarks = preset_recipes(recipe, 12)
    given = _given(
        negatives_per_image=("negatives_per_image", negatives_per_image),
        near_negatives=("near_negatives_per_face", near_negatives),
        positive_tries=("positive_tries_per_face", positive_tries), ignore_under=("ignore_under", ignore_under),
        neg_iou=("negative_iou", neg_iou), part_iou=("part_iou", part_iou), pos_iou=("positive_iou", pos_iou),
    )
    check_iou_order(*(given.get(k, getattr(crop, k)) for k in ("negative_iou", "part_iou", "positive_iou")))
    _run_build("pnet", crop_recipe=replace(crop, **given), landmark_recipe=landmarks, **options)


def _mining_build(stage: str, pnet: Path, rnet: Path | None, ignore_under: float, max_neg_per_image: int,
                  pad_border: bool, neg_iou: float, part_iou: float, pos_iou: float, pyramid_min_face: float,
                  factor: float, thresholds: str, mean: float, scale: float, channels: str, logits: bool,
                  threads: int, **options) -> None:
    from facedata.build import CascadeFactory
    from facedata.samplers import CropRecipe, LandmarkRecipe
    from facedata.samplers.mined import MiningRecipe
    from facedata.samples import STAGE_SIZE

    check_iou_order(neg_iou, part_iou, pos_iou)
    check_values(
        ("--max-neg-per-image", max_neg_per_image, Number(0, 100_000, integer=True)),
        ("--threads", threads, Number(1, 256, integer=True)),
    )
    config, contract = _cascade_parts(pyramid_min_face, factor, thresholds, mean, scale, channels, logits)
    size = STAGE_SIZE[stage]
    mining = MiningRecipe(size=size, negative_iou=neg_iou, part_iou=part_iou, positive_iou=pos_iou,
                          max_negatives_per_image=max_neg_per_image, pad_border=pad_border,
                          ignore_under=ignore_under)
    factory = CascadeFactory(str(pnet), None if rnet is None else str(rnet), config, contract, threads=threads)
    _run_build(stage, crop_recipe=CropRecipe(size=size, ignore_under=ignore_under), detector=factory,
               mining_recipe=mining, landmark_recipe=LandmarkRecipe(size=size), **options)


def _mining_options(func):
    options = [
        click.option("--max-neg-per-image", default=60, show_default=True, help="Negative cap per image."),
        click.option("--pad-border", is_flag=True,
                     help="Keep border-crossing detections, zero-padded (the reference skips them)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@build.command(name="rnet")
@_build_options
@click.option("--pnet", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained PNet (ONNX).")
@_mining_options
@cascade_options("mining")
def build_rnet(**options) -> None:
    """RNet (24 px): hard examples mined with PNet + landmark samples, in shards."""
    _mining_build("rnet", rnet=None, **options)


@build.command(name="onet")
@_build_options
@click.option("--pnet", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained PNet (ONNX).")
@click.option("--rnet", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trained RNet (ONNX).")
@_mining_options
@cascade_options("mining")
def build_onet(**options) -> None:
    """ONet (48 px): hard examples mined with PNet + RNet + landmark samples, in shards."""
    _mining_build("onet", **options)


@build.command(name="topdown")
@click.option("--keypoints", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Keypoint manifest: COCO person keypoints (coco17) or any face landmark manifest of one scheme.")
@click.option("--input", "input_size", default="192x256", show_default=True, metavar="WxH",
              help="Network input (w x h): the crop's aspect ratio and zoom (mmpose: 192x256, 288x384).")
@click.option("--margin", default=1.25, show_default=True, type=Number(1, 4),
              help="Stored crop size relative to --input, same centre and zoom: real pixels for read-time "
                   "rotation and scale augmentation (1 = the input crop only).")
@click.option("--keep-unlabelled", is_flag=True,
              help="Also crop persons without a labelled keypoint (all target weights 0).")
@_interpolation_option
@_encode_option
@_store_options
def build_topdown(keypoints: Path, input_size: str, margin: float, keep_unlabelled: bool, interpolation: str,
                  encode: str, output: Path, backend: str, workers: int | None, seed: int, shard_size: str,
                  roots: tuple[str, ...], strict: bool, overwrite: bool, verify: bool, quiet: bool,
                  **run_options) -> None:
    """Top-down keypoint crops (HRNet/Lite-HRNet/SimpleBaseline): one crop per person or face, mmpose's
    centre/scale (padding 1.25, 200 px unit); heatmaps are made at read time (facedata.readers.heatmaps)."""
    from facedata.build import parse_roots, parse_size
    from facedata.manifest import Manifest
    from facedata.stages.topdown import build_topdown as run

    recipe = {"input": _parse_wxh(input_size, "--input"), "margin": margin, "keep_unlabelled": keep_unlabelled,
              "interpolation": interpolation}  # a bad option fails before a large manifest is read
    summary = run(keypoints, output, recipe, backend=backend, workers=workers, seed=seed,
                  shard_bytes=parse_size(shard_size), roots=parse_roots(roots, Manifest.root_names(keypoints)),
                  progress=not quiet, strict=strict, overwrite=overwrite, verify=verify, encoding=encode,
                  **run_options)
    _print_summary(summary, quiet)


def _parse_wxh(text: str, option: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise FacedataError(f"{option} {text!r}: expected WIDTHxHEIGHT, e.g. 192x256") from None
    if w < 1 or h < 1:
        raise FacedataError(f"{option} {text!r}: both sides must be >= 1 px")
    return w, h


@build.command(name="pfld")
@click.option("--landmarks", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Landmark manifest (repeatable; all in one scheme: fuse first).")
@click.option("--size", default=112, show_default=True, type=Number(8, 1024, integer=True), help="Crop side.")
@click.option("--expand", default=1.2, show_default=True, type=Number(0.1, 10),
              help="Crop side over the larger side of the box (PFLD: 1.2).")
@click.option("--box", type=click.Choice(["landmarks", "annotated"]), default="landmarks", show_default=True,
              help="Square around the present points' extent, or around the annotated face box.")
@click.option("--variants", default=10, show_default=True, type=Number(1, 1000, integer=True),
              help="Samples per face: the un-augmented crop plus augmented ones.")
@click.option("--max-rotation", default=30.0, show_default=True, type=Number(0, 180),
              help="Rotation range of augmented variants (degrees).")
@click.option("--jitter", default=0.1, show_default=True, type=Number(0, 1),
              help="Centre jitter range as a fraction of the crop side.")
@click.option("--scale-low", default=0.9, show_default=True, type=Number(0.1, 10), help="Crop side scale, low.")
@click.option("--scale-high", default=1.25, show_default=True, type=Number(0.1, 10), help="Crop side scale, high.")
@click.option("--no-mirror", is_flag=True, help="No random mirroring (needed for a scheme without a flip permutation).")
@click.option("--max-tries", default=20, show_default=True, type=Number(1, 1000, integer=True),
              help="Draws per augmented variant before it is dropped (a draw is redrawn when a point leaves the crop).")
@click.option("--repeat-by", type=click.Choice(["weight"]),
              help="weight: a face gets max(1, round(weight)) x --variants samples (fuse --weight).")
@_interpolation_option
@_encode_option
@_store_options
def build_pfld(landmarks: tuple[Path, ...], size: int, expand: float, box: str, variants: int, max_rotation: float,
               jitter: float, scale_low: float, scale_high: float, no_mirror: bool, max_tries: int,
               repeat_by: str | None, output: Path, backend: str, workers: int | None, seed: int, shard_size: str,
               roots: tuple[str, ...], interpolation: str, encode: str, strict: bool, overwrite: bool,
               verify: bool, quiet: bool, **run_options) -> None:
    """PFLD (112 px): landmark face crops with augmented variants, masks, Euler angles and attribute flags."""
    from facedata.build import parse_roots, parse_size
    from facedata.manifest import Manifest
    from facedata.stages.pfld import build_pfld as run

    if scale_low > scale_high:
        raise click.UsageError(f"--scale-low {scale_low:g} is above --scale-high {scale_high:g}")
    recipe = {"size": size, "expand": expand, "box": box, "variants": variants, "max_rotation": max_rotation,
              "jitter": jitter, "scale_low": scale_low, "scale_high": scale_high, "mirror": not no_mirror,
              "max_tries": max_tries, "repeat_by": repeat_by, "interpolation": interpolation}
    names = sorted({name for path in landmarks for name in Manifest.root_names(path)})
    summary = run(list(landmarks), output, recipe, backend=backend, workers=workers, seed=seed,
                  shard_bytes=parse_size(shard_size), roots=parse_roots(roots, names), progress=not quiet,
                  strict=strict, overwrite=overwrite, verify=verify, encoding=encode, **run_options)
    _print_summary(summary, quiet)


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Contact sheet to write (.png).")
@click.option("--per-label", default=16, show_default=True, type=click.IntRange(1),
              help="Random samples shown per label.")
@click.option("--columns", default=8, show_default=True, type=click.IntRange(1))
@click.option("--cell", default=96, show_default=True, type=click.IntRange(8), help="Pixels per (upscaled) crop.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@_quiet_option
def preview(directory: Path, output: Path, per_label: int, columns: int, cell: int, seed: int, quiet: bool) -> None:
    """Contact sheet of random samples per label with box offsets and landmarks drawn back on the crops."""
    from facedata.console import labels_text
    from facedata.preview import write_preview

    shown = write_preview(directory, output, per_label=per_label, columns=columns, cell=cell, seed=seed)
    _note(quiet, f"wrote {output} ({labels_text(shown)})")


@main.command(cls=RenamingCommand)
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for index.html and stats.json (created if missing).")
@click.option("--images", "roots", multiple=True, metavar="[NAME=]DIR", callback=_image_roots,
              help="Image root for the random image grid (default: the roots recorded in the manifest).")
@click.option("--grid", default=12, show_default=True, type=click.IntRange(0),
              help="Random images drawn with their faces (0: none).")
@_survival_option
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Seed of the random images / contact-sheet samples.")
@click.option("--batch-size", default=384, show_default=True, type=click.IntRange(1),
              help="Shard sets: batch size of the class-share-per-batch table.")
@click.option("--compare", "other", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The manifest before a filter or fusion: totals side by side, faces removed, images that lost "
              "all their faces.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report in the folder.")
@_quiet_option
def report(source: Path, output: Path, roots: tuple[str, ...], grid: int, survival_px: float, seed: int,
           batch_size: int, other: Path | None, overwrite: bool, quiet: bool) -> None:
    """Self-contained HTML report (index.html, plots and images inlined) plus stats.json for a manifest
    (.parquet) or a shard directory (the --images, --grid and --survival-px options are for manifests)."""
    from facedata.build import parse_roots
    from facedata.manifest import Manifest
    from facedata.report import write_report

    if source.is_dir():
        if other is not None:
            raise click.UsageError("--compare works on manifests, not shard directories")
        index = write_report(source, output, overwrite=overwrite, seed=seed, batch_size=batch_size,
                             progress=not quiet)
    else:
        index = write_report(source, output, overwrite=overwrite, compare=other, grid=grid, seed=seed,
                             survival_px=survival_px,
                             roots=parse_roots(roots, Manifest.root_names(source)) if roots else None)
    _note(quiet, f"wrote {index} and {index.with_name('stats.json')}")
