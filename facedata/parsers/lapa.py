"""LaPa split folders `{train,val,test}/` holding `landmarks/<name>.txt` and `images/<name>.jpg` -> `lapa106`.

Ingested by passing the split folder (`facedata ingest LaPa/train -o ...`); the image root is that folder.
Each landmarks file: a count line (106), then one `x y` point per line (0-based pixels, as every public
loader reads them). One face per image; its box is derived from the points (LaPa has no box). `labels/`
(the parsing masks) is not read.

Bad input, per file (the file's face is skipped, the file is named in the report): an empty or non-UTF-8
file, a count line that is not an integer, not 106, or not the number of point lines that follow, a point
line without exactly 2 fields or with a non-numeric one; a missing image or one resolving outside the
folder (a symlink); with image probing, points beyond the image tolerance (`base.check_images_and_faces`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.errors import InputError, Rejects
from facedata.manifest import Manifest
from facedata.parsers.base import ParseOptions, read_lines, register
from facedata.parsers.landmarks import FolderFormat, folder_manifest, parse_point_lines, read_faces

SCHEME = "lapa106"
POINTS = 106
SOURCE = ROOT = "lapa"


def read_lapa_file(path: Path, rejects: Rejects) -> np.ndarray | None:
    """The (106, 2) points of one landmarks file, or None after rejecting it."""
    try:
        lines = read_lines(path, "a point count line (106) then one 'x y' line per point")
    except InputError as exc:
        rejects.reject(exc.file, exc.line, exc.field, exc.message, kind="unreadable file")
        return None
    numbered = [(n, text) for n, text in enumerate(lines, start=1) if text]
    (count_line, count_text), rest = numbered[0], numbered[1:]
    if not count_text.isdigit():
        rejects.reject(path, count_line, "count", f"expected the number of points, got {count_text!r}",
                       kind="bad count")
        return None
    if int(count_text) != len(rest):
        rejects.reject(path, count_line, "count", f"count line says {count_text} points, {len(rest)} point "
                       "lines follow", kind="wrong point count")
        return None
    if len(rest) != POINTS:
        rejects.reject(path, count_line, "count", f"expected {POINTS} points ({SCHEME}), got {len(rest)}",
                       kind="wrong point count")
        return None
    return parse_point_lines(path, [t for _, t in rest], [n for n, _ in rest], rejects)


class LaPa(FolderFormat):
    name = "lapa"
    description = (
        "LaPa split folder (pass the folder): landmarks/*.txt (count line, 106 'x y' lines) + images/ (lapa106)"
    )

    def sniff_folder(self, path: Path) -> bool:
        return (path / "landmarks").is_dir() and (path / "images").is_dir()

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        files = sorted((path / "landmarks").glob("*.txt"))
        faces = read_faces(path, options, files, read_lapa_file, lambda _: ["images"])
        return folder_manifest(path, options, faces, fmt=self.name, source=SOURCE, root=ROOT, scheme=SCHEME,
                               files=files)


register(LaPa())
