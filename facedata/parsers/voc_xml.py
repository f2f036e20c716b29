"""Pascal VOC XML: a folder of per-image `<annotation>` files (the Ultra-Light-Fast / libfacedetection form).

Each file: `<filename>` (the image, relative to the image root: VOC's `JPEGImages/`, pass it as `--images`),
`<size>` `<width>` `<height>` (0 = unknown), then one `<object>` per face with `<bndbox>` `xmin ymin xmax ymax`,
stored as given: the face converters write WIDER's 0-based x and x + w there (libfacedetection's files, Ultra-Light-
Fast's converter; see facedata.exports.voc, which writes the same), not VOC's 1-based pixel indices.
libfacedetection's landmark variant adds `<lm>` x1 y1 .. x5 y5 (RetinaFace's 5 points, scheme "mtcnn5"),
`<visible>` and `<has_lm>` (0: no points, stored as NaN with visibility 0). `<visible>` is the RetinaFace flag
(0 visible, 1 hidden) of the 5th point only: the converter that wrote these files keeps the flag its loop over the
points saw last, so points 1-4 are read as visible. `<difficult>1</difficult>` marks an ignore region (VOC's
"exclude from evaluation"; facedata's VOC export writes ignore regions so). Objects not named `face` are skipped
and counted in provenance["objects_not_faces"]. `truncated` and `pose` have no manifest column. Files are read in
sorted order with expat (no DTD or external entity is fetched); the folder (or its `Annotations/` or
`annotations/`) is searched for `*.xml`, subfolders included: a file in a subfolder names an image in the same
subfolder of the image root (`0--Parade/x.xml` with `<filename>x.jpg` is `0--Parade/x.jpg`, as facedata's VOC
export writes it).

Bad input: malformed XML, a root other than `<annotation>` or no `<filename>` rejects the file; a missing or
non-numeric box or point field rejects its whole image (file:line:field), since its other faces alone would leave
an unlabelled face in the picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from facedata.errors import InputError, Rejects
from facedata.manifest import Manifest
from facedata.parsers.base import (
    ParseOptions,
    check_rel_path,
    image_id_for,
    is_number,
    parse_xml,
    register,
    replay,
)
from facedata.parsers.retinaface_txt import HashBlock, block_manifest, header_size

BOX = ("xmin", "ymin", "xmax", "ymax")
POINTS = tuple(f"{axis}{k}" for k in range(1, 6) for axis in ("x", "y"))
_HEAD = 2048


@dataclass
class VocObject:
    line: int
    fields: dict[str, str] = field(default_factory=dict)  # leaf tag -> text (bndbox and lm leaves included)


@dataclass
class VocFile:
    filename: str = ""
    size: dict[str, str] = field(default_factory=dict)
    objects: list[VocObject] = field(default_factory=list)
    root: str = ""


def read_voc(file: Path) -> VocFile:
    """The leaves of one VOC file that facedata reads (expat; raises InputError on malformed XML)."""
    out = VocFile()
    stack: list[str] = []
    text: list[str] = []
    parser = expat.ParserCreate()

    def start(tag: str, _attrs: dict[str, str]) -> None:
        if not stack:
            out.root = tag
        stack.append(tag)
        text.clear()
        if stack[-2:] == ["annotation", "object"]:
            out.objects.append(VocObject(parser.CurrentLineNumber))

    def end(tag: str) -> None:
        value = "".join(text).strip()
        parent = stack[-2] if len(stack) > 1 else ""
        if stack == ["annotation", "filename"]:
            out.filename = value
        elif stack[:2] == ["annotation", "size"] and len(stack) == 3:
            out.size[tag] = value
        elif len(stack) >= 3 and stack[1] == "object" and out.objects and parent in ("object", "bndbox", "lm"):
            out.objects[-1].fields[tag] = value
        stack.pop()
        text.clear()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    parse_xml(parser, file)
    return out


def _annotations_dir(path: Path) -> Path:
    return next((path / name for name in ("Annotations", "annotations") if (path / name).is_dir()), path)


def _xml_files(path: Path) -> list[Path]:
    return sorted(_annotations_dir(path).rglob("*.xml"))


def _numbers(file: Path, obj: VocObject, names: tuple[str, ...], rejects: Rejects) -> list[float] | None:
    values = []
    for name in names:
        token = obj.fields.get(name)
        if token is None or not is_number(token):
            rejects.reject(file, obj.line, name, f"expected a number, got {token!r}", kind="bad number")
            return None
        values.append(float(token))
    return values


def _face_row(file: Path, obj: VocObject, rejects: Rejects) -> np.ndarray | None:
    """The face in retinaface_txt's column layout: x1 y1 x2 y2, 5 x (px py flag), score (NaN)."""
    box = _numbers(file, obj, BOX, rejects)
    if box is None:
        return None
    row = np.full(20, np.nan)
    row[:4] = box
    if obj.fields.get("has_lm", "0").strip() not in ("", "0") and "x1" in obj.fields:
        points = _numbers(file, obj, POINTS, rejects)
        if points is None:
            return None
        flags = np.zeros(5)
        flags[-1] = 1.0 if obj.fields.get("visible", "0").strip() == "1" else 0.0
        row[4:19] = np.column_stack([np.reshape(points, (5, 2)), flags]).ravel()
    return row


