"""WIDER Face test split: `wider_face_test_filelist.txt` (one `event/name.jpg` per line) and
`wider_face_test.mat` (event_list + file_list). Images only — the test ground truth is not public —
so the manifest has images with no faces, split "test" unless overridden, root "wider_test".
"""

from __future__ import annotations

from pathlib import Path

from facedata.manifest import Manifest, ManifestBuilder
from facedata.parsers.base import (
    ImageChecker,
    ParseOptions,
    check_rel_path,
    head_lines,
    image_id_for,
    looks_like_image_path,
    provenance,
    read_lines,
    register,
)
from facedata.parsers.matfile import load_mat, mat_variables
from facedata.parsers.wider_mat import events_and_files
from facedata.parsers.wider_txt import SOURCE


def build_image_list(
    fmt: str, path: Path, options: ParseOptions, entries: list[tuple[str, int | None]]
) -> Manifest:
    """Manifest of raw (path, line) entries: path-checked, de-duplicated, optionally probed."""
    split = options.split or "test"
    root = f"wider_{split}"
    rejects = options.rejects
    checker = ImageChecker(options, path)
    builder = ManifestBuilder(SOURCE, split, root)
    for raw, line in entries:
        rel = check_rel_path(raw, rejects, path, line)
        if rel is None:
            continue
        ok, width, height = checker.check(rel, line)
        if not ok:
            continue
        event = rel.split("/", 1)[0] if "/" in rel else None
        if not builder.add_image(image_id_for(rel), rel, width=width, height=height, event=event):
            rejects.reject(path, line, "path", f"duplicate image {rel!r}", kind="duplicate image")
    return builder.build(provenance(fmt, path, root, options, records=len(entries)))


class WiderTestList:
    name = "wider_test_list"
    description = "WIDER Face wider_face_test_filelist.txt: one event/name.jpg per line, no boxes"

    def sniff(self, path: Path, head: bytes) -> bool:
        lines = head_lines(head, 3)
        return bool(lines) and all(looks_like_image_path(line) for line in lines)

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        lines = read_lines(path, "one image path (event/name.jpg) per line")
        entries: list[tuple[str, int | None]] = []
        for number, text in enumerate(lines, start=1):
            if not text:
                continue
            if not looks_like_image_path(text):
                options.rejects.reject(
                    path, number, "path", f"expected one image path (event/name.jpg), got {text!r}"
                )
                continue
            entries.append((text, number))
        return build_image_list(self.name, path, options, entries)


class WiderTestMat:
    name = "wider_test_mat"
    description = "WIDER Face wider_face_test.mat: event_list + file_list, no boxes"

    def sniff(self, path: Path, head: bytes) -> bool:
        names = mat_variables(path, head)
        return {"event_list", "file_list"} <= names and "face_bbx_list" not in names

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        data = load_mat(path, ["event_list", "file_list"])
        entries: list[tuple[str, int | None]] = [
            (f"{event}/{name}.jpg", None)
            for _, event, files in events_and_files(path, data)
            for name in files
        ]
        return build_image_list(self.name, path, options, entries)


register(WiderTestList())
register(WiderTestMat())
