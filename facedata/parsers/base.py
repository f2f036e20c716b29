"""The format registry, shared parsing helpers and `ingest` (sniff -> parse -> image checks).

Parsers are strict about structure but never crash on one bad item: every problem is a
`Rejects.reject(file, line, field, reason)` call, which raises `InputError` under `strict` and is
recorded otherwise. Numbers are converted column-wise with numpy; only the line structure (which line
belongs to which image) is walked in Python.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.parsers import expat

import numpy as np
import pandas as pd

from facedata.errors import FacedataError, InputError, Rejects
from facedata.imageprobe import probe_size, too_large
from facedata.manifest import Manifest, ManifestBuilder, make_provenance
from facedata.paths import is_normal_rel_path, normalise_rel_path, resolve_under
from facedata.registry import Registry

HEAD_BYTES = 1 << 16
MISSING_IMAGE = "missing image"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_SPLIT_RE = re.compile(r"(train|val|test)")


@dataclass
class ParseOptions:
    rejects: Rejects  # facedata.errors.Rejects(strict=...)
    images: Path | None = None  # image root; None -> annotations only (no image checks)
    split: str | None = None  # override; else inferred from the file name (train/val/test) or "unknown"
    found_images: int = 0  # images found under the root so far (ImageChecker counts; 0 => wrong root?)
    format_options: dict[str, Any] = field(default_factory=dict)  # format-specific (Format.options), e.g. scheme


class Format(Protocol):
    """A file format. A folder corpus (LaPa split, folder of `.pts` files) also defines
    `sniff_folder(path) -> bool`; `parse` then receives the folder, and the image root defaults to it (unless the
    format sets `holds_images = False`: a folder of annotations only, like VOC's Annotations/).
    A format with options of its own (e.g. the COCO keypoint scheme) lists their names in `options`."""

    name: str
    description: str

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def parse(self, path: Path, options: ParseOptions) -> Manifest: ...


def reads_folders(fmt: Format) -> bool:
    return callable(getattr(fmt, "sniff_folder", None))


FORMATS: Registry[Format] = Registry("format")


def register(fmt: Format) -> Format:
    return FORMATS.register(fmt.name)(fmt)


# ---------------------------------------------------------------------------------------------
# helpers shared by the parsers


def infer_split(path: Path, override: str | None) -> str:
    """The override, else train/val/test from the file name (first match), else "unknown"."""
    if override:
        return override
    match = _SPLIT_RE.search(path.name.lower())
    return match.group(1) if match else "unknown"


def read_lines(path: Path, expected: str) -> list[str]:
    """Decoded, stripped lines (CRLF/LF, BOM and trailing spaces handled); an empty file is an error.

    `expected` describes the format's first line for the error message.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            path, line, "file", f"not UTF-8 text (byte {exc.start}); expected {expected}"
        ) from None
    lines = [line.strip() for line in text.splitlines()]
    if not any(lines):
        raise InputError(path, None, "file", f"empty file; expected {expected}")
    return lines


def first_line(head: bytes) -> str:
    """The first non-blank line of a file head, decoded leniently (for sniffing)."""
    for raw in head.splitlines():
        text = raw.decode("utf-8", "replace").strip().lstrip("\ufeff")
        if text:
            return text
    return ""


def head_lines(head: bytes, limit: int = 8) -> list[str]:
    """Up to `limit` complete non-blank lines of a file head (the last, maybe cut, line is dropped
    unless the head is the whole file)."""
    raw_lines = head.splitlines()
    if len(head) >= HEAD_BYTES:
        raw_lines = raw_lines[:-1]
    out = [r.decode("utf-8", "replace").strip().lstrip("\ufeff") for r in raw_lines]
    return [line for line in out if line][:limit]


# The largest magnitude a number read from an annotation may have. Far beyond any pixel coordinate (OpenCV holds at
# most 2^31 pixels in all), and small enough that x + w stays finite in the manifest's float32 columns: a larger value
# (1e39, a 40-digit typo) is garbage, rejected like NaN instead of becoming inf.
MAX_MAGNITUDE = 1e9