class VocXml:
    name = "voc_xml"
    description = "Pascal VOC XML folder: one <annotation> per image, <object><bndbox> per face [+ <lm> 5 points]"
    holds_images = False  # annotations only: images are in VOC's JPEGImages/, given with --images

    def sniff(self, path: Path, head: bytes) -> bool:
        return False  # a folder format

    def sniff_folder(self, path: Path) -> bool:
        files = _xml_files(path)[:8]
        if not files:
            return False
        heads = [file.open("rb").read(_HEAD) for file in files]
        return sum(b"<annotation" in head and b"<filename>" in head for head in heads) >= 0.9 * len(heads)

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        rejects = Rejects()
        blocks: list[HashBlock] = []
        rows: list[np.ndarray] = []
        owner: list[int] = []
        lines: list[int] = []
        ok: list[bool] = []
        difficult: list[bool] = []
        seen: dict[str, Path] = {}
        not_faces = 0
        files = _xml_files(path)
        for file in files:
            try:
                voc = read_voc(file)
            except InputError as exc:
                rejects.reject(exc.file, exc.line, exc.field, exc.message)
                continue
            if voc.root != "annotation" or not voc.filename:
                rejects.reject(file, 1, "filename", "expected an <annotation> with a <filename>")
                continue
            folder = file.parent.relative_to(_annotations_dir(path)).as_posix()
            rel = check_rel_path(voc.filename if folder == "." else f"{folder}/{voc.filename}", rejects, file, 1)
            if rel is None:
                continue
            if image_id_for(rel) in seen:
                rejects.reject(file, 1, "filename", f"duplicate image {rel!r} (first in {seen[image_id_for(rel)]})")
                continue
            seen[image_id_for(rel)] = file
            size = [float(voc.size.get(k, "0")) if is_number(voc.size.get(k, "")) else 0.0 for k in ("width", "height")]
            for obj in voc.objects:
                if obj.fields.get("name", "face").strip().lower() != "face":
                    not_faces += 1
                    continue
                row = _face_row(file, obj, rejects)
                rows.append(np.full(20, np.nan) if row is None else row)
                ok.append(row is not None)
                owner.append(len(blocks))
                lines.append(obj.line)
                difficult.append(obj.fields.get("difficult", "0").strip() == "1")
            blocks.append(HashBlock(rel, len(blocks) + 1, size))
        replay(rejects, options.rejects)
        faces = (
            np.array(rows).reshape(-1, 20),
            np.array(ok, bool),
            np.array(owner, np.int64),
            np.array(lines, np.int64),
        )
        manifest = block_manifest(self.name, path, options, blocks, faces, lambda v: v[:, :4], header_size, files,
                                  np.array(difficult, bool))
        manifest.provenance["objects_not_faces"] = not_faces
        return manifest


register(VocXml())
