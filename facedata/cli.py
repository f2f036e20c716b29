"""The `facedata` command: parses options and calls the library; no logic lives here."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from facedata import __version__
from facedata.buildoptions import Number, check_iou_order, check_values
from facedata.errors import FacedataError


class _Group(click.Group):
    """Prints library errors and bad option values of a command as one clear line (exit 2), not a traceback
    or a usage screen."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except FacedataError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__)
def main() -> None:
    """Face detection and landmark corpora to sharded, checksummed training data."""


# --- issue 2: formats, ingest, filter, stats, demo -------------------------------------------------

_quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Only errors and requested output (for scripts)."
)


def _note(quiet: bool, message: str) -> None:
    """Progress and notices go to stderr so stdout stays clean for results (e.g. stats --json)."""
    if not quiet:
        click.echo(message, err=True)


@main.command()
def formats() -> None:
    """List the annotation formats `ingest` understands."""
    from facedata.parsers import FORMATS

    items = list(FORMATS)
    width = max((len(name) for name, _ in items), default=0)
    for name, fmt in items:
        click.echo(f"{name:<{width}}  {fmt.description}")


@main.command()
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "format_name", metavar="NAME",
              help="Annotation format (default: sniffed; see `formats`).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="Image root: check and probe images.")
@click.option("--split", help="Split name (default: from the file name, e.g. train/val/test).")
@click.option("--strict", is_flag=True, help="Stop at the first bad item instead of skipping it.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Rejects report (CSV; default OUT.rejects.csv, written only when items were skipped).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest to write (.parquet).")
@_quiet_option
def ingest(
    source: Path, format_name: str | None, images: Path | None, split: str | None, strict: bool,
    rejects_path: Path | None, output: Path, quiet: bool,
) -> None:
    """Parse an annotation file into a manifest."""
    from facedata.parsers import ingest as ingest_file

    if images is None:
        _note(quiet, "notice: no --images given: image files are not checked and image sizes stay unknown")
    manifest, rejects = ingest_file(source, format=format_name, images=images, strict=strict, split=split)
    output.parent.mkdir(parents=True, exist_ok=True)
    manifest.write(output)
    fmt = manifest.provenance.get("source_format", format_name)
    how = "" if format_name else " (sniffed)"
    counts = f"{len(manifest.images)} images, {len(manifest.faces)} faces"
    _note(quiet, f"format {fmt}{how}: wrote {counts} to {output}")
    if len(rejects) or not quiet:
        click.echo(rejects.summary(), err=True)
    if len(rejects):
        target = rejects_path or output.with_name(output.name + ".rejects.csv")
        rejects.write_csv(target)
        click.echo(f"rejects report: {target}", err=True)


@main.command(name="filter")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--min-size", type=float, metavar="N", help="Drop faces whose width or height is < N px.")
@click.option("--drop-invalid", is_flag=True, help="Drop faces flagged invalid or degenerate.")
@click.option("--where", multiple=True, metavar="QUERY",
              help="Keep rows matching a pandas query, e.g. \"blur < 2 and occlusion == 0\" (repeatable).")
@click.option("--drop-empty-images", is_flag=True, help="Drop images left without faces (the negatives).")
@_quiet_option
def filter_command(
    source: Path, output: Path, min_size: float | None, drop_invalid: bool, where: tuple[str, ...],
    drop_empty_images: bool, quiet: bool,
) -> None:
    """Filter a manifest; rules run as min-size, drop-invalid, where..., drop-empty-images."""
    from facedata.filters import apply_filters, rules_from_options
    from facedata.manifest import Manifest

    rules = rules_from_options(min_size, drop_invalid, where, drop_empty_images)
    if not rules:
        raise FacedataError("no filter rule given (--min-size, --drop-invalid, --where, --drop-empty-images)")
    result, report = apply_filters(Manifest.read(source), rules)
    output.parent.mkdir(parents=True, exist_ok=True)
    result.write(output)
    for line in report.lines():
        _note(quiet, line)
    _note(quiet, f"wrote {output}")


@main.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--markdown", is_flag=True, help="Markdown tables.")
@click.option("--inputs", default="320x240,480x360,640x480", show_default=True,
              help="Detector input sizes for the survival table.")
@click.option("--min-face", default=10.0, show_default=True, help="Survival threshold (px, shorter side).")
@click.option("--resize", type=click.Choice(["fit", "stretch"]), default="fit", show_default=True,
              help="fit: keep aspect, scale = min(tw/W, th/H); stretch: scale x and y separately.")