def parse_xml(parser: Any, path: Path) -> None:
    """Feed a whole file to an expat parser (pyexpat: no external entity is fetched, entity expansion is bounded);
    malformed XML or an unknown encoding in the XML declaration is an InputError at its line, field "xml"."""
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as exc:
        raise InputError(path, exc.lineno, "xml", f"malformed XML: {expat.ErrorString(exc.code)}") from None
    except LookupError as exc:  # <?xml encoding="..."?> names no codec Python knows
        raise InputError(path, 1, "xml", f"unreadable XML declaration: {exc}") from None


def is_number(token: str) -> bool:
    """A finite number of at most MAX_MAGNITUDE (nan/inf are not coordinates)."""
    try:
        return abs(float(token)) <= MAX_MAGNITUDE
    except ValueError:
        return False


def finite_values(values: np.ndarray) -> np.ndarray:
    """Element-wise: finite and at most MAX_MAGNITUDE (what `is_number` accepts)."""
    with np.errstate(invalid="ignore"):
        return np.abs(values) <= MAX_MAGNITUDE


def looks_like_image_path(text: str) -> bool:
    """One token ending with an image extension (a WIDER path line)."""
    return " " not in text and text.lower().endswith(IMAGE_EXTENSIONS)


def image_id_for(rel_path: str) -> str:
    """Stable image id: the POSIX relative path without its extension (same for txt and .mat)."""
    name_start = rel_path.rfind("/") + 1
    dot = rel_path.rfind(".")
    return rel_path[:dot] if dot > name_start else rel_path


def group_by_image(rels: Sequence[str | None]) -> tuple[list[int], np.ndarray, list[int]]:
    """For lines naming their image (None = rejected line): the rows kept, each kept row's image (first-seen
    order; a repeated path is one image with one face per line), and each image's first row."""
    image_index: dict[str, int] = {}
    face_rows = [row for row, rel in enumerate(rels) if rel is not None]
    owner = np.array(
        [image_index.setdefault(image_id_for(rels[row]), len(image_index)) for row in face_rows],  # type: ignore[arg-type]
        np.int64,
    )
    return face_rows, owner, [face_rows[k] for k in np.unique(owner, return_index=True)[1]]


