"""The built-in demo corpus (real annotation formats, synthetic pixels) and the end-to-end demo run.

`build_demo_corpus` writes a small WIDER-style detection set and a CUHK-style 5-point landmark set,
both in the exact on-disk formats of the real releases, so the demo exercises the real parsers. Faces
are drawn with OpenCV (skin ellipse, eyes, nose, mouth) at the annotated box, and the 5 landmarks are
the drawn feature centres, so crops and landmark targets agree. Everything is a function of
(seed, image id) through facedata.samples.image_rng: the same seed writes the same bytes.

`run_demo` runs DEMO_STEPS in order over a shared DemoContext; later stages append their own step
(see DemoStep).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from facedata import console
from facedata.errors import FacedataError
from facedata.filters import MinSize, apply_filters
from facedata.manifest import Manifest
from facedata.paths import atomic_write
from facedata.samples import image_rng
from facedata.stats import compute_stats, render_json, render_markdown

WIDER_EVENTS = ("0--Parade", "12--Group", "20--Family_Group")
MIN_SIZE = 10  # the demo's filter step (the Ultra-Light-Fast recipe)
_SHIFT = 4  # OpenCV drawing with 4 fractional bits, so features sit at sub-pixel positions
_STREAM_LAYOUT, _STREAM_PIXELS = 0, 1


@dataclass(frozen=True)
class DemoFace:
    box: tuple[int, int, int, int]  # x y w h (WIDER convention)
    attributes: tuple[int, int, int, int, int, int]  # blur expression illumination invalid occlusion pose
    points: np.ndarray  # (5, 2) left eye, right eye, nose, left/right mouth corner (image left/right)


@dataclass
class DemoCorpus:
    """Where the demo corpus is and what it holds (the numbers the parsers must reproduce)."""

    root: Path
    wider_annotations: Path
    wider_images: Path
    cuhk_annotations: Path
    cuhk_images: Path
    wider_images_count: int = 0
    wider_faces: int = 0  # real faces, placeholders excluded
    wider_zero_face_images: int = 0
    wider_small_faces: int = 0  # width or height < MIN_SIZE
    wider_invalid_faces: int = 0
    cuhk_images_count: int = 0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # rel path -> (w, h)


# ------------------------------------------------------------------------------------------ drawing


def _p(x: float, y: float) -> tuple[int, int]:
    return int(round(x * (1 << _SHIFT))), int(round(y * (1 << _SHIFT)))


def _ax(a: float, b: float) -> tuple[int, int]:
    return max(1, int(round(a * (1 << _SHIFT)))), max(1, int(round(b * (1 << _SHIFT))))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Gradient + non-skin clutter (rectangles, lines, polygons) + mild noise; no face-like blobs."""
    top = rng.integers(40, 220, 3).astype(np.float32)
    bottom = rng.integers(40, 220, 3).astype(np.float32)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).copy()
    img = img.astype(np.uint8)
    for _ in range(int(rng.integers(6, 16))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        x1, x2 = sorted(int(v) for v in rng.integers(0, width, 2))
        y1, y2 = sorted(int(v) for v in rng.integers(0, height, 2))
        if kind == 0:
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
        elif kind == 1:
            cv2.line(img, (x1, y1), (x2, y2), colour, int(rng.integers(1, 6)), cv2.LINE_AA)
        else:
            pts = np.stack([rng.integers(0, width, 3), rng.integers(0, height, 3)], axis=1).astype(np.int32)
            cv2.fillPoly(img, [pts], colour)
    noise = rng.normal(0.0, 6.0, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def draw_face(
    img: np.ndarray, box: tuple[float, float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """Draw a face filling box (x, y, w, h); returns its 5 points (mtcnn5 order, image-left eye first)."""
    x, y, w, h = box
    red = rng.uniform(150, 245)
    green = red * rng.uniform(0.68, 0.85)
    skin = (int(green * rng.uniform(0.65, 0.85)), int(green), int(red))  # BGR with R > G > B
    hair = tuple(int(c) for c in rng.integers(10, 70, 3))
    cx, cy = x + w / 2, y + h / 2
    cv2.ellipse(
        img, _p(cx, cy - 0.08 * h), _ax(0.5 * w, 0.44 * h), 0, 180, 360, hair, -1, cv2.LINE_AA, _SHIFT
    )
    cv2.ellipse(img, _p(cx, cy + 0.04 * h), _ax(0.46 * w, 0.46 * h), 0, 0, 360, skin, -1, cv2.LINE_AA, _SHIFT)
    jx, jy = rng.uniform(-0.03, 0.03, 2)
    eye_y = y + (0.42 + jy) * h
    points = np.array(
        [
            [x + (0.32 + jx) * w, eye_y],
            [x + (0.68 + jx) * w, eye_y + rng.uniform(-0.02, 0.02) * h],
            [x + (0.5 + jx + rng.uniform(-0.04, 0.04)) * w, y + (0.6 + jy) * h],
            [x + (0.36 + jx) * w, y + (0.78 + jy) * h],
            [x + (0.64 + jx) * w, y + (0.78 + jy) * h],
        ],
        dtype=np.float32,
    )
    for ex, ey in points[:2]:
        cv2.ellipse(
            img, _p(ex, ey), _ax(0.09 * w, 0.05 * h), 0, 0, 360, (245, 245, 245), -1, cv2.LINE_AA, _SHIFT
        )
        cv2.circle(
            img,
            _p(ex, ey),
            max(1, int(round(0.04 * w * (1 << _SHIFT)))),
            (40, 30, 20),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
    nx, ny = points[2]
    shade = tuple(int(c * 0.7) for c in skin)
    thick = max(1, int(round(w / 30)))
    cv2.line(img, _p(nx, y + 0.47 * h), _p(nx, ny), shade, thick, cv2.LINE_AA, _SHIFT)
    cv2.circle(img, _p(nx, ny), max(1, int(round(0.035 * w * (1 << _SHIFT)))), shade, -1, cv2.LINE_AA, _SHIFT)
    (lx, ly), (rx, ry) = points[3], points[4]
    mouth = (60, 50, 150)
    cv2.ellipse(
        img,
        _p((lx + rx) / 2, (ly + ry) / 2),
        _ax((rx - lx) / 2, 0.05 * h),
        0,
        0,
        180,
        mouth,
        thick + 1,
        cv2.LINE_AA,
        _SHIFT,
    )
    return points


def _apply_attributes(img: np.ndarray, box: tuple[int, int, int, int], attrs: tuple[int, ...], rng) -> None:
    """Make the pixels agree with the labels: blur, extreme illumination, occluders."""
    x, y, w, h = box
    blur, _, illumination, _, occlusion, _ = attrs
    roi = img[y : y + h, x : x + w]
    if blur:
        k = 2 * max(1, int(round(w * (0.04 if blur == 1 else 0.1)))) + 1
        roi[:] = cv2.GaussianBlur(roi, (k, k), 0)
    if illumination:
        roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    if occlusion:
        share = 0.3 if occlusion == 1 else 0.6
        colour = tuple(int(c) for c in rng.integers(0, 120, 3))
        cv2.rectangle(img, (x, y + int(h * (1 - share))), (x + w, y + h), colour, -1)


def _place(
    rng: np.random.Generator,
    width: int,
    height: int,
    sizes: list[int],
    taken: list[tuple[int, int, int, int]],
) -> list[tuple[int, int, int, int]]:
    """Non-overlapping boxes for the requested widths (bounded tries; a face that does not fit is skipped)."""
    out: list[tuple[int, int, int, int]] = []
    for size in sizes:
        w = size
        h = int(round(size * rng.uniform(1.1, 1.3)))
        if w >= width - 2 or h >= height - 2:
            continue
        for _ in range(60):
            x = int(rng.integers(1, width - w - 1))
            y = int(rng.integers(1, height - h - 1))
            if all(
                x + w + 2 <= bx or bx + bw + 2 <= x or y + h + 2 <= by or by + bh + 2 <= y
                for bx, by, bw, bh in taken + out
            ):
                out.append((x, y, w, h))
                break
    return out


# ------------------------------------------------------------------------------------------- corpus


def _wider_image(seed: int, index: int) -> tuple[str, str, int, int, list[int], str]:
    """(event, file name, width, height, face widths, special) for WIDER demo image `index`."""
    event = WIDER_EVENTS[index % len(WIDER_EVENTS)]
    number, name = event.split("--")
    filename = f"{number}_{name}_demo_{index}.jpg"
    rng = image_rng(seed, f"wider/{event}/{filename}", _STREAM_LAYOUT)
    width = int(rng.integers(320, 641))
    height = int(round(width * rng.uniform(0.6, 0.9)))
    special = {0: "zero_face_0", 1: "zero_face_1", 2: "tiny", 3: "invalid"}.get(index, "")
    if special.startswith("zero"):
        return event, filename, width, height, [], special
    n = int(rng.integers(1, 7))
    top = max(24, min(width, height) // 3)
    sizes = sorted(
        (int(round(math.exp(rng.uniform(math.log(16), math.log(top))))) for _ in range(n)), reverse=True
    )
    return event, filename, width, height, sizes, special


def build_demo_corpus(
    out_dir: str | Path, seed: int = 0, wider_images: int = 24, cuhk_images: int = 16, progress: bool = False
) -> DemoCorpus:
    """Write the demo corpus under out_dir; deterministic in (seed, counts).

    Layout: wider/wider_face_split/wider_face_train_bbx_gt.txt, wider/WIDER_train/images/<event>/*.jpg,
    cuhk/trainImageList.txt, cuhk/{lfw_5590,net_7876}/*.jpg. WIDER image 0 has no faces, written as
    `0` + a placeholder line, image 1 as `1` + an all-zero line (both forms occur in the real files);
    image 2 holds a face under 10 px, image 3 an invalid-flagged face.
    """
    if wider_images < 4 or cuhk_images < 2:
        raise FacedataError("the demo corpus needs at least 4 WIDER and 2 CUHK images")
    root = Path(out_dir)
    corpus = DemoCorpus(
        root=root,
        wider_annotations=root / "wider" / "wider_face_split" / "wider_face_train_bbx_gt.txt",
        wider_images=root / "wider" / "WIDER_train" / "images",
        cuhk_annotations=root / "cuhk" / "trainImageList.txt",
        cuhk_images=root / "cuhk",
    )
    corpus.wider_annotations.parent.mkdir(parents=True, exist_ok=True)
    bar = console.progress(wider_images + cuhk_images, "demo corpus", "img", enabled=progress)
    lines: list[str] = []
    for index in range(wider_images):
        event, filename, width, height, sizes, special = _wider_image(seed, index)
        rel = f"{event}/{filename}"
        rng = image_rng(seed, f"wider/{rel}", _STREAM_PIXELS)
        img = _background(rng, width, height)
        faces = _wider_faces(rng, img, sizes, special)
        _write_image(corpus.wider_images / rel, img)
        corpus.sizes[rel] = (width, height)
        lines.append(rel)
        if special == "zero_face_0":
            lines += ["0", "0 0 0 0 0 0 0 0 0 0 "]
        elif special == "zero_face_1":
            lines += ["1", "0 0 0 0 0 0 0 0 0 0 "]
        else:
            lines.append(str(len(faces)))
            lines += [" ".join(str(v) for v in (*f.box, *f.attributes)) + " " for f in faces]
        corpus.wider_images_count += 1
        corpus.wider_faces += len(faces)
        corpus.wider_zero_face_images += not faces
        corpus.wider_small_faces += sum(min(f.box[2], f.box[3]) < MIN_SIZE for f in faces)
        corpus.wider_invalid_faces += sum(f.attributes[3] for f in faces)
        bar.update()
    _write_text(corpus.wider_annotations, "\n".join(lines) + "\n", newline="\n")

    cuhk_lines: list[str] = []
    for index in range(cuhk_images):
        lfw = index % 2 == 0
        rel = f"lfw_5590/Demo_Person_{index:04d}.jpg" if lfw else f"net_7876/{index}_0_0.jpg"
        rng = image_rng(seed, f"cuhk/{rel}", _STREAM_PIXELS)
        side = 250 if lfw else int(rng.integers(200, 401))
        img = _background(rng, side, side)
        w = int(round(side * rng.uniform(0.38, 0.55)))
        h = int(round(w * rng.uniform(1.0, 1.15)))
        x = int(round((side - w) / 2 + rng.uniform(-0.08, 0.08) * side))
        y = int(round((side - h) / 2 + rng.uniform(-0.08, 0.08) * side))
        points = draw_face(img, (x, y, w, h), rng)
        _write_image(corpus.cuhk_images / rel, img)
        corpus.sizes[rel] = (side, side)
        # CUHK columns: path (backslash) x1 x2 y1 y2 then (x, y) of the 5 points, %.6f.
        coords = " ".join(f"{v:.6f}" for v in points.reshape(-1))
        cuhk_lines.append(f"{rel.replace('/', chr(92))} {x} {x + w} {y} {y + h} {coords}")
        corpus.cuhk_images_count += 1
        bar.update()
    bar.close()
    _write_text(corpus.cuhk_annotations, "\r\n".join(cuhk_lines) + "\r\n", newline="")
    return corpus


def _wider_faces(rng: np.random.Generator, img: np.ndarray, sizes: list[int], special: str) -> list[DemoFace]:
    height, width = img.shape[:2]
    taken: list[tuple[int, int, int, int]] = []
    faces: list[DemoFace] = []
    if special == "tiny":
        taken = _place(rng, width, height, [7], [])
    boxes = taken + _place(rng, width, height, sizes, taken)
    for i, box in enumerate(boxes):
        small = box[2] < 20
        blur = int(rng.choice(3, p=[0.3, 0.4, 0.3] if small else [0.7, 0.2, 0.1]))
        occlusion = int(rng.choice(3, p=[0.75, 0.15, 0.1]))
        illumination = int(rng.random() < 0.1)
        expression = int(rng.random() < 0.1)
        pose = int(rng.random() < 0.1)
        invalid = int(special == "invalid" and i == len(boxes) - 1)
        attrs = (blur, expression, illumination, invalid, occlusion, pose)
        points = draw_face(img, box, rng)
        _apply_attributes(img, box, attrs, rng)
        faces.append(DemoFace(box, attrs, points))
    return faces


def _write_image(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise FacedataError(f"could not encode demo image {path}")
    with atomic_write(path) as fh:
        fh.write(data.tobytes())


def _write_text(path: Path, text: str, newline: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as fh:
        fh.reconfigure(newline=newline)
        fh.write(text)


# ------------------------------------------------------------------------------------------ the run


@dataclass
class DemoContext:
    """State shared by demo steps. Steps read and add entries; keys used so far:

    manifests: "wider" (ingested WIDER train), "detections" (WIDER after --min-size 10),
    "landmarks" (CUHK 5-point). outputs: "stats_markdown", "stats_json".
    """

    out_dir: Path
    seed: int = 0
    quiet: bool = False
    corpus: DemoCorpus | None = None
    manifests: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)  # step name -> its one-line summary

    def echo(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)


class DemoStep(NamedTuple):
    """A named stage of the demo: `run(ctx)` does the work and returns a one-line summary."""

    name: str
    run: Callable[[DemoContext], str]


def _step_corpus(ctx: DemoContext) -> str:
    ctx.corpus = build_demo_corpus(ctx.out_dir / "corpus", ctx.seed, progress=not ctx.quiet)
    c = ctx.corpus
    return (
        f"{console.number(c.wider_images_count)} WIDER images ({console.number(c.wider_faces)} faces), "
        f"{console.number(c.cuhk_images_count)} CUHK images"
        f" in {c.root}"
    )


def _ingest(ctx: DemoContext, key: str, source: Path, images: Path, name: str) -> tuple[Manifest, str]:
    from facedata.parsers import ingest

    manifest, rejects = ingest(source, images=images)
    out = ctx.out_dir / "manifests" / f"{name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.write(out)
    ctx.manifests[key] = out
    if len(rejects):
        rejects.write_csv(out.with_suffix(".rejects.csv"))
    fmt = manifest.provenance.get("source_format", "?")
    counts = f"{console.number(len(manifest.images))} images, {console.number(len(manifest.faces))} faces"
    return manifest, f"{fmt}: {counts}, {rejects.summary()}"


def _step_ingest_wider(ctx: DemoContext) -> str:
    assert ctx.corpus is not None
    return _ingest(ctx, "wider", ctx.corpus.wider_annotations, ctx.corpus.wider_images, "wider_train")[1]


def _step_ingest_cuhk(ctx: DemoContext) -> str:
    assert ctx.corpus is not None
    return _ingest(ctx, "landmarks", ctx.corpus.cuhk_annotations, ctx.corpus.cuhk_images, "cuhk_train")[1]


def _step_filter(ctx: DemoContext) -> str:
    filtered, report = apply_filters(Manifest.read(ctx.manifests["wider"]), [MinSize(MIN_SIZE)])
    out = ctx.out_dir / "manifests" / f"wider_train.min{MIN_SIZE}.parquet"
    filtered.write(out)
    ctx.manifests["detections"] = out
    step = report.steps[0]
    return (
        f"{step.rule}: removed {console.number(step.faces_removed)} faces -> {console.number(step.faces_left)} faces,"
        f" {console.number(step.images_left)} images"
    )


def _step_stats(ctx: DemoContext) -> str:
    parts, data = [], {}
    for key, title in (("detections", "WIDER-style detections"), ("landmarks", "CUHK-style landmarks")):
        stats = compute_stats(Manifest.read(ctx.manifests[key]))
        data[key] = stats
        parts.append(render_markdown(stats, title=f"{title} ({ctx.manifests[key].name})"))
    md, js = ctx.out_dir / "stats.md", ctx.out_dir / "stats.json"
    with atomic_write(md, "w") as fh:
        fh.write("\n".join(parts))
    with atomic_write(js, "w") as fh:
        fh.write(render_json(data) + "\n")
    ctx.outputs["stats_markdown"], ctx.outputs["stats_json"] = md, js
    rows = data["detections"]["survival"]["rows"]
    shares = ", ".join(
        f"{r['input']} {100 * (r['share_under'] or 0):.1f}%" for r in rows if r["input"] != "native"
    )
    return f"faces under {MIN_SIZE} px after resize: {shares}; tables in {md}"


def _step_build_pnet(ctx: DemoContext) -> str:
    # The unfiltered manifest: faces under the sampler's ignore_under become ignore regions, not negatives.
    from facedata.build import build_dataset

    out = ctx.out_dir / "pnet"
    summary = build_dataset(
        Manifest.read(ctx.manifests["wider"]),
        Manifest.read(ctx.manifests["landmarks"]),
        out,
        stage="pnet",
        seed=ctx.seed,
        progress=not ctx.quiet,
        overwrite=True,  # demo_out is the demo's own scratch directory: a rerun with another seed replaces it
    )
    ctx.outputs["pnet"] = out
    counts = console.labels_text(summary["label_counts"])
    shards = console.number(summary["shards"])
    return f"{console.number(summary['samples'])} samples ({counts}) in {shards} shard(s) at {out}"


def _step_verify(ctx: DemoContext) -> str:
    from facedata.oracle import verify_build_labels
    from facedata.storage import verify_dataset

    out = ctx.outputs["pnet"]
    problems = verify_dataset(out)
    if problems:
        raise FacedataError(f"demo shards failed verification: {problems[0]}")
    report, _ = verify_build_labels(
        out, Manifest.read(ctx.manifests["wider"]), Manifest.read(ctx.manifests["landmarks"])
    )
    if not report.ok:
        raise FacedataError(f"demo labels failed verification: {report.summary()}")
    return f"checksums ok; labels: {report.summary()}"


DEMO_STEPS: list[DemoStep] = [
    DemoStep("build demo corpus", _step_corpus),
    DemoStep("ingest WIDER-style detections", _step_ingest_wider),
    DemoStep("ingest CUHK-style landmarks", _step_ingest_cuhk),
    DemoStep(f"filter --min-size {MIN_SIZE}", _step_filter),
    DemoStep("stats", _step_stats),
    DemoStep("build pnet shards", _step_build_pnet),
    DemoStep("verify shards and labels", _step_verify),
]


def run_demo(
    out_dir: str | Path, seed: int = 0, quiet: bool = False, steps: list[DemoStep] | None = None
) -> DemoContext:
    """Run the demo steps (default DEMO_STEPS) in order into out_dir, printing one line per step."""
    ctx = DemoContext(out_dir=Path(out_dir), seed=seed, quiet=quiet)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    steps = DEMO_STEPS if steps is None else steps
    for i, step in enumerate(steps, 1):
        start = time.perf_counter()
        summary = step.run(ctx)
        ctx.results[step.name] = summary
        ctx.echo(f"[{i}/{len(steps)}] {step.name} ({time.perf_counter() - start:.1f}s): {summary}")
    summary_path = ctx.out_dir / "demo_summary.json"
    with atomic_write(summary_path, "w") as fh:
        fh.write(json.dumps({"seed": seed, "steps": ctx.results}, indent=2) + "\n")
    ctx.outputs["summary"] = summary_path
    ctx.echo(f"demo done: outputs in {ctx.out_dir}")
    return ctx
