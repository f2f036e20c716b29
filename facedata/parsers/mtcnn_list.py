"""One-line-per-image WIDER box lists used by MTCNN training scripts.

- `mtcnn_wider_list`: the AITTSMD/MTCNN-Tensorflow `wider_face_train.txt` — `event/name` (no .jpg)
  then `x1 y1 x2 y2` floats per face, x2 = x + w (already facedata's convention, stored as given).
- `wider_anno_xywh`: the Sierkinhane/mtcnn-pytorch `anno_train.txt` — `.../images/event/name.jpg`
  then integer `x y w h` per face, converted to x + w, y + h. Its paths are absolute paths on the
  author's machine; everything up to the last `/images/` is dropped, so the image root is
  `WIDER_train/images`. Not sniffed (its `x1 y1 x2 y2` sibling `anno_train_fixed.txt` looks the
  same), so it needs `--format wider_anno_xywh`.

A line whose boxes are all x = y = w = h = 0 (or that has no boxes) is an image without faces. A
line with a bad box field is skipped as a whole (the image), since the boxes cannot be re-aligned.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path

import numpy as np

from facedata.manifest import Manifest
from facedata.parsers.base import (
    IMAGE_EXTENSIONS,
    ParseOptions,
    check_rel_path,
    first_line,
    is_number,
    read_lines,
    register,
)
from facedata.parsers.wider_txt import WiderImage, wider_manifest, xywh_to_xyxy

_COORDS = ("x1", "y1", "x2", "y2")


def parse_box_lines(
    fmt: str,
    path: Path,
    options: ParseOptions,
    raw_path: Callable[[str], str],
    xywh: bool,
) -> Manifest:
    """Shared parser: `raw_path(token)` gives the annotation path; boxes are xywh or xyxy."""
    lines = read_lines(path, "an image path followed by groups of 4 box numbers")
    rejects = options.rejects
    names = "x y w h" if xywh else " ".join(_COORDS)
    images: list[WiderImage] = []
    seen: dict[str, int] = {}
    numbers_per_image: list[list[str]] = []
    for number, text in enumerate(lines, start=1):
        if not text:
            continue
        tokens = text.split()
        numbers = tokens[1:]
        if len(numbers) % 4:
            rejects.reject(
                path, number, "boxes", f"expected groups of 4 numbers ({names}), got {len(numbers)}"
            )
            continue
        bad = next((k for k, t in enumerate(numbers) if not is_number(t)), None)
        if bad is not None:
            field = f"box {bad // 4 + 1} {names.split()[bad % 4]}"
            rejects.reject(path, number, field, f"expected a number, got {numbers[bad]!r}")
            continue
        rel = check_rel_path(raw_path(tokens[0]), rejects, path, number)
        if rel is None:
            continue
        if rel in seen:
            rejects.reject(path, number, "path", f"duplicate image {rel!r} (first at line {seen[rel]})")
            continue
        seen[rel] = number
        images.append(WiderImage(rel, number))
        numbers_per_image.append(numbers)
    counts = np.fromiter((len(t) // 4 for t in numbers_per_image), np.int64, len(numbers_per_image))
    boxes = np.array(list(chain.from_iterable(numbers_per_image)), dtype=np.float64).reshape(-1, 4)
    if xywh:
        boxes = xywh_to_xyxy(boxes)
    owner = np.repeat(np.arange(len(images)), counts)
    lines_array = np.repeat(np.array([image.line for image in images], np.int64), counts)
    return wider_manifest(fmt, path, options, images, owner, boxes, None, lines_array, len(boxes))


def _with_jpg(token: str) -> str:
    return token if token.lower().endswith(IMAGE_EXTENSIONS) else f"{token}.jpg"


def _after_images_dir(token: str) -> str:
    text = token.replace("\\", "/")
    cut = text.rfind("/images/")
    return text[cut + len("/images/") :] if cut >= 0 else text


def _box_line_shape(head: bytes) -> tuple[str, list[str]] | None:
    tokens = first_line(head).split()
    if len(tokens) < 1 or (len(tokens) - 1) % 4 or not all(is_number(t) for t in tokens[1:]):
        return None
    return tokens[0], tokens[1:]


class MtcnnWiderList:
    name = "mtcnn_wider_list"
    description = "MTCNN wider_face_train.txt: event/name (no .jpg) then x1 y1 x2 y2 floats per face"

    def sniff(self, path: Path, head: bytes) -> bool:
        shape = _box_line_shape(head)
        return shape is not None and "/" in shape[0] and not shape[0].lower().endswith(IMAGE_EXTENSIONS)

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        return parse_box_lines(self.name, path, options, _with_jpg, xywh=False)


class WiderAnnoXywh:
    name = "wider_anno_xywh"
    description = "mtcnn-pytorch anno_train.txt: .../images/event/name.jpg then x y w h ints per face"

    def sniff(self, path: Path, head: bytes) -> bool:
        return False  # indistinguishable from its x1 y1 x2 y2 variant; use --format

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        return parse_box_lines(self.name, path, options, _after_images_dir, xywh=True)


register(MtcnnWiderList())
register(WiderAnnoXywh())
