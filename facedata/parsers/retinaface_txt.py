"""RetinaFace (insightface) `label.txt`: a `# event/name.jpg` line per image, then one line per face.

Face lines are `x y w h` (the val file, no points) or `x y w h` + 5 × `px py flag` + `score` (the train
file): the points are left eye, right eye, nose, left and right mouth corner (scheme "mtcnn5"), flag 0.0
visible and 1.0 annotated but not visible (hidden); a point is absent (stored as NaN, visibility 0) when its flag
is -1 or it is (-1, -1), insightface's own test, so a real point at other negative coordinates is kept. A face
without points writes `-1` for all of them. The trailing score (insightface reads it as the face's blur, -1 when
unknown; not a WIDER attribute) is not kept. Both line
forms may mix in one file. The path is the rest of the `#` line, so it may hold spaces.

Bad input: a face line with another field count or a non-number drops its whole image (kept, it would
be a negative with an unlabelled face); a face line before any `#` line or a repeated image is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata.errors import Rejects
from facedata.manifest import Manifest, ManifestBuilder, make_provenance
from facedata.parsers.base import (
    FaceArrays,
    ParseOptions,
    add_all_faces,
    check_images_and_faces,
    check_rel_path,
    head_lines,
    image_id_for,
    infer_split,
    is_number,
    parse_table,
    provenance,
    read_lines,
    register,
    replay,
)
from facedata.parsers.wider_txt import SOURCE, WiderImage, drop_images_with_bad_faces, xywh_to_xyxy

SCHEME = "mtcnn5"
SNIFF_SHARE = 0.9  # share of the head's lines a format must recognise to claim the file (a few bad lines pass)
POINT_NAMES = tuple(f"{axis}{k}" for k in range(1, 6) for axis in ("x", "y"))
_BOX = ("x", "y", "w", "h")
_WITH_POINTS = (*_BOX, *(f"{name}{k}" for k in range(1, 6) for name in ("px", "py", "flag")), "score")


@dataclass
class HashBlock:
    """One image of a `# path` file: its path, the numbers after the path, its face lines."""

    rel_path: str
    line: int
    header: list[float]
    faces: list[tuple[int, str]] = field(default_factory=list)


def new_image(raw: str, seen: dict[str, int], rejects: Rejects, path: Path, line: int) -> str | None:
    """The normalised path of an image first named at `line`, or None after rejecting a bad path or a repeat."""
    rel = check_rel_path(raw, rejects, path, line)
    if rel is None:
        return None
    key = image_id_for(rel)
    if key in seen:
        rejects.reject(path, line, "path", f"duplicate image {rel!r} (first at line {seen[key]})")
        return None
    seen[key] = line
    return rel


def read_hash_blocks(
    path: Path, options: ParseOptions, expected: str, header_names: Sequence[str] = ()
) -> tuple[list[HashBlock], Rejects]:
    """Split a `# path [numbers]` file into image blocks; the last len(header_names) tokens of a `#` line are
    numbers (e.g. the image size), the rest is the path. Rejects are collected (replay them in file order)."""
    lines = read_lines(path, expected)
    rejects = Rejects()
    blocks: list[HashBlock] = []
    seen: dict[str, int] = {}
    current: HashBlock | None = None
    skipping = False  # inside a rejected block: its face lines go with it
    for number, text in enumerate(lines, start=1):
        if not text:
            continue
        if not text.startswith("#"):
            if current is not None:
                current.faces.append((number, text))
            elif not skipping:
                rejects.reject(path, number, "path", f"face line before any '# path' line: {text!r}")
            continue
        current, skipping = None, True
        body = text[1:].strip()
        tokens = body.rsplit(None, len(header_names)) if header_names else [body]
        if len(tokens) != len(header_names) + 1 or not all(is_number(t) for t in tokens[1:]):
            rejects.reject(path, number, "path", f"expected '# path {' '.join(header_names)}', got {text!r}")
            continue
        rel = new_image(tokens[0], seen, rejects, path, number)
        if rel is None:
            continue
        current = HashBlock(rel, number, [float(t) for t in tokens[1:]])
        blocks.append(current)
    return blocks, rejects


def header_size(block: HashBlock) -> tuple[int | None, int | None]:
    """The image size a block declares as its header's W H (0 or less: unknown)."""
    width, height = block.header
    return (int(width), int(height)) if width > 0 and height > 0 else (None, None)


