"""Small independent readers for the real landmark samples in realdata (not facedata's parsers), and the
mirror check of the landmark-formats spec, section 6, shared by test_schemes.py and test_fusion_maps.py.

Each reader returns (points (N, S, 2) float64 in the file's own coordinates, visible (N, S) int8: 0 absent,
1 hidden, 2 visible). The .pts reader keeps the 1-based coordinates: the checks here are shift-invariant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

Sample = tuple[np.ndarray, np.ndarray]


def _all_visible(points: np.ndarray) -> Sample:
    return points, np.full(points.shape[:2], 2, np.int8)


def cuhk_list(realdata: Path, limit: int = 2000) -> Sample:
    """CUHK trainImageList.txt: path, box x1 x2 y1 y2, then 5 points x y."""
    lines = (realdata / "lfw_net_7876" / "trainImageList.txt").read_text().splitlines()[:limit]
    return _all_visible(np.array([line.split()[5:15] for line in lines], np.float64).reshape(-1, 5, 2))


def ibug_pts(realdata: Path) -> Sample:
    """Every 68-point .pts file: the 300-VW ones with their version/n_points/{ } header, the 300-W ones without."""
    faces = []
    for path in sorted([*realdata.glob("300w/spinkoo/**/*.pts"), *realdata.glob("300vw/mmpose/*/annot/*.pts")]):
        lines = [line.strip() for line in path.read_text().splitlines()]
        if "{" in lines:
            lines = lines[lines.index("{") + 1 : lines.index("}")]
        faces.append([line.split() for line in lines if line])
    return _all_visible(np.array(faces, np.float64))


def wflw_list(realdata: Path, subset: str = "expression") -> Sample:
    """WFLW list_98pt_test_<subset>.txt: 196 coordinates then the image path."""
    path = realdata / "wflw" / "WFLW_annotations" / "list_98pt_test" / f"list_98pt_test_{subset}.txt"
    rows = [line.split()[:196] for line in path.read_text().splitlines()]
    return _all_visible(np.array(rows, np.float64).reshape(-1, 98, 2))


def coco_style(path: Path) -> Sample:
    """COCO-style keypoints json (COCO persons and mmpose's face re-exports): x, y, v per point."""
    annotations = json.loads(path.read_text())["annotations"]
    keypoints = np.array([a["keypoints"] for a in annotations], np.float64).reshape(len(annotations), -1, 3)
    return keypoints[..., :2], keypoints[..., 2].astype(np.int8)


# scheme -> reader of its real sample (every scheme with one)
REAL_SAMPLES: dict[str, Callable[[Path], Sample]] = {
    "mtcnn5": cuhk_list,
    "ibug68": ibug_pts,
    "wflw98": wflw_list,
    "lapa106": lambda root: coco_style(root / "lapa" / "mmpose" / "test_lapa.json"),
    "coco17": lambda root: coco_style(root / "coco_val2017" / "coco_mini" / "annotations"
                                      / "person_keypoints_val2017.json"),
    "aflw19": lambda root: coco_style(root / "aflw" / "mmpose" / "test_aflw.json"),
    "cofw29": lambda root: coco_style(root / "cofw" / "mmpose" / "test_cofw.json"),
}


def mirror_residual(points: np.ndarray, visible: np.ndarray, perm: np.ndarray, pair: tuple[int, int]) -> float:
    """Mirror one face (x -> -x), reorder it by `perm`, fit it back onto the face with a least-squares
    similarity (rotation, scale, shift: no reflection) and return the median point distance over the
    distance of the `pair` points. Only points labelled together with their mirror partner count."""
    z = points[:, 0] + 1j * points[:, 1]
    mirrored = (-points[:, 0] + 1j * points[:, 1])[perm]
    keep = (visible > 0) & (visible[perm] > 0)
    a, b = z[keep] - z[keep].mean(), mirrored[keep] - mirrored[keep].mean()
    fitted = (a * np.conj(b)).sum() / (np.abs(b) ** 2).sum() * b
    return float(np.median(np.abs(fitted - a)) / abs(z[pair[0]] - z[pair[1]]))
