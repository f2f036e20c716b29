"""An independent minimal reader of the WIDER bbx_gt txt, to check the parser, filters and stats against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLUMNS = ("x", "y", "w", "h", "blur", "expression", "illumination", "invalid", "occlusion", "pose")


def read_raw_wider(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image names, (faces, 10) int table in COLUMNS order, owning image index per face.

    Placeholders are dropped, and a face line repeated identically in one image counts once (the official
    val file has one such repeat: facedata keeps the face once and reports the repeat).
    """
    lines = path.read_text().splitlines()
    names: list[str] = []
    rows: list[list[int]] = []
    owners: list[int] = []
    i = 0
    while i < len(lines):
        names.append(lines[i].strip())
        count = int(lines[i + 1])
        seen: set[str] = set()
        for line in lines[i + 2 : i + 2 + max(count, 1)]:
            values = [int(v) for v in line.split()]
            key = " ".join(line.split())
            if values[:4] != [0, 0, 0, 0] and key not in seen:  # all-zero x y w h: a face-less image
                seen.add(key)
                rows.append(values)
                owners.append(len(names) - 1)
        i += 2 + max(count, 1)
    return names, np.array(rows, dtype=np.int64), np.array(owners)