def parse_face_lines(
    path: Path, blocks: list[HashBlock], forms: Sequence[Sequence[str]], rejects: Rejects
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse every face line as one of `forms` (column names, told apart by field count).

    Returns (values (N, widest form) NaN-padded, ok, owner block, line numbers)."""
    by_count = {len(names): names for names in forms}
    width = max(by_count)
    owner = np.array([b for b, block in enumerate(blocks) for _ in block.faces], np.int64)
    numbers = np.array([n for block in blocks for n, _ in block.faces], np.int64)
    texts = [t for block in blocks for _, t in block.faces]
    counts = np.array([len(t.split()) for t in texts], np.int64)
    values = np.full((len(texts), width), np.nan)
    ok = np.zeros(len(texts), bool)
    for count, names in by_count.items():
        rows = np.flatnonzero(counts == count)
        parsed, good = parse_table(path, [texts[i] for i in rows], numbers[rows].tolist(), names, rejects)
        values[rows, :count] = parsed
        ok[rows] = good
    expected = " or ".join(str(k) for k in sorted(by_count))
    for i in np.flatnonzero(~np.isin(counts, list(by_count))):
        rejects.reject(path, int(numbers[i]), "fields", f"expected {expected} fields, got {counts[i]}",
                       kind="wrong field count")
    return values, ok, owner, numbers


def block_manifest(
    fmt: str,
    path: Path,
    options: ParseOptions,
    blocks: list[HashBlock],
    faces: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    to_boxes: Callable[[np.ndarray], np.ndarray],
    sizes: Callable[[HashBlock], tuple[int | None, int | None]] = lambda block: (None, None),
    files: Sequence[Path] | None = None,
    ignore: np.ndarray | None = None,
) -> Manifest:
    """Manifest of parsed `# path` blocks (or of a folder's `files`): a bad face drops its image, so does a probed
    image whose size is not the declared `sizes(block)`; points when some face has them; `ignore` flags (one per
    parsed face) mark ignore regions."""
    values, ok, owner, numbers = faces
    images = [WiderImage(block.rel_path, block.line) for block in blocks]
    kept_images, owner_kept, keep = drop_images_with_bad_faces(images, owner, ok)
    by_rel = {block.rel_path: block for block in blocks}
    values, numbers = values[keep], numbers[keep]
    ignore = None if ignore is None else ignore[keep]
    boxes = to_boxes(values)
    points = visible = None
    if values.shape[1] > 4 + 10 and np.isfinite(values[:, 4]).any():  # some face line has the points form
        triples = values[:, 4:19].reshape(-1, 5, 3)
        visible = np.where(triples[:, :, 2] == 1, 1, 2).astype(np.int8)
        absent = (triples[:, :, 2] < 0) | (triples[:, :, :2] == -1).all(axis=2) | ~np.isfinite(triples[:, :, :2]).all(2)
        visible[absent] = 0
        points = np.where(absent[:, :, None], np.nan, triples[:, :, :2])
    split = infer_split(path, options.split or _folder_split(path))
    root = f"wider_{split}"
    checked = check_images_and_faces(
        path, options, [(image.rel_path, image.line) for image in kept_images], owner_kept, boxes,
        same=values, lines=numbers, points=points, point_names=POINT_NAMES if points is not None else (),
    )
    declared = [sizes(by_rel[image.rel_path]) for image in kept_images]
    for index in np.flatnonzero(checked.keep_image):
        probed = (checked.width[index], checked.height[index])
        if probed[0] is not None and declared[index][0] is not None and probed != declared[index]:
            options.rejects.reject(
                path, kept_images[index].line, "size", f"declared {declared[index][0]}x{declared[index][1]}, the image "
                f"is {probed[0]}x{probed[1]} (image {kept_images[index].rel_path!r} dropped)", kind="wrong size")
            checked.keep_image[index] = False
    checked.keep_face &= checked.keep_image[owner_kept]
    builder = ManifestBuilder(SOURCE, split, root)
    image_ids: list[str] = []
    for index in np.flatnonzero(checked.keep_image):
        image = kept_images[index]
        width, height = checked.width[index], checked.height[index]
        if width is None:
            width, height = declared[index]
        image_id = image_id_for(image.rel_path)
        event = image.rel_path.split("/", 1)[0] if "/" in image.rel_path else None
        builder.add_image(image_id, image.rel_path, width=width, height=height, event=event)
        image_ids.append(image_id)
    face = np.flatnonzero(checked.keep_face)
    add_all_faces(
        builder,
        image_ids,
        FaceArrays(
            boxes=boxes[face],
            counts=np.bincount(owner_kept[face], minlength=len(kept_images))[checked.keep_image],
            points=None if points is None else points[face],
            visible=None if visible is None else visible[face],
            scheme=SCHEME if points is not None else None,
            lines=numbers[face],
            ignore=None if ignore is None else ignore[face],
        ),
    )
    if files is None:
        return builder.build(provenance(fmt, path, root, options, records=len(ok), duplicates=checked.repeats))
    roots = {root: str(options.images.resolve()) if options.images is not None else ""}
    return builder.build(
        make_provenance(fmt, list(files), roots, folder=str(path.resolve()), records=len(ok),
                        rejects=len(options.rejects), duplicates=checked.repeats)
    )


def _folder_split(path: Path) -> str | None:
    """`val/label.txt`: the split is the folder's name when the file name has none."""
    split = infer_split(path, None)
    return split if split != "unknown" else (infer_split(path.parent, None) if path.parent.name else None)


def hash_confidence(head: bytes, header_numbers: int, face_fields: Sequence[int]) -> float:
    """The lower of two shares over the head's lines (up to 64): `#` lines ending in `header_numbers` numbers
    after a path, and face lines of a known length; 0 unless the file starts with a `#` line."""
    lines = head_lines(head, 64)
    if not lines or not lines[0].startswith("#"):
        return 0.0
    headers = [line[1:].split() for line in lines if line.startswith("#")]
    faces = [line.split() for line in lines if not line.startswith("#")]
    good_headers = sum(
        len(t) > header_numbers
        and all(is_number(x) for x in t[len(t) - header_numbers :])
        and not is_number(t[len(t) - header_numbers - 1])
        for t in headers
    )
    good_faces = sum(len(t) in face_fields and all(is_number(x) for x in t) for t in faces)
    return min(good_headers / len(headers), good_faces / len(faces) if faces else 1.0)


class RetinaFaceTxt:
    name = "retinaface_txt"
    description = "RetinaFace label.txt: '# event/name.jpg' then x y w h [+ 5 x (x y flag) + score] per face"

    def confidence(self, path: Path, head: bytes) -> float:
        return hash_confidence(head, 0, (4, len(_WITH_POINTS)))

    def sniff(self, path: Path, head: bytes) -> bool:
        return self.confidence(path, head) >= SNIFF_SHARE

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        blocks, rejects = read_hash_blocks(path, options, "'# event/name.jpg' lines, each followed by face lines")
        faces = parse_face_lines(path, blocks, (_BOX, _WITH_POINTS), rejects)
        replay(rejects, options.rejects)
        return block_manifest(self.name, path, options, blocks, faces, xywh_to_xyxy)


register(RetinaFaceTxt())
