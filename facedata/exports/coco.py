"""COCO detection JSON: faces as one category; mtcnn5 points as COCO keypoints, ignore regions as iscrowd.

Boxes are [x, y, w, h] in the manifest's pixel frame (COCO's own: continuous, 0-based); `area` = w * h.
Keypoints are [x, y, v] triples with COCO's visibility codes (0 absent, then x = y = 0; 1 hidden; 2 visible),
the manifest's codes as they are. Image ids are 1-based in manifest order; `file_name` is the rel_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from facedata.exports.base import (
    HIDDEN,
    IGNORE,
    LANDMARK_SCHEME,
    MTCNN5,
    SIZES,
    faces_by_image,
    mtcnn5_points,
    register,
    text_file,
)
from facedata.fusion.schemes import SCHEMES
from facedata.manifest import Manifest

CATEGORY_ID = 1


def _annotation(face, ann_id: int, image_id: int) -> dict:
    w, h = float(face.x2) - float(face.x1), float(face.y2) - float(face.y1)
    ann = {"id": ann_id, "image_id": image_id, "category_id": CATEGORY_ID,
           "bbox": [float(face.x1), float(face.y1), w, h], "area": w * h, "iscrowd": int(bool(face.ignore))}
    points = mtcnn5_points(face)
    if points is not None:
        keypoints = []
        for (x, y), v in zip(*points, strict=True):
            keypoints += [float(x), float(y), int(v)] if v else [0.0, 0.0, 0]
        ann["keypoints"] = keypoints
        ann["num_keypoints"] = int((points[1] > 0).sum())
    return ann


class CocoExport:
    name = "coco"
    description = "COCO detection JSON (one 'face' category; mtcnn5 points as keypoints; ignore as iscrowd)"
    holds = frozenset({MTCNN5, HIDDEN, IGNORE, SIZES})
    partly: dict = {}
    needs_sizes = False
    single_file = True

    def write(self, manifest: Manifest, out: Path) -> None:
        images, annotations = [], []
        groups = faces_by_image(manifest)
        for number, image in enumerate(manifest.images.itertuples(index=False), start=1):
            entry = {"id": number, "file_name": image.rel_path}
            if pd.notna(image.width) and pd.notna(image.height):
                entry.update(width=int(image.width), height=int(image.height))
            images.append(entry)
            group = groups.get(image.image_id)
            if group is not None:
                first = len(annotations) + 1
                annotations += [_annotation(face, first + i, number) for i, face in enumerate(group.itertuples())]
        category = {"id": CATEGORY_ID, "name": "face", "supercategory": "face"}
        if any("keypoints" in a for a in annotations):
            category["keypoints"] = list(SCHEMES.get(LANDMARK_SCHEME).point_names)
            category["skeleton"] = []
        with text_file(out) as fh:
            json.dump({"images": images, "annotations": annotations, "categories": [category]}, fh)


register(CocoExport())
