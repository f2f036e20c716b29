"""A folder of iBUG `.pts` files (300W, 300VW) with their images -> `ibug68`.

Ingested by passing the folder (`facedata ingest 300W/afw -o ...`); every `.pts` below it is read (sorted),
its image is the file of the same name beside it, or in the sibling `imgs/` of an `annot/` folder (300VW's
`<video>/annot/NNNNNN.pts` + `<video>/imgs/NNNNNN.jpg`). The image root is the folder.

Grammar (CRLF or LF): `version: 1` (or `1.0`), `n_points: 68`, `{`, 68 `x y` lines, `}`; anything after
`}` is ignored. Copies without the header (68 bare `x y` lines, e.g. the Spinkoo 300W copies) are read too
and counted in provenance["headerless_files"]. Coordinates are **1-based** (Matlab convention, iBUG's own
statement; a 683-px-wide HELEN image has x = 683.0): they are stored 0-based (x - 1, y - 1) and
provenance["coordinate_origin"] records the conversion. One face per file; its box is derived from the points.

Bad input, per file (its face is skipped, the file is named): an empty or non-UTF-8 file, a header line
that is not `key: value`, a non-numeric version or non-integer n_points, a missing `{` or `}`, n_points not
the number of point lines, not 68 points, a point line without 2 fields or with a non-numeric one; a missing
image or one resolving outside the folder; with probing, points beyond the image tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.errors import InputError, Rejects
from facedata.manifest import Manifest
from facedata.parsers.base import ParseOptions, is_number, read_lines, register
from facedata.parsers.landmarks import FolderFormat, folder_manifest, parse_point_lines, read_faces

SCHEME = "ibug68"
POINTS = 68
ROOT = "ibug"
ORIGIN_SHIFT = 1.0  # 1-based -> 0-based


def read_pts_file(path: Path, rejects: Rejects) -> tuple[np.ndarray | None, bool]:
    """(the points converted to 0-based, or None after a reject; whether the file has the header)."""
    try:
        lines = read_lines(path, "'version: 1', 'n_points: 68', '{', 68 'x y' lines, '}'")
    except InputError as exc:
        rejects.reject(exc.file, exc.line, exc.field, exc.message, kind="unreadable file")
        return None, True
    numbered = [(n, text) for n, text in enumerate(lines, start=1) if text]
    header = numbered[0][1].lower().startswith("version")
    if header:
        body = _body(path, numbered, rejects)
        if body is None:
            return None, True
        count_line, count, numbered = body
    else:
        count_line, count = numbered[0][0], len(numbered)
    if count != len(numbered):
        rejects.reject(path, count_line, "n_points", f"n_points says {count}, {len(numbered)} point lines "
                       "follow", kind="wrong point count")
        return None, header
    if count != POINTS:
        rejects.reject(path, count_line, "n_points", f"expected {POINTS} points ({SCHEME}), got {count}",
                       kind="wrong point count")
        return None, header
    points = parse_point_lines(path, [t for _, t in numbered], [n for n, _ in numbered], rejects)
    return (None if points is None else points - ORIGIN_SHIFT), header


def _body(
    path: Path, numbered: list[tuple[int, str]], rejects: Rejects
) -> tuple[int, int, list[tuple[int, str]]] | None:
    """(line of n_points, n_points, the point lines between `{` and `}`) of a file with a header."""
    opening = next((i for i, (_, text) in enumerate(numbered) if text == "{"), None)
    closing = next((i for i, (_, text) in enumerate(numbered) if text == "}"), None)
    if opening is None or closing is None or closing < opening:
        which = "'{'" if opening is None else "'}'"
        rejects.reject(path, None, "braces", f"no {which} line around the points", kind="bad header")
        return None
    keys: dict[str, tuple[int, str]] = {}
    for line, text in numbered[:opening]:
        key, colon, value = text.partition(":")
        if not colon:
            rejects.reject(path, line, "header", f"expected 'key: value', got {text!r}", kind="bad header")
            return None
        keys[key.strip().lower()] = (line, value.strip())
    version_line, version = keys.get("version", (numbered[0][0], ""))
    if not is_number(version):
        rejects.reject(path, version_line, "version", f"expected a number, got {version!r}", kind="bad header")
        return None
    if "n_points" not in keys:
        rejects.reject(path, None, "n_points", "no 'n_points:' header line", kind="bad header")
        return None
    count_line, count = keys["n_points"]
    if not count.isdigit():
        rejects.reject(path, count_line, "n_points", f"expected an integer, got {count!r}", kind="bad header")
        return None
    return count_line, int(count), numbered[opening + 1 : closing]


def image_folders(rel_dir: Path) -> list[str]:
    """Where the image of a `.pts` in rel_dir may be: beside it, or for 300VW's annot/ in the sibling imgs/."""
    here = rel_dir.as_posix() if rel_dir != Path(".") else ""
    if rel_dir.name == "annot":
        return [(rel_dir.parent / "imgs").as_posix().removeprefix("./"), here]
    return [here]


class IbugPts(FolderFormat):
    name = "ibug_pts"
    description = (
        "folder of iBUG .pts files (300W, 300VW; pass the folder) with their images; 1-based -> 0-based (ibug68)"
    )

    def sniff_folder(self, path: Path) -> bool:
        return next(path.rglob("*.pts"), None) is not None

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        files = sorted(path.rglob("*.pts"))
        headerless: list[Path] = []

        def read(file: Path, rejects: Rejects) -> np.ndarray | None:
            points, header = read_pts_file(file, rejects)
            if not header:
                headerless.append(file)
            return points

        faces = read_faces(path, options, files, read, image_folders)
        video = all(f.parent.name == "annot" for f in files)
        return folder_manifest(
            path, options, faces, fmt=self.name, source="ibug_300vw" if video else "ibug_300w", root=ROOT,
            scheme=SCHEME, files=files, headerless_files=len(headerless),
            coordinate_origin={"source": 1, "stored": 0, "converted": "x - 1, y - 1"},
        )


register(IbugPts())
