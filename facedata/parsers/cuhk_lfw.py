"""CUHK facial point set lists `trainImageList.txt` / `testImageList.txt` (LFW 5590 + net 7876).

Each (CRLF) line: `subset\\name.jpg x1 x2 y1 y2` then 5 points as x y pairs (left eye, right eye,
nose, left mouth corner, right mouth corner) -> scheme "mtcnn5". Note the box column order is
x1 x2 y1 y2, not x1 y1 x2 y2; boxes are stored as given (x1, y1, x2, y2). The first path component
(lfw_5590 / net_7876) becomes the image tag `subset`; the image root is the folder holding both.

A line with the wrong field count or a non-numeric field is skipped (one face, one image). An
identical repeated line is reported and kept once; with an image root, a box or point outside its
image drops the image (`base.check_images_and_faces`).
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

SOURCE = "cuhk_lfw_net"
ROOT = "cuhk_lfw_net"
SCHEME = "mtcnn5"
COLUMNS: tuple[str, ...] = (
    "x1",
    "x2",
    "y1",
    "y2",
    *(
        f"{axis}_{name}"
        for name in ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
        for axis in "xy"
    ),
)


class CuhkLfwNet:
    name = "cuhk_lfw_net"
    description = (
        "CUHK LFW/net_7876 trainImageList.txt / testImageList.txt: "
        "subset\\name.jpg x1 x2 y1 y2 + 5 points (mtcnn5)"
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        tokens = first_line(head).split()
        return (
            len(tokens) == 1 + len(COLUMNS)
            and looks_like_image_path(tokens[0])
            and all(is_number(t) for t in tokens[1:])
        )

    def parse(self, path: Path, options: ParseOptions) -> Manifest:
        lines = read_lines(path, "subset\\name.jpg x1 x2 y1 y2 then 5 x y points")
        rejects = Rejects()  # collected here, passed on in file order by replay()
        split = infer_split(path, options.split)
        entries: list[tuple[str, int]] = []
        texts: list[str] = []
        numbers: list[int] = []
        for number, text in enumerate(lines, start=1):
            if not text:
                continue
            raw, _, rest = text.partition(" ")
            entries.append((raw, number))
            texts.append(rest.strip())
            numbers.append(number)
        values, ok = parse_table(path, texts, numbers, COLUMNS, rejects)
        rels = [
            check_rel_path(raw, rejects, path, number) if ok[row] else None
            for row, (raw, number) in enumerate(entries)
        ]
        replay(rejects, options.rejects)
        face_rows, owner, image_rows = group_by_image(rels)
        v = values[face_rows]
        boxes = v[:, [0, 2, 1, 3]]  # x1 x2 y1 y2 -> x1 y1 x2 y2
        points = v[:, 4:].reshape(-1, 5, 2)
        lines = np.asarray(numbers, np.int64)[face_rows]
        checked = check_images_and_faces(
            path,
            options,
            [(rels[row], numbers[row]) for row in image_rows],
            owner,
            boxes,
            same=v,
            lines=lines,
            points=points,
            point_names=COLUMNS[4:],
        )
        builder = ManifestBuilder(SOURCE, split, ROOT)
        image_ids: list[str] = []
        for index in np.flatnonzero(checked.keep_image):
            rel = rels[image_rows[index]]
            subset = rel.split("/", 1)[0] if "/" in rel else ""
            image_id = image_id_for(rel)
            builder.add_image(
                image_id,
                rel,
                width=checked.width[index],
                height=checked.height[index],
                tags={"subset": subset} if subset else None,
            )
            image_ids.append(image_id)
        kept = image_order(owner, checked.keep_face)
        add_all_faces(
            builder,
            image_ids,
            FaceArrays(
                boxes=boxes[kept],
                counts=np.bincount(owner[kept], minlength=len(image_rows))[checked.keep_image],
                points=points[kept],
                scheme=SCHEME,
                lines=lines[kept],
            ),
        )
        return builder.build(
            provenance(self.name, path, ROOT, options, records=len(entries), duplicates=checked.repeats)
        )


register(CuhkLfwNet())