def stats(source: Path, as_json: bool, markdown: bool, inputs: str, min_face: float, resize: str) -> None:
    """Corpus statistics: counts, sizes, attributes, landmarks, input-resolution survival."""
    from facedata.manifest import Manifest
    from facedata.stats import compute_stats, parse_inputs, render_json, render_markdown, render_text

    if as_json and markdown:
        raise FacedataError("--json and --markdown are exclusive")
    result = compute_stats(Manifest.read(source), parse_inputs(inputs), min_face, resize)
    if as_json:
        click.echo(render_json(result))
    elif markdown:
        click.echo(render_markdown(result, title=source.name), nl=False)
    else:
        click.echo(render_text(result, title=str(source)), nl=False)


@main.command()
@click.option("-o", "--output", default="demo_out", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic corpus.")
@_quiet_option
def demo(output: Path, seed: int, quiet: bool) -> None:
    """Build the built-in demo corpus and run the pipeline on it end to end."""
    from facedata.demo import run_demo

    run_demo(output, seed=seed, quiet=quiet)


def cascade_options(func):
    """Model contract and cascade options shared by `detect` and the hard-example builds."""
    options = [
        click.option("--min-face", default=20.0, show_default=True,
                     help="Smallest face (px) the pyramid looks for."),
        click.option("--factor", default=0.79, show_default=True, help="Pyramid scale step (paper: 0.709)."),
        click.option("--thresholds", default="0.6,0.7,0.7", show_default=True,
                     help="PNet,RNet,ONet score thresholds (reference mining: 0.3,0.1,0.7)."),
        click.option("--mean", default=127.5, show_default=True,
                     help="Pixel normalisation: (x - mean) * scale."),
        click.option("--scale", default=0.0078125, show_default=True,
                     help="Pixel normalisation scale (1/128)."),
        click.option("--channels", type=click.Choice(["bgr", "rgb"]), default="bgr", show_default=True,
                     help="Channel order the models were trained on."),
        click.option("--logits", is_flag=True, help="Models output logits: apply the softmax here."),
        click.option("--threads", default=1, show_default=True, help="onnxruntime threads per process."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_cascade(pnet, rnet, onet, min_face, factor, thresholds, mean, scale, channels, logits, threads):
    """A Cascade from `cascade_options` values."""
    from facedata.detect import Cascade, CascadeConfig, ModelContract
    from facedata.detect.draw import parse_thresholds

    config = CascadeConfig(min_face=min_face, factor=factor, thresholds=parse_thresholds(thresholds))
    contract = ModelContract(mean=mean, scale=scale, channels=channels, logits=logits)
    return Cascade(pnet, rnet, onet, config=config, contract=contract, threads=threads)


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pnet", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PNet ONNX model (dynamic height/width).")
@click.option("--rnet", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="RNet ONNX model.")
@click.option("--onet", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="ONet ONNX model.")
@cascade_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the image with boxes (and landmarks) drawn on it.")
def detect(
    image: Path, pnet: Path, rnet: Path | None, onet: Path | None, output: Path | None, **options
) -> None:
    """Run the cascade on one image and draw what it finds (check a model before a long run)."""
    from facedata.detect.draw import detect_file

    dets = detect_file(image, output, make_cascade(pnet, rnet, onet, **options))
    stages = "/".join(str(n) for n in dets.proposals)
    click.echo(f"{len(dets)} face(s) in {image.name} (boxes after each stage: {stages})")
    for box, score in zip(dets.boxes, dets.scores, strict=True):
        click.echo(f"  {score:.3f}  " + " ".join(f"{v:.1f}" for v in box))
    if output is not None:
        click.echo(f"wrote {output}")


# --- issue 3: shard store (verify, inspect) ----------------------------------------------------------


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--labels", is_flag=True,
              help="Also re-derive every sample's label and targets from the manifests "
              "(recipes from the index).")
@click.option("--detections", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Detection manifest the dataset was built from (for --labels).")
@click.option("--landmarks", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Landmark manifest the dataset was built from (for --labels).")
@click.option("--max-listed", default=20, show_default=True, help="Mismatches listed (all are counted).")
def verify(
    directory: Path, labels: bool, detections: Path | None, landmarks: Path | None, max_listed: int
) -> None:
    """Re-hash every shard of DIRECTORY and check its sample and label counts against index.json."""
    from facedata.storage import verify_dataset

    problems = verify_dataset(directory)
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    click.echo(f"{directory}: all shards verified")
    if labels or detections or landmarks:
        from facedata.build import verify_build_labels
        from facedata.manifest import Manifest

        if detections is None:
            raise FacedataError("--labels needs --detections (and --landmarks if the build used one)")
        report, notes = verify_build_labels(
            directory, Manifest.read(detections), Manifest.read(landmarks) if landmarks else None, max_listed
        )
        for note in notes:
            click.echo(f"warning: {note}", err=True)
        click.echo(report.summary())
        if not report.ok:
            sys.exit(1)
        click.echo(f"{directory}: all labels re-derived, 0 mismatches")


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print index.json itself.")
def inspect(directory: Path, as_json: bool) -> None:
    """Print the summary of a shard directory's index (layout, counts per label, shards, provenance)."""
    import json

    from facedata.storage.index import describe, load_index

    index = load_index(directory)
    click.echo(json.dumps(index, indent=1) if as_json else describe(index))


# --- issue 3/4: build pnet|rnet|onet, preview ---------------------------------------------------------


def _build_options(func):
    """Inputs, output, parallelism, mixing and landmark options shared by the three builds."""
    options = [
        click.option("--detections", required=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Detection manifest (e.g. WIDER train)."),
        click.option("--landmarks", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="5-point landmark manifest (e.g. CUHK LFW/net_7876)."),
        click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Shard directory: an interrupted build there resumes; a complete one is never modified "
                     "(same inputs and options: 'already complete'; others: an error unless --overwrite)."),
        click.option("--format", "backend", type=click.Choice(["lmdb", "parquet"]), default="lmdb",
                     show_default=True),
        click.option("--workers", type=Number(1, 1024, integer=True), help="Worker processes (default: all cores)."),
        click.option("--seed", default=0, show_default=True, type=Number(0, 2**32 - 1, integer=True),
                     help="Every random choice comes from (seed, image id)."),
        click.option("--shard-size", default="256MB", show_default=True,
                     help="Shard roll-over size (whole blocks of 1,024 samples, at least one block)."),
        click.option("--images", "roots", multiple=True, metavar="[NAME=]DIR",
                     help="Image root override (repeatable; NAME is the manifest's root name)."),
        click.option("--ratio", default="3:1:1:2", show_default=True,
                     help="neg:pos:part:landmark mix, or 'all' to keep every planned sample."),
        click.option("--allow-repeat", is_flag=True,
                     help="Repeat samples of short classes (counted in the index)."),
        click.option("--interpolation", type=click.Choice(["linear", "area"]), default="linear",
                     show_default=True),
        click.option("--landmark-shifts", default=10, show_default=True, type=Number(0, 1000, integer=True),
                     help="Shifted crops per landmark face."),
        click.option("--landmark-min-face", default=20.0, show_default=True, type=Number(0),
                     help="Landmark faces whose larger side is below this are not sampled."),
        click.option("--max-rotation", default=5.0, show_default=True, type=Number(0, 180),
                     help="Landmark rotation range (degrees)."),
        click.option("--no-mirror", is_flag=True, help="No random mirroring of landmark samples."),
        click.option("--neg-iou", default=0.3, show_default=True, type=Number(0, 1),
                     help="Negative: max IoU below this."),
        click.option("--part-iou", default=0.4, show_default=True, type=Number(0, 1), help="Part: IoU at least this."),
        click.option("--pos-iou", default=0.65, show_default=True, type=Number(0, 1),
                     help="Positive: IoU at least this."),
        click.option("--strict", is_flag=True,
                     help="Stop at the first unreadable image instead of skipping it."),
        click.option("--overwrite", is_flag=True,
                     help="Replace a complete dataset of other inputs or options in -o; it stays readable until "
                     "the new one is complete (built beside it, then swapped in)."),
        click.option("--verify", is_flag=True,
                     help="When -o already holds this build, re-hash its shards (default: check their sizes)."),
        _quiet_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_build(stage: str, detections: Path, landmarks: Path | None, output: Path, backend: str,
               workers: int | None, seed: int, shard_size: str, roots: tuple[str, ...], ratio: str,
               allow_repeat: bool, interpolation: str, landmark_shifts: int, landmark_min_face: float,
               max_rotation: float, no_mirror: bool, quiet: bool, strict: bool, overwrite: bool, verify: bool,
               crop_recipe, **extra) -> None:
    import os
    from dataclasses import replace

    from facedata.workerpool import pool_context

    if (workers or os.cpu_count() or 1) > 1:
        pool_context()  # the worker server starts importing while this process imports the build
    from facedata.build import build_dataset, format_summary, parse_ratio, parse_roots, parse_size
    from facedata.manifest import Manifest
    from facedata.paths import sha256_file
    from facedata.samplers import LandmarkRecipe

    root_names = Manifest.root_names(detections) + (Manifest.root_names(landmarks) if landmarks else [])
    size = crop_recipe.size
    landmark_recipe = LandmarkRecipe(
        size=size, shifts_per_face=landmark_shifts, mirror=not no_mirror, max_rotation=max_rotation,
        min_face=landmark_min_face, interpolation=interpolation,
    )
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
    click.echo(format_summary(summary))


@main.group()
def build() -> None:
    """Build sharded training data for a cascade stage (pnet, rnet, onet)."""


@build.command(name="pnet")
@_build_options
@click.option("--negatives-per-image", default=50, show_default=True, type=Number(0, 100_000, integer=True),
              help="Random negatives per image.")
@click.option("--near-negatives", default=5, show_default=True, type=Number(0, 10_000, integer=True),
              help="Near-face negative tries per face.")
@click.option("--positive-tries", default=20, show_default=True, type=Number(0, 10_000, integer=True),
              help="Positive/part tries per face.")
@click.option("--min-face", default=20.0, show_default=True, type=Number(0),
              help="Faces whose larger side is below this are not sampled (ignore regions); reference: 40.")
def build_pnet(negatives_per_image: int, near_negatives: int, positive_tries: int, min_face: float,
               neg_iou: float, part_iou: float, pos_iou: float, **options) -> None:
    """PNet (12 px): IoU crop sampler + landmark samples, mixed, in shards."""
    from facedata.samplers import CropRecipe

    check_iou_order(neg_iou, part_iou, pos_iou)
    recipe = CropRecipe(
        size=12, negatives_per_image=negatives_per_image, near_negatives_per_face=near_negatives,
        positive_tries_per_face=positive_tries, min_face=min_face, negative_iou=neg_iou, part_iou=part_iou,
        positive_iou=pos_iou,
    )
    _run_build("pnet", crop_recipe=recipe, **options)


def _mining_build(stage: str, pnet: Path, rnet: Path | None, gt_min_face: float, max_neg_per_image: int,
                  pad_border: bool, neg_iou: float, part_iou: float, pos_iou: float, min_face: float,
                  factor: float, thresholds: str, mean: float, scale: float, channels: str, logits: bool,
                  threads: int, **options) -> None:
    from facedata.build import CascadeFactory
    from facedata.detect import CascadeConfig, ModelContract
    from facedata.detect.draw import parse_thresholds
    from facedata.samplers import CropRecipe
    from facedata.samplers.mined import MiningRecipe
    from facedata.samples import STAGE_SIZE

    check_iou_order(neg_iou, part_iou, pos_iou)
    check_values(
        ("--gt-min-face", gt_min_face, Number(0)),
        ("--max-neg-per-image", max_neg_per_image, Number(0, 100_000, integer=True)),
        ("--min-face", min_face, Number(1)), ("--factor", factor, Number(0.01, 0.99)),
        ("--mean", mean, Number(-math.inf)), ("--scale", scale, Number(-math.inf)),
        ("--threads", threads, Number(1, 256, integer=True)),
        *(("--thresholds", value, Number(0, 1)) for value in parse_thresholds(thresholds)),
    )
    size = STAGE_SIZE[stage]
    mining = MiningRecipe(size=size, negative_iou=neg_iou, part_iou=part_iou, positive_iou=pos_iou,
                          max_negatives_per_image=max_neg_per_image, pad_border=pad_border, min_face=gt_min_face)
    factory = CascadeFactory(
        str(pnet), None if rnet is None else str(rnet),
        CascadeConfig(min_face=min_face, factor=factor, thresholds=parse_thresholds(thresholds)),
        ModelContract(mean=mean, scale=scale, channels=channels, logits=logits), threads=threads,
    )
    _run_build(stage, crop_recipe=CropRecipe(size=size, min_face=gt_min_face), detector=factory,
               mining_recipe=mining, **options)


def _mining_options(func):
    options = [
        click.option("--gt-min-face", default=20.0, show_default=True,
                     help="GT faces whose larger side is below this are ignore regions."),
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
@cascade_options
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
@cascade_options
def build_onet(**options) -> None:
    """ONet (48 px): hard examples mined with PNet + RNet + landmark samples, in shards."""
    _mining_build("onet", **options)


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Contact sheet to write (.png).")
@click.option("--per-label", default=16, show_default=True, help="Random samples shown per label.")
@click.option("--columns", default=8, show_default=True)
@click.option("--cell", default=96, show_default=True, help="Pixels per (upscaled) crop.")
@click.option("--seed", default=0, show_default=True)
def preview(directory: Path, output: Path, per_label: int, columns: int, cell: int, seed: int) -> None:
    """Contact sheet of random samples per label with box offsets and landmarks drawn back on the crops."""
    from facedata.preview import write_preview
    from facedata.samples import LABEL_NAMES

    shown = write_preview(directory, output, per_label=per_label, columns=columns, cell=cell, seed=seed)
    counts = ", ".join(f"{LABEL_NAMES[k]} {v}" for k, v in shown.items())
    click.echo(f"wrote {output} ({counts})")
