"""WFLW `list_98pt_rect_attr_{train,test}.txt` and `list_98pt_test*.txt` -> `wflw98`.

rect_attr lines have 207 fields: 98 points `x0 y0 ... x97 y97`, the rectangle `x_min y_min x_max y_max`
(x1 y1 x2 y2), the flags pose expression illumination make-up occlusion blur (0/1, official README order;
stored in the manifest's pose, expression, illumination, make_up, occlusion, blur columns), and the image path
relative to `WFLW_images/`. The test lists (`list_98pt_test.txt` and the six attribute subsets) have 197
fields: the points and the path; their box is derived from the points. A subset list holds exactly the faces
whose flag is 1 (official README), so `list_98pt_test_blur.txt` sets blur = 1 and leaves the other flags
unknown. Points are 0-based pixels (no public loader shifts them); points outside the image are real
(x = -104.8, y = 6039.7 occur) and kept (see `base.OUTSIDE_PX`). Several lines can share one image.

Bad input, per line (the face is skipped; with an image root its image is dropped, as in the other parsers):
not 207/197 fields (the count of the file's first line), a non-numeric field, a flag not 0/1, a path that is
absolute or climbs out of the root; an identical repeated line is reported and kept once; with `--images`,
a missing image or points beyond the image tolerance drop the image.
"""

from __future__ import annotations

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
    first_line,
    group_by_image,
    image_id_for,
    image_order,
    infer_split,
    is_number,
    looks_like_image_path,
    parse_table,
    provenance,
    read_lines,
    register,
    replay,
)
from facedata.parsers.landmarks import point_names, points_extent
from facedata.schema import WFLW_ATTRIBUTES

SCHEME = "wflw98"
SOURCE = ROOT = "wflw"
POINTS = 98
RECT = ("x_min_rect", "y_min_rect", "x_max_rect", "y_max_rect")
RECT_ATTR_COLUMNS: tuple[str, ...] = (*point_names(POINTS), *RECT, *WFLW_ATTRIBUTES)
TEST_COLUMNS: tuple[str, ...] = tuple(point_names(POINTS))
FIELDS = {len(RECT_ATTR_COLUMNS) + 1: RECT_ATTR_COLUMNS, len(TEST_COLUMNS) + 1: TEST_COLUMNS}  # 207, 197
GRAMMAR = {
    207: "x0 y0 ... x97 y97 x_min_rect y_min_rect x_max_rect y_max_rect pose expression illumination make-up "
    "occlusion blur image_name",
    197: "x0 y0 ... x97 y97 image_name",
}
# file name suffix of the official attribute test subsets -> the flag every face of the list has
SUBSETS = {"largepose": "pose", "expression": "expression", "illumination": "illumination",
           "makeup": "make_up", "occlusion": "occlusion", "blur": "blur"}
FLAG_CODES = {name: {0: "no", 1: "yes"} for name in WFLW_ATTRIBUTES}


def subset_flag(path: Path) -> str | None:
    """The attribute of a `list_98pt_test_<subset>.txt` list, else None."""
    stem = path.stem.lower()
    return next((flag for suffix, flag in SUBSETS.items() if stem.endswith(f"_{suffix}")), None)


class Wflw:
    name = "wflw"
    description = (
        "WFLW list_98pt_rect_attr_{train,test}.txt (98 points, rect, 6 flags, path) and list_98pt_test*.txt "
        "(98 points, path) (wflw98)"
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        tokens = first_line(head).split()
        return (
            len(tokens) in FIELDS
            and looks_like_image_path(tokens[-1])
            and all(is_number(t) for t in tokens[:-1])
        )

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        lines = read_lines(path, f"one face per line: {GRAMMAR[207]} (or {GRAMMAR[197]})")
        rejects = Rejects()  # collected here, passed on in file order by replay()
        numbered = [(n, text) for n, text in enumerate(lines, start=1) if text]
        first = len(numbered[0][1].split())
        fields = first if first in FIELDS else 207
        numbers: list[int] = []
        texts: list[str] = []
        raw_paths: list[str] = []
        for number, text in numbered:
            count = len(text.split())
            if count != fields:
                rejects.reject(path, number, "fields", f"expected {fields} fields ({GRAMMAR[fields]}), got {count}",
                               kind="wrong field count")
                continue
            head, raw = text.rsplit(None, 1)
            numbers.append(number)
            texts.append(head)
            raw_paths.append(raw)
        values, ok = parse_table(path, texts, numbers, FIELDS[fields], rejects)
        if fields == 207:
            check_codes(path, values[:, -6:], numbers, WFLW_ATTRIBUTES, FLAG_CODES, ok, rejects)
        rels = [check_rel_path(raw, rejects, path, n) if ok[i] else None
                for i, (n, raw) in enumerate(zip(numbers, raw_paths, strict=True))]
        replay(rejects, options.rejects)
        return self._build(path, options, values, rels, np.asarray(numbers, np.int64), fields, len(numbered))

    def _build(
        self, path: Path, options: ParseOptions, values: np.ndarray, rels: list[str | None], lines: np.ndarray,
        fields: int, records: int,
    ) -> Manifest:
        face_rows, owner, image_rows = group_by_image(rels)
        v = values[face_rows]
        points = v[:, : 2 * POINTS].reshape(-1, POINTS, 2)
        annotated = fields == 207
        boxes = v[:, 2 * POINTS : 2 * POINTS + 4] if annotated else points_extent(points)
        checked = check_images_and_faces(
            path, options, [(rels[row], int(lines[row])) for row in image_rows], owner, boxes, same=v,
            lines=lines[face_rows], points=points, point_names=TEST_COLUMNS, derived_box=not annotated,
        )
        builder = ManifestBuilder(SOURCE, infer_split(path, options.split), ROOT)
        image_ids: list[str] = []
        for index in np.flatnonzero(checked.keep_image):
            rel = rels[image_rows[index]]
            assert rel is not None
            image_ids.append(image_id_for(rel))
            builder.add_image(image_ids[-1], rel, width=checked.width[index], height=checked.height[index],
                              event=rel.split("/", 1)[0] if "/" in rel else None)
        kept = image_order(owner, checked.keep_face)
        flag = subset_flag(path)
        if annotated:
            attributes = {name: v[kept, 2 * POINTS + 4 + j] for j, name in enumerate(WFLW_ATTRIBUTES)}
        else:
            attributes = {flag: np.ones(len(kept))} if flag else None
        add_all_faces(
            builder,
            image_ids,
            FaceArrays(
                boxes=boxes[kept],
                counts=np.bincount(owner[kept], minlength=len(image_rows))[checked.keep_image],
                attributes=attributes,
                points=points[kept],
                scheme=SCHEME,
                lines=lines[face_rows][kept],
                derived_box=not annotated,
            ),
        )
        extra = {"subset": flag} if flag and not annotated else {}
        return builder.build(
            provenance(self.name, path, ROOT, options, records=records, duplicates=checked.repeats, **extra)
        )


register(Wflw())