def image_order(owner: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The kept faces image by image (the manifest's order), file order within an image."""
    return np.flatnonzero(keep)[np.argsort(owner[keep], kind="stable")]


def check_rel_path(raw: str, rejects: Rejects, path: Path, line: int | None) -> str | None:
    """Normalised relative path, or None after rejecting an absolute or `..` path."""
    text = raw.replace("\\", "/")
    if is_normal_rel_path(text):
        return text
    rel = normalise_rel_path(raw)
    if rel is None:
        rejects.reject(
            path,
            line,
            "path",
            f"expected a path relative to the image root without '..', got {raw.strip()!r}",
            kind="bad path",
        )
    return rel


def parse_table(
    path: Path,
    texts: Sequence[str],
    lines: Sequence[int],
    names: Sequence[str],
    rejects: Rejects,
    integer: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse whitespace-separated rows of exactly len(names) numbers: (values (n, k) float64, ok).

    Fast path: pandas' C reader over the joined rows. If anything is off (field count, non-numeric
    token, NaN) the rows are re-parsed one by one so each bad row is rejected by line and field.
    """
    n, k = len(texts), len(names)
    if n == 0:
        return np.empty((0, k)), np.ones(0, bool)
    joined = "\n".join(texts)
    try:
        frame = pd.read_csv(
            io.StringIO(joined), sep=" ", header=None, dtype=np.float64, engine="c", na_filter=False
        )
        values = frame.to_numpy()
        if values.shape == (n, k) and finite_values(values).all():
            if not integer or (values == np.round(values)).all():
                return values, np.ones(n, bool)
    except (ValueError, pd.errors.ParserError):
        pass
    rows: list[list[str]] = []
    row_lines: list[int] = []
    keep = np.zeros(n, bool)
    for i, text in enumerate(texts):
        tokens = text.split()
        if len(tokens) != k:
            rejects.reject(
                path,
                lines[i],
                "fields",
                f"expected {k} fields ({' '.join(names)}), got {len(tokens)}",
                kind="wrong field count",
            )
            continue
        rows.append(tokens)
        row_lines.append(lines[i])
        keep[i] = True
    good, ok = to_numbers(path, rows, row_lines, names, rejects, integer)
    values = np.full((n, k), np.nan)
    values[keep] = good
    keep[keep] = ok
    return values, keep


def to_numbers(
    path: Path,
    rows: Sequence[Sequence[str]],
    lines: Sequence[int],
    names: Sequence[str],
    rejects: Rejects,
    integer: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert rows of equal length (len(names)) to a float64 array, vectorised.

    Returns (values, ok): rows with a non-numeric field are rejected (naming the field) and have
    ok = False. With `integer`, values must also be whole numbers (WIDER's integer columns).
    """
    n, k = len(rows), len(names)
    flat = np.array(rows, dtype=object).reshape(n, k) if n else np.empty((0, k), dtype=object)
    ok = np.ones(n, bool)
    try:
        values = flat.astype(np.float64)
    except ValueError:
        values = np.full((n, k), np.nan)
        for i, row in enumerate(rows):
            for j, token in enumerate(row):
                try:
                    values[i, j] = float(token)
                except ValueError:
                    kind = "an integer" if integer else "a number"
                    rejects.reject(
                        path, lines[i], names[j], f"expected {kind}, got {token!r}", kind="bad number"
                    )
                    ok[i] = False
                    break
    bad = ok & ~finite_values(values).all(axis=1)
    if integer:
        bad |= ok & (values != np.round(values)).any(axis=1)
    for i in np.flatnonzero(bad):
        j = int(np.flatnonzero(~finite_values(values[i]) | (integer & (values[i] != np.round(values[i]))))[0])
        kind = "an integer" if integer else "a finite number"
        huge = f" (at most {MAX_MAGNITUDE:g} in magnitude)" if np.isfinite(values[i, j]) and not finite_values(
            values[i, j]) else ""
        rejects.reject(path, lines[i], names[j], f"expected {kind}, got {rows[i][j]!r}{huge}", kind="bad number")
        ok[i] = False
    return values, ok


def check_codes(
    path: Path,
    values: np.ndarray,
    lines: Sequence[int] | None,
    names: Sequence[str],
    codes: dict[str, dict[int, str]],
    ok: np.ndarray,
    rejects: Rejects,
    describe: Callable[[int], str] | None = None,
) -> None:
    """Reject rows whose attribute values are not documented codes (sets ok = False in place)."""
    for j, name in enumerate(names):
        allowed = np.array(sorted(codes[name]))
        for i in np.flatnonzero(ok & ~np.isin(values[:, j], allowed)):
            where = f" ({describe(int(i))})" if describe is not None else ""
            rejects.reject(
                path,
                None if lines is None else int(lines[i]),
                name,
                f"expected one of {allowed.tolist()}, got {values[i, j]:g}{where}",
                kind="unknown attribute code",
            )
            ok[i] = False


def replay(collected: Rejects, rejects: Rejects, notes: dict[int, str] | None = None) -> None:
    """Pass rejects collected in a local non-strict Rejects on in file-line order, so that `strict`
    stops at the first bad line of the file; notes[line] is appended to that line's reason."""
    for item in sorted(collected.items, key=lambda r: (r.line is None, r.line or 0)):
        note = (notes or {}).get(item.line, "") if item.line is not None else ""
        rejects.reject(item.file, item.line, item.field, item.reason + note, item.kind)


class ImageChecker:
    """Resolves annotation paths under the image root, rejects missing files and probes sizes.

    Without an image root every image passes with unknown size (annotations-only manifests).
    Found images are counted in `options.found_images`, so `ingest` can tell a wrong root from gaps.
    """

    def __init__(self, options: ParseOptions, source: Path) -> None:
        self.root = None if options.images is None else Path(options.images).resolve()
        self.options = options
        self.rejects = options.rejects
        self.source = source

    def check(self, rel_path: str, line: int | None) -> tuple[bool, int | None, int | None]:
        """(keep, width, height) for one image."""
        if self.root is None:
            return True, None, None
        joined = self.root / rel_path
        if not joined.is_file():  # checked before resolving: resolve() is slow and most misses are plain
            self.rejects.reject(
                self.source, line, "image", f"missing image file {joined}", kind=MISSING_IMAGE
            )
            return False, None, None
        self.options.found_images += 1
        target = resolve_under(self.root, rel_path)
        if target is None:
            self.rejects.reject(
                self.source, line, "path", f"{rel_path!r} resolves outside the image root", kind="bad path"
            )
            return False, None, None
        size = probe_size(target)
        if size is None:
            self.rejects.reject(
                self.source, line, "image", f"unreadable image file {target}", kind="unreadable image"
            )
            return False, None, None
        problem = too_large(size)
        if problem is not None:
            self.rejects.reject(self.source, line, "image", f"{target}: {problem}", kind="image too large")
            return False, None, None
        return True, size[0], size[1]


# A box corner or landmark may lie outside the image by at most OUTSIDE_PX + the face's longer side (|w| or |h|, at
# most the image's longer side): a face must overlap or touch its image. Beyond that the
# annotation does not belong to this image (a resized or wrong file, a typo) and the image is rejected. Measured on
# the real files in realdata: WIDER val boxes against the image sizes of the libfacedetection labelv2 list, and
# WIDER train x against 1,024 (the width of every WIDER image): the only boxes outside are degenerate ones drawn
# backwards past the border - val 39_Ice_Skating_iceskiing_39_583 (x = 1026, w = -2: 2 px out), train
# 54_Rescue_rescuepeople_54_29 (x = 1050, w = -26, h = 50: 26 px out) and 7_Cheering_Cheering_7_17 (x = 0, w = -11,
# h = 5: 11 px out, touching the image); CUHK boxes and points (13,466 faces; LFW 250x250, net_7876 400x400) stay
# at least 11 px inside; the points of WFLW test faces cut by the border (1,966 faces, 98 points on WIDER images)
# reach 0.42 x the face size outside. For a face of >= SPREAD_MIN_POINTS points the face size is the larger of
# its box and its points' spread (`point_spread`): WFLW rectangles can be smaller than their points, and a box
# derived from the points is not checked itself. Real WFLW points far outside the image (x = -104.8 on
# 28_Sports_Fan_Sports_Fan_28_201, a face cut by the border: 0.40 x its spread of 261 px) are kept, as published.
OUTSIDE_PX = 2.0  # integer boxes and the +1 pixel convention put a right/bottom edge at W or W + 1
BOX_NAMES = ("x1", "y1", "x2", "y2")


@dataclass
class CheckedImages:
    """What `check_images_and_faces` keeps: images (with their probed size) and faces."""

    keep_image: np.ndarray  # (images,) bool
    width: list[int | None]  # (images,) probed width, None when unknown
    height: list[int | None]
    keep_face: np.ndarray  # (faces,) bool: its image is kept and it is not a repeat of an identical face
    repeats: int  # identical repeats of a face dropped (reported as "duplicate face")


def check_images_and_faces(
    path: Path,
    options: ParseOptions,
    images: Sequence[tuple[str, int | None]],
    owner: np.ndarray,
    boxes: np.ndarray,
    same: np.ndarray,
    lines: np.ndarray | None,
    points: np.ndarray | None = None,
    point_names: Sequence[str] = (),
    derived_box: bool = False,
) -> CheckedImages:
    """Check each image (rel_path, line) under the root and each face against its image.

    owner[i]: image of face i; boxes (N, 4) x1 y1 x2 y2; same (N, k): the values that make two faces the same
    annotation line; points (N, K, 2) with 2K point_names (a `derived_box`, the points' extent, is not checked
    itself: its points are, and are named). An identical repeat of a face in the same image is
    reported and kept once (it is the same face: dropping both would make it background, keeping both would
    count it twice). A face outside its image rejects the whole image: a face cut from it would leave an
    unlabelled face in the picture, later cut as background.
    """
    rejects = options.rejects
    repeat = _reject_repeats(path, rejects, images, owner, same, lines)
    keep_face = ~repeat
    checker = ImageChecker(options, path)
    sizes = [checker.check(rel, line) for rel, line in images]
    keep_image = np.array([ok for ok, _, _ in sizes], bool)
    width = np.array([np.nan if w is None else w for _, w, _ in sizes], np.float64)
    height = np.array([np.nan if h is None else h for _, _, h in sizes], np.float64)
    face = np.flatnonzero(keep_face & keep_image[owner])
    names = [*BOX_NAMES, *point_names]
    box = np.full((len(face), 4), np.nan) if derived_box else boxes[face]
    coords = box if points is None else np.column_stack([box, points[face].reshape(len(face), len(point_names))])
    for i, column, value, excess, tolerance in _outside(coords, width[owner[face]], height[owner[face]]):
        f = int(face[i])
        image = int(owner[f])
        which = "" if lines is not None else f"face {_rank(owner, f)}: "  # a .mat has no lines
        rejects.reject(
            path,
            None if lines is None else int(lines[f]),
            names[column],
            f"{which}{value:g} lies {excess:g} px outside the {width[image]:g}x{height[image]:g} image "
            f"(tolerance {tolerance:g} px; image {images[image][0]!r} dropped)",
            kind="outside image",
        )
        keep_image[image] = False
    return CheckedImages(
        keep_image,
        [s[1] for s in sizes],
        [s[2] for s in sizes],
        keep_face & keep_image[owner],
        int(repeat.sum()),
    )


def _reject_repeats(
    path: Path,
    rejects: Rejects,
    images: Sequence[tuple[str, int | None]],
    owner: np.ndarray,
    same: np.ndarray,
    lines: np.ndarray | None,
) -> np.ndarray:
    """Mask of faces that repeat an earlier identical face of the same image, each reported."""
    repeat = np.zeros(len(owner), bool)
    if len(owner) < 2:
        return repeat
    keyed = np.ascontiguousarray(np.column_stack([owner, same]), np.float64)
    rows = keyed.view(np.dtype((np.void, keyed.itemsize * keyed.shape[1]))).ravel()  # ~3x faster than axis=0
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)  # first: earliest occurrence
    first_of = first[inverse.ravel()]
    repeat = first_of != np.arange(len(owner))
    for i in np.flatnonzero(repeat):
        j = int(first_of[i])
        rel = images[int(owner[i])][0]
        if lines is not None:
            which = f"identical to the face at line {int(lines[j])}"
        else:  # a .mat has no lines
            which = f"face {_rank(owner, i)} is identical to face {_rank(owner, j)}"
        rejects.reject(
            path,
            None if lines is None else int(lines[i]),
            "face",
            f"duplicate face in {rel!r}: {which}; kept once",
            kind="duplicate face",
            fatal=False,
        )
    return repeat


def _rank(owner: np.ndarray, face: int) -> int:
    """1-based rank of a face among the faces of its image (names a face of a file without lines)."""
    return int(np.count_nonzero(owner[: face + 1] == owner[face]))


SPREAD_MIN_POINTS = 10  # with 5 points (CUHK, MTCNN) one wild point moves the median: their annotated box rules


def point_spread(points: np.ndarray) -> np.ndarray:
    """(N, K, 2) -> (N,) a face's size from its points, robust to a few wild ones: 4 x the median absolute
    deviation on the wider axis. On real faces it matches the points' extent (WFLW test lists, 3,053 faces: ratio
    extent / spread 0.73-1.67, median 1.00; 300W .pts, 16 faces: 0.94-1.22), but one mistyped point of 68 does
    not widen the tolerance that should catch it."""
    deviation = np.abs(points - np.median(points, axis=1, keepdims=True))
    return 4.0 * np.median(deviation, axis=1).max(axis=1)


def _outside(
    coords: np.ndarray, width: np.ndarray, height: np.ndarray
) -> list[tuple[int, int, float, float, float]]:
    """(row, column, value, px outside, tolerance) of the worst coordinate of each face beyond the tolerance.

    coords (N, 4 + 2K): x1 y1 x2 y2 then x y per point; width/height (N,) NaN when unknown (never outside).
    """
    if not len(coords):
        return []
    is_x = np.zeros(coords.shape[1], bool)
    is_x[[0, 2]] = True
    is_x[4::2] = True
    limit = np.where(is_x, width[:, None], height[:, None])
    excess = np.maximum(-coords, coords - limit)
    extent = np.fmax(np.abs(coords[:, 2] - coords[:, 0]), np.abs(coords[:, 3] - coords[:, 1]))
    if coords.shape[1] >= 4 + 2 * SPREAD_MIN_POINTS:  # the larger of the box (NaN when derived) and the spread
        extent = np.fmax(extent, point_spread(coords[:, 4:].reshape(len(coords), -1, 2)))
    tolerance = OUTSIDE_PX + np.nan_to_num(np.minimum(extent, np.maximum(width, height)))
    over = np.nan_to_num(excess - tolerance[:, None], nan=-np.inf)
    worst = np.argmax(over, axis=1)
    rows = np.flatnonzero(over[np.arange(len(coords)), worst] > 0)
    return [
        (int(r), int(worst[r]), float(coords[r, worst[r]]), float(excess[r, worst[r]]), float(tolerance[r]))
        for r in rows
    ]


def provenance(fmt: str, path: Path, root: str, options: ParseOptions, **extra: Any) -> dict[str, Any]:
    """Provenance for a parsed file: roots maps the root name to the image dir, or "" when unknown."""
    roots = {root: str(options.images.resolve()) if options.images is not None else ""}
    return make_provenance(fmt, [path], roots, rejects=len(options.rejects), **extra)


@dataclass
class FaceArrays:
    """All faces of a file as columns, with `counts[i]` faces for image i (in manifest order)."""

    boxes: np.ndarray  # (N, 4) x1 y1 x2 y2
    counts: np.ndarray  # (images,)
    attributes: dict[str, np.ndarray] | None = None
    invalid: np.ndarray | None = None
    points: np.ndarray | None = None  # (N, K, 2)
    visible: np.ndarray | None = None  # (N, K) 0 absent, 1 hidden, 2 visible; None: the builder's default
    scheme: str | None = None
    lines: np.ndarray | None = None
    derived_box: bool | np.ndarray = False  # boxes are the points' extent (manifest box_source = "derived")
    ignore: np.ndarray | None = None  # (N,) faces kept as ignore regions


def add_all_faces(builder: ManifestBuilder, image_ids: Sequence[str], faces: FaceArrays) -> None:
    """Add every face of a file in one vectorised builder call (per-image calls cost ~1 s on WIDER train)."""
    counts = np.asarray(faces.counts, np.int64)
    total = int(counts.sum())
    if total == 0:
        return
    builder.add_faces(
        np.repeat(np.asarray(image_ids, dtype=object), counts),
        faces.boxes,
        attributes=faces.attributes,
        invalid=faces.invalid,
        scheme=faces.scheme,
        points=faces.points,
        visible=faces.visible,
        source_lines=faces.lines,
        derived_box=faces.derived_box,
        ignore=faces.ignore,
    )


# ---------------------------------------------------------------------------------------------
# entry points


def sniff_format(path: str | os.PathLike[str]) -> str:
    """The one registered format whose sniff accepts the file; FacedataError otherwise."""
    path = Path(path)
    if path.is_dir():
        return _sniff_folder(path)
    if not path.is_file():
        raise FacedataError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head.strip():
        raise InputError(path, None, "file", "empty file; nothing to ingest")
    matches = [name for name, fmt in FORMATS if fmt.sniff(path, head)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(FORMATS.names())
    if not matches:
        raise FacedataError(f"{path}: format not recognised; pass --format (known: {known})")
    raise FacedataError(f"{path}: ambiguous format, matches {', '.join(matches)}; pass --format")


def sniff_confidence(path: str | os.PathLike[str], name: str) -> float | None:
    """Share of the file's head (up to 64 lines) that format `name` recognised, for formats that measure it
    (`confidence(path, head) -> float`); None otherwise."""
    path = Path(path)
    measure = getattr(FORMATS.get(name), "confidence", None)
    if measure is None or not path.is_file():
        return None
    with open(path, "rb") as fh:
        return float(measure(path, fh.read(HEAD_BYTES)))


def format_warnings(manifest: Manifest, rejects: Rejects, name: str) -> list[str]:
    """Signs that a valid format was the wrong one for the file: nothing read, every face line rejected, or
    mostly degenerate boxes (x2 <= x1 or y2 <= y1, e.g. x y w h read as x1 y1 x2 y2)."""
    faces, images = len(manifest.faces), len(manifest.images)
    question = f"({len(rejects)} item(s) rejected): is it the right format?"
    if images == 0:
        return [f"format {name} read no image from this file {question}"]
    if faces == 0 and len(rejects):
        return [f"format {name} read no face {question}"]
    share = float(manifest.faces["degenerate"].mean()) if faces else 0.0
    if share > 0.5:
        return [f"format {name}: {share:.0%} of the boxes are degenerate (zero or negative width or height): "
                "is it the right format (x y w h vs x1 y1 x2 y2)?"]
    return []


def _sniff_folder(path: Path) -> str:
    matches = [name for name, fmt in FORMATS if reads_folders(fmt) and fmt.sniff_folder(path)]  # type: ignore[attr-defined]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(name for name, fmt in FORMATS if reads_folders(fmt))
    if not matches:
        raise FacedataError(f"{path}: no folder format recognised its contents (folder formats: {known})")
    raise FacedataError(f"{path}: ambiguous folder, matches {', '.join(matches)}; pass --format")


def ingest(
    source: str | os.PathLike[str],
    format: str | None = None,
    images: str | os.PathLike[str] | None = None,
    strict: bool = False,
    split: str | None = None,
    format_options: dict[str, Any] | None = None,
) -> tuple[Manifest, Rejects]:
    """Parse one annotation file (or a folder corpus) into a Manifest; with `images`, check and probe every image.

    Without `images` the manifest is annotations only: sizes stay unknown (faces are not checked against
    them) and the root's directory is recorded as "" in provenance["roots"]; a folder corpus holds its images,
    so its image root defaults to the folder. An `images` root that holds none of the annotated images is a
    FacedataError (a wrong root, not a dataset without images). `format_options` (name -> value, given only when
    set; the CLI flag is `--name-with-dashes`) must be options the format declares.
    """
    path = Path(source)
    folder = path.is_dir()
    if not folder and not path.is_file():
        raise FacedataError(f"{path}: no such file or folder")
    name = format or sniff_format(path)
    fmt = FORMATS.get(name)
    if folder != reads_folders(fmt):
        what = "a folder" if reads_folders(fmt) else "a file"
        raise FacedataError(f"{path}: format {name} reads {what}, got {'a folder' if folder else 'a file'}")
    format_options = format_options or {}
    unknown = sorted(set(format_options) - set(getattr(fmt, "options", ())))
    if unknown:
        flags = ", ".join("--" + option.replace("_", "-") for option in unknown)
        raise FacedataError(f"{flags}: not an option of format {name}")
    root = None
    if images is None and folder and getattr(fmt, "holds_images", True):
        images = path
    if images is not None:
        root = Path(images)
        if not root.is_dir():
            raise FacedataError(f"{root}: image root is not a directory")
    rejects = Rejects(strict=strict)
    options = ParseOptions(rejects=rejects, images=root, split=split, format_options=format_options)
    manifest = fmt.parse(path, options)
    missing = rejects.by_kind().get(MISSING_IMAGE, [])
    if root is not None and missing and options.found_images == 0:
        first = missing[0]
        raise FacedataError(
            f"--images {root}: none of the {len(missing)} annotated images is under this root (wrong root?); "
            f"first: {first.where()}: {first.reason}"
        )
    return manifest, rejects


def _load_formats() -> None:
    """Import every parser module so each registers itself in FORMATS."""
    from facedata.parsers import (  # noqa: F401
        aflw2000_3d,
        aittsmd_colmajor,
        coco_keypoints,
        cuhk_lfw,
        dlib_xml,
        ibug_pts,
        lapa,
        libfd_labelv2,
        mtcnn_list,
        retinaface_txt,
        voc_xml,
        w300lp,
        wflw,
        wider_mat,
        wider_testlist,
        wider_txt,
    )


_load_formats()
