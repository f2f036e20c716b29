"""WIDER Face `wider_face_{train,val}_bbx_gt.txt`: path line, face-count line, then one line per face.

Face lines are `x y w h blur expression illumination invalid occlusion pose` (the official readme's
order; torchvision and Datumaro mislabel the last three). A record with x = y = w = h = 0 is the
placeholder of an image without faces — it appears after a count of `1` and, as a dummy line, after
a count of `0` — and yields no face. Boxes become x1, y1, x2, y2 = x, y, x + w, y + h.

Bad input: a bad face line (field count, non-numeric, unknown attribute code) drops its whole
image (kept, it would be a negative with an unlabelled face); a bad count (not an integer, or not
the number of face lines before the next path or the end of the file: too small, the extra faces
would become background) drops the image block, and parsing resumes at the next path line. An
identical repeated face line is reported and kept once; with an image root, a face outside its
image drops the image (`base.check_images_and_faces`). Images keep file order, which
is also the order of the official .mat (event, then file), so both forms give the same manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.errors import Rejects
from facedata.manifest import Manifest, ManifestBuilder
from facedata.parsers.base import (
    FaceArrays,
    ParseOptions,
    add_all_faces,
    check_codes,
    check_images_and_faces,
    check_rel_path,
    head_lines,
    image_id_for,
    infer_split,
    is_number,
    looks_like_image_path,
    parse_table,
    provenance,
    read_lines,
    register,
    replay,
)
from facedata.schema import FACE_ATTRIBUTES, WIDER_ATTRIBUTE_CODES, WIDER_ATTRIBUTES

WIDER_COLUMNS: tuple[str, ...] = ("x", "y", "w", "h", *WIDER_ATTRIBUTES)
SOURCE = "wider_face"


@dataclass
class WiderImage:
    rel_path: str
    line: int | None  # 1-based line of the path line (None for .mat)


def xywh_to_xyxy(values: np.ndarray) -> np.ndarray:
    """(N, >=4) x y w h ... -> (N, 4) x1 y1 x2 y2 = x, y, x + w, y + h."""
    return np.column_stack(
        [values[:, 0], values[:, 1], values[:, 0] + values[:, 2], values[:, 1] + values[:, 3]]
    )


def wider_manifest(
    fmt: str,
    path: Path,
    options: ParseOptions,
    images: list[WiderImage],
    owner: np.ndarray,
    boxes: np.ndarray,
    attributes: np.ndarray | None,
    lines: np.ndarray | None,
    records: int,
) -> Manifest:
    """Build the manifest shared by the WIDER txt, .mat and box-list forms.

    images: path-checked images in file order; owner[i]: index into images of box record i;
    boxes: (N, 4) x1 y1 x2 y2; attributes: (N, 6) in WIDER_ATTRIBUTES order, validated, or None
    (unknown); records: box records read. All-zero boxes are zero-face placeholders and dropped.
    """
    split = infer_split(path, options.split)
    root = f"wider_{split}"
    placeholder = (boxes == 0).all(axis=1)
    real = ~placeholder
    values = boxes[real] if attributes is None else np.column_stack([boxes[real], attributes[real]])
    checked = check_images_and_faces(
        path,
        options,
        [(image.rel_path, image.line) for image in images],
        owner[real],
        boxes[real],
        same=values,
        lines=None if lines is None else lines[real],
    )
    builder = ManifestBuilder(SOURCE, split, root)
    image_ids: list[str] = []
    for index in np.flatnonzero(checked.keep_image):
        image = images[index]
        image_id = image_id_for(image.rel_path)
        event = image.rel_path.split("/", 1)[0] if "/" in image.rel_path else None
        builder.add_image(
            image_id, image.rel_path, width=checked.width[index], height=checked.height[index], event=event
        )
        image_ids.append(image_id)
    faces = np.flatnonzero(real)[checked.keep_face]
    columns = None
    invalid = None
    if attributes is not None:
        a = attributes[faces]
        columns = {name: a[:, j] for j, name in enumerate(WIDER_ATTRIBUTES) if name in FACE_ATTRIBUTES}
        invalid = a[:, WIDER_ATTRIBUTES.index("invalid")] != 0
    counts = np.bincount(owner[faces], minlength=len(images))[checked.keep_image]
    add_all_faces(
        builder,
        image_ids,
        FaceArrays(
            boxes=boxes[faces],
            counts=counts,
            attributes=columns,
            invalid=invalid,
            lines=None if lines is None else lines[faces],
        ),
    )
    return builder.build(
        provenance(
            fmt,
            path,
            root,
            options,
            records=int(records),
            placeholders=int(placeholder.sum()),
            duplicates=checked.repeats,
        )
    )


def validate_attributes(
    path: Path,
    values: np.ndarray,
    lines: np.ndarray | None,
    ok: np.ndarray,
    rejects: Rejects,
    describe: Callable[[int], str] | None = None,
) -> None:
    """Reject face records whose attribute columns are not documented WIDER codes (ok updated)."""
    check_codes(path, values[:, 4:], lines, WIDER_ATTRIBUTES, WIDER_ATTRIBUTE_CODES, ok, rejects, describe)


def drop_images_with_bad_faces(
    images: list[WiderImage], owner: np.ndarray, ok: np.ndarray
) -> tuple[list[WiderImage], np.ndarray, np.ndarray]:
    """Drop every image that has a rejected face record: with one face missing, the rest of the image
    would teach a detector that a face is background.

    Returns (kept images, owner of the kept records re-indexed into them, keep mask over records).
    """
    bad = np.zeros(len(images), bool)
    bad[owner[~ok]] = True
    keep = ~bad[owner]
    index = np.cumsum(~bad) - 1
    return (
        [image for image, dropped in zip(images, bad, strict=True) if not dropped],
        index[owner[keep]],
        keep,
    )


def _is_zero_record(text: str) -> bool:
    """A record whose x y w h are all 0 (the placeholder of an image without faces)."""
    tokens = text.split()
    return all(is_number(t) for t in tokens) and len(tokens) >= 4 and all(float(t) == 0 for t in tokens[:4])


def _next_path(lines: list[str], start: int) -> int:
    """Index of the next image path line at or after `start` (resynchronise after a bad block)."""
    for i in range(start, len(lines)):
        if looks_like_image_path(lines[i]):
            return i
    return len(lines)


class WiderTxt:
    name = "wider_bbx_gt"
    description = (
        "WIDER Face wider_face_{train,val}_bbx_gt.txt: path / count / "
        "x y w h blur expression illumination invalid occlusion pose"
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        lines = head_lines(head, 12)
        if len(lines) < 2 or not looks_like_image_path(lines[0]):
            return False
        # a count line after the first path, or (if that block is broken) any 10-field face line
        return lines[1].isdigit() or any(len(line.split()) == len(WIDER_COLUMNS) for line in lines[1:])

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        lines = read_lines(path, "an image path line (event/name.jpg), then a face count line")
        rejects = Rejects()  # collected here, passed on in file order by replay()
        images: list[WiderImage] = []
        seen: dict[str, int] = {}
        face_texts: list[str] = []
        face_lines: list[int] = []
        face_owner: list[int] = []
        i, n = 0, len(lines)
        while i < n:
            text = lines[i]
            if not text:
                i += 1
                continue
            if not looks_like_image_path(text):
                rejects.reject(
                    path, i + 1, "path", f"expected an image path line (event/name.jpg), got {text!r}"
                )
                i = _next_path(lines, i + 1)
                continue
            path_line = i + 1
            if i + 1 >= n:
                rejects.reject(path, path_line, "count", f"file ends early: no face count after {text!r}")
                break
            count_text = lines[i + 1]
            if not count_text.isdigit():
                rejects.reject(
                    path, i + 2, "count", f"expected an integer face count for {text!r}, got {count_text!r}"
                )
                i = _next_path(lines, i + 1)
                continue
            declared = int(count_text)
            start = i + 2
            following = _next_path(lines, start)
            block = [j for j in range(start, following) if lines[j]]
            # `0` followed by a dummy record is the official zero-face convention: read the dummy as a record
            # so that a placeholder is recognised by content, like after a count of `1`.
            if len(block) != declared and not (
                declared == 0 and len(block) == 1 and _is_zero_record(lines[block[0]])
            ):
                # kept, a count too small would leave the extra faces unlabelled (background for the samplers)
                where = (
                    "the end of the file" if following == n else f"the next image path (line {following + 1})"
                )
                rejects.reject(
                    path,
                    i + 2,
                    "count",
                    f"wrong face count: {text!r} declares {declared} face line(s), found {len(block)} before {where}",
                    kind="wrong face count",
                )
                i = following
                continue
            i = following
            rel = check_rel_path(text, rejects, path, path_line)
            if rel is None:
                continue
            key = image_id_for(rel)
            if key in seen:
                rejects.reject(
                    path, path_line, "path", f"duplicate image {rel!r} (first at line {seen[key]})"
                )
                continue
            seen[key] = path_line
            owner = len(images)
            images.append(WiderImage(rel, path_line))
            for line_index in block:
                face_texts.append(lines[line_index])
                face_lines.append(line_index + 1)
                face_owner.append(owner)
        line_numbers = np.asarray(face_lines, dtype=np.int64)
        values, ok = parse_table(path, face_texts, face_lines, WIDER_COLUMNS, rejects, integer=True)
        validate_attributes(path, values, line_numbers, ok, rejects)
        owner_array = np.asarray(face_owner, dtype=np.int64)
        notes = {
            int(line_numbers[i]): f" (image {images[owner_array[i]].rel_path!r} dropped)"
            for i in np.flatnonzero(~ok)
        }
        replay(rejects, options.rejects, notes)
        images, owner_kept, keep = drop_images_with_bad_faces(images, owner_array, ok)
        good = values[keep]
        return wider_manifest(
            self.name,
            path,
            options,
            images,
            owner_kept,
            xywh_to_xyxy(good),
            good[:, 4:],
            line_numbers[keep],
            len(face_texts),
        )


register(WiderTxt())
