"""AITTSMD/MTCNN-Tensorflow's evaluation list `wider_face_val.txt`: one line per image, column-major.

`event\\name.jpg` (backslash) then all the faces' x, then all y, then all w, then all h (integers), so
a line with n faces has 4n numbers; an image without faces is written `0 0 0 0` (a placeholder, no face).
Boxes become x1, y1, x2, y2 = x, y, x + w, y + h. The path is every token up to the first one ending in an
image extension, so it may hold spaces. A line with a bad number count or field drops its image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.manifest import Manifest
from facedata.parsers.base import (
    IMAGE_EXTENSIONS,
    ParseOptions,
    head_lines,
    is_number,
    read_lines,
    register,
    to_numbers,
)
from facedata.parsers.retinaface_txt import SNIFF_SHARE, new_image
from facedata.parsers.wider_txt import WiderImage, wider_manifest, xywh_to_xyxy


def split_path(tokens: list[str]) -> tuple[str, list[str]] | None:
    """(path, numbers): the path runs to the first token with an image extension; None if there is none."""
    end = next((i for i, t in enumerate(tokens) if t.lower().endswith(IMAGE_EXTENSIONS)), None)
    return None if end is None else (" ".join(tokens[: end + 1]), tokens[end + 1 :])


class AittsmdColmajor:
    name = "aittsmd_colmajor"
    description = "AITTSMD wider_face_val.txt: event\\name.jpg then all x, all y, all w, all h per image"

    def confidence(self, path: Path, head: bytes) -> float:
        """Share of the head's lines: a backslash image path, then 4n numbers."""
        lines = head_lines(head, 64)
        good = 0
        for line in lines:
            parts = split_path(line.split())
            good += bool(parts) and "\\" in parts[0] and len(parts[1]) % 4 == 0 and all(map(is_number, parts[1]))
        return good / len(lines) if lines else 0.0

    def sniff(self, path: Path, head: bytes) -> bool:
        return self.confidence(path, head) >= SNIFF_SHARE

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        lines = read_lines(path, "event\\name.jpg then all x, all y, all w, all h of its faces")
        rejects = options.rejects
        images: list[WiderImage] = []
        seen: dict[str, int] = {}
        blocks: list[np.ndarray] = []
        for number, text in enumerate(lines, start=1):
            if not text:
                continue
            parts = split_path(text.split())
            if parts is None:
                rejects.reject(path, number, "path", f"expected an image path (event\\name.jpg), got {text[:60]!r}")
                continue
            raw, numbers = parts
            if len(numbers) % 4 or not numbers:
                rejects.reject(path, number, "boxes", f"expected 4n numbers (n x, n y, n w, n h), got {len(numbers)}")
                continue
            n = len(numbers) // 4
            names = [f"{axis}{k + 1}" for axis in "xywh" for k in range(n)]
            values, ok = to_numbers(path, [numbers], [number], names, rejects, integer=True)
            if not ok[0]:
                continue
            rel = new_image(raw, seen, rejects, path, number)
            if rel is None:
                continue
            images.append(WiderImage(rel, number))
            blocks.append(values[0].reshape(4, n).T)
        counts = np.array([len(b) for b in blocks], np.int64)
        boxes = xywh_to_xyxy(np.concatenate(blocks)) if blocks else np.empty((0, 4))
        owner = np.repeat(np.arange(len(images)), counts)
        line_numbers = np.repeat(np.array([image.line for image in images], np.int64), counts)
        return wider_manifest(self.name, path, options, images, owner, boxes, None, line_numbers, len(boxes))


register(AittsmdColmajor())
