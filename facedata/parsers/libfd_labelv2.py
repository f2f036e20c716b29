"""libfacedetection `labelv2`: `# event/name.jpg W H` (the image size) per image, then one face per line.

Face lines are `x1 y1 x2 y2` (x2 = x + w, facedata's convention, stored as given) or, in the train file,
`x1 y1 x2 y2` + 5 points `px py` (left eye, right eye, nose, mouth corners; scheme "mtcnn5"), `-1` when a
face has no points. The header's W H become the image size when no image root is given to probe.
The val file is WIDER val minus the 11 degenerate boxes libfacedetection removed (39,697 faces).
Bad input is handled as in `retinaface_txt` (a bad face line drops its image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.manifest import Manifest
from facedata.parsers.base import ParseOptions, register, replay
from facedata.parsers.retinaface_txt import (
    SNIFF_SHARE,
    block_manifest,
    hash_confidence,
    header_size,
    parse_face_lines,
    read_hash_blocks,
)

_BOX = ("x1", "y1", "x2", "y2")
_WITH_POINTS = (*_BOX, *(f"{name}{k}" for k in range(1, 6) for name in ("px", "py")))
_HEADER = ("W", "H")


def _as_retinaface(values: np.ndarray) -> np.ndarray:
    """x1 y1 x2 y2 [+ 5 x (px py)] -> x1 y1 x2 y2 [+ 5 x (px py flag)] + score (the shared column layout)."""
    out = np.full((len(values), 4 + 15 + 1), np.nan)
    out[:, :4] = values[:, :4]
    pairs = values[:, 4:14].reshape(-1, 5, 2)
    out[:, 4:19] = np.concatenate([pairs, np.zeros((len(values), 5, 1))], axis=2).reshape(-1, 15)
    return out


class LibfdLabelv2:
    name = "libfd_labelv2"
    description = "libfacedetection labelv2.txt: '# event/name.jpg W H' then x1 y1 x2 y2 [+ 5 points] per face"

    def confidence(self, path: Path, head: bytes) -> float:
        return hash_confidence(head, len(_HEADER), (4, len(_WITH_POINTS)))

    def sniff(self, path: Path, head: bytes) -> bool:
        return self.confidence(path, head) >= SNIFF_SHARE

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        blocks, rejects = read_hash_blocks(
            path, options, "'# event/name.jpg W H' lines, each followed by face lines", _HEADER
        )
        values, ok, owner, numbers = parse_face_lines(path, blocks, (_BOX, _WITH_POINTS), rejects)
        replay(rejects, options.rejects)
        faces = (_as_retinaface(values), ok, owner, numbers)
        return block_manifest(self.name, path, options, blocks, faces, lambda v: v[:, :4], header_size)


register(LibfdLabelv2())
