"""Named landmark schemes: point names and groups, the horizontal-flip permutation, the inter-ocular pair and
where each comes from. Adding a scheme is adding one `register(LandmarkScheme(...))` entry below.

"Left" in a point name means **image-left** in every face scheme (mtcnn5, ibug68, wflw98, lapa106, aflw19,
cofw29: the subject's right eye is their "left eye") and **the person's left** in coco17 (COCO's `left_eye` is
image-right for a person facing the camera). `LandmarkScheme.left` records which, and the tests check it on the
real files. Indices are 0-based; the permutations and checks are in the landmark-formats spec, sections 6-7.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from facedata.registry import Registry


@dataclass(frozen=True, eq=False)
class LandmarkScheme:
    """One point order. `permutation[i]` is the point that lands on slot i after a horizontal flip:
    mirrored = points[permutation] once x has been mirrored (x -> W - 1 - x in pixel-centre coordinates)."""

    name: str
    description: str
    point_names: tuple[str, ...]
    groups: dict[str, tuple[int, ...]]  # contour / brows / eyes / nose / mouth (coco17: its own body parts)
    permutation: tuple[int, ...]
    interocular: tuple[int, int]  # the two points whose distance normalises errors (NME), e.g. outer eye corners
    left: Literal["image", "person"]  # what "left" in point_names means
    source: str  # where the order, the permutation and the inter-ocular pair come from

    def __post_init__(self) -> None:
        n = len(self.point_names)
        perm = np.asarray(self.permutation)
        if sorted(self.permutation) != list(range(n)) or not (perm[perm] == np.arange(n)).all():
            raise ValueError(f"scheme {self.name!r}: flip permutation is not an involution of {n} points")
        grouped = sorted(i for members in self.groups.values() for i in members)
        if grouped != list(range(n)) or not all(0 <= i < n for i in self.interocular):
            raise ValueError(f"scheme {self.name!r}: groups must cover each of the {n} points exactly once")

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """perm such that mirrored_points = points[perm] (with x -> width - x applied separately)."""
        return np.asarray(self.permutation, dtype=np.int64)

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """The (a, b) index pairs, a < b, that trade places when the image is mirrored."""
        return tuple((a, b) for a, b in enumerate(self.permutation) if a < b)


SCHEMES: Registry[LandmarkScheme] = Registry("landmark scheme")


def register(scheme: LandmarkScheme) -> LandmarkScheme:
    return SCHEMES.register(scheme.name)(scheme)


def numbered(prefix: str, count: int) -> tuple[str, ...]:
    """prefix_0 .. prefix_{count-1}, numbered in the scheme's own order along the part."""
    return tuple(f"{prefix}_{k}" for k in range(count))


def layout(*parts: tuple[str, Sequence[str]]) -> tuple[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """Point names and groups from consecutive (group, names) runs; a group may appear in several runs."""
    names: list[str] = []
    groups: dict[str, list[int]] = {}
    for group, run in parts:
        groups.setdefault(group, []).extend(range(len(names), len(names) + len(run)))
        names.extend(run)
    return tuple(names), {g: tuple(members) for g, members in groups.items()}


def _scheme(name: str, description: str, parts: Sequence[tuple[str, Sequence[str]]], permutation: Sequence[int],
            interocular: tuple[int, int], source: str, left: Literal["image", "person"] = "image") -> LandmarkScheme:
    point_names, groups = layout(*parts)
    return register(LandmarkScheme(name, description, point_names, groups, tuple(permutation), interocular, left,
                                   source))


def _reversed_run(first: int, last: int) -> list[int]:
    return list(range(last, first - 1, -1))


# CUHK facial points (LFW 5590 / net_7876) as used by MTCNN and RetinaFace: 0 is the image-left eye in
# 10,000 / 10,000 lines of the CUHK train list (spec 6).
MTCNN5 = _scheme(
    "mtcnn5", "MTCNN / CUHK 5 points: eye centres, nose tip, mouth corners",
    [("eyes", ("left_eye", "right_eye")), ("nose", ("nose",)), ("mouth", ("left_mouth_corner", "right_mouth_corner"))],
    [1, 0, 2, 4, 3], (0, 1),
    "AITTSMD/MTCNN-Tensorflow@3b3934d3:prepare_data/Landmark_utils.py:53-54 (swap 0<->1, 3<->4); "
    "interocular = the eye centres",
)

# iBUG 300-W / 300-VW / 300W-LP / AFLW2000-3D / COCO-WholeBody face: 0-16 jaw (8 chin), 17-21 / 22-26 brows
# outer->inner / inner->outer, 27-30 bridge (30 tip), 31-35 nostrils, 36-41 / 42-47 eyes (36, 45 outer
# corners), 48-59 outer lip (48, 54 corners), 60-67 inner lip.
IBUG68 = _scheme(
    "ibug68", "iBUG 300-W 68 points",
    [("contour", numbered("jaw", 17)), ("brows", numbered("left_brow", 5) + numbered("right_brow", 5)),
     ("nose", numbered("nose_bridge", 4) + numbered("nostrils", 5)),
     ("eyes", numbered("left_eye", 6) + numbered("right_eye", 6)),
     ("mouth", numbered("outer_lip", 12) + numbered("inner_lip", 8))],
    [*_reversed_run(0, 16), *_reversed_run(17, 26), 27, 28, 29, 30, *_reversed_run(31, 35),
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, *_reversed_run(48, 54), *_reversed_run(55, 59),
     *_reversed_run(60, 64), 67, 66, 65],
    (36, 45),
    "order: ibug.doc.ic.ac.uk 300-W mark-up (checked on 20 real .pts files); permutation: "
    "open-mmlab/mmpose@759b39c1:configs/_base_/datasets/300w.py (= 300vw.py, coco_wholebody_face.py); "
    "interocular: mmpose KeypointNME DEFAULT_KEYPOINT_INDICES['300w'] = outer eye corners",
)

# WFLW and LaPa share the contour, the two-edged brows, the nose bridge, the mouth and the trailing pupils.
_CONTOUR_33 = ("contour", numbered("contour", 33))
_BROWS_18 = ("brows", numbered("left_brow_upper", 5) + numbered("left_brow_lower", 4)
             + numbered("right_brow_upper", 5) + numbered("right_brow_lower", 4))
_MOUTH_20 = ("mouth", numbered("outer_lip", 12) + numbered("inner_lip", 8))
_PUPILS = ("eyes", ("left_pupil", "right_pupil"))
_CONTOUR_BROWS_BRIDGE_FLIP = [*_reversed_run(0, 32), 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33,
                              41, 40, 39, 38, 51, 52, 53, 54]


def _mouth_pupils_flip(outer: int) -> list[int]:
    """Flip of the 12 + 8 lip points starting at `outer`, then the two pupils."""
    inner = outer + 12
    return [*_reversed_run(outer, outer + 6), *_reversed_run(outer + 7, outer + 11),
            *_reversed_run(inner, inner + 4), inner + 7, inner + 6, inner + 5, inner + 9, inner + 8]


# WFLW: 0-32 contour (16 chin); brows 33-37 upper + 38-41 lower (image-left), 42-46 upper + 47-50 lower; 51-54
# bridge (54 tip), 55-59 nostrils; 60-67 / 68-75 eyes (60, 72 outer corners); 76-87 outer lip (76, 82 corners),
# 88-95 inner lip; 96 / 97 pupils.
WFLW98 = _scheme(
    "wflw98", "WFLW 98 points",
    [_CONTOUR_33, _BROWS_18, ("nose", numbered("nose_bridge", 4) + numbered("nostrils", 5)),
     ("eyes", numbered("left_eye", 8) + numbered("right_eye", 8)), _MOUTH_20, _PUPILS],
    [*_CONTOUR_BROWS_BRIDGE_FLIP, *_reversed_run(55, 59),
     72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65, *_mouth_pupils_flip(76)],
    (60, 72),
    "order: WFLW README + spec 1.5 (checked on 314 real faces); permutation: mmpose@759b39c1 wflw.py, "
    "identical to polarisZhao/PFLD-pytorch@b00750c3:data/Mirror98.txt; interocular: mmpose "
    "DEFAULT_KEYPOINT_INDICES['wflw'] = outer eye corners",
)

# LaPa (= JD-106 as used by JD AI; other "106-point" orders differ and need their own id): WFLW's 98 with
# nose sides 55-57 / 63-65 and eye centres 74 / 83 inserted; 104 / 105 pupils (duplicates of 74 / 83).
LAPA106 = _scheme(
    "lapa106", "LaPa / JD-106 points",
    [_CONTOUR_33, _BROWS_18, ("nose", numbered("nose_bridge", 4) + numbered("nose_lower", 11)),
     ("eyes", numbered("left_eye", 8) + ("left_eye_centre",) + numbered("right_eye", 8) + ("right_eye_centre",)),
     _MOUTH_20, _PUPILS],
    [*_CONTOUR_BROWS_BRIDGE_FLIP, *_reversed_run(55, 65),
     79, 78, 77, 76, 75, 82, 81, 80, 83, 70, 69, 68, 67, 66, 73, 72, 71, 74, *_mouth_pupils_flip(84)],
    (66, 79),
    "order: spec 2.5 (mmpose lapa.py swap pairs + 2 real faces; JDAI-CV/FaceX-Zoo@f8f3cf1e read_info.py); "
    "permutation: open-mmlab/mmpose@759b39c1:configs/_base_/datasets/lapa.py; interocular: mmpose "
    "DEFAULT_KEYPOINT_INDICES['lapa'] = outer eye corners",
)

# COCO person keypoints: "left" is the PERSON's left (image-right for a person facing the camera).
COCO17 = _scheme(
    "coco17", "COCO person keypoints (left = the person's left)",
    [("nose", ("nose",)), ("eyes", ("left_eye", "right_eye")), ("ears", ("left_ear", "right_ear")),
     ("body", tuple(f"{side}_{part}" for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
                    for side in ("left", "right")))],
    [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
    (1, 2),
    "order: cocodataset.org data format (person_keypoints categories[0].keypoints); permutation: "
    "open-mmlab/mmpose@759b39c1:configs/_base_/datasets/coco.py; interocular: the two eyes",
    left="person",
)

# AFLW 19 points (mmpose re-export; the AFLW 21 without the ears): brows 0-2 / 3-5 outer->inner->outer, eyes
# 6-8 (outer, centre, inner) / 9-11 (inner, centre, outer), nose 12-14 (wing, tip, wing), mouth 15-17 (corner,
# centre, corner), 18 chin.
AFLW19 = _scheme(
    "aflw19", "AFLW 19 points",
    [("brows", numbered("left_brow", 3) + numbered("right_brow", 3)),
     ("eyes", ("left_eye_outer", "left_eye_centre", "left_eye_inner",
               "right_eye_inner", "right_eye_centre", "right_eye_outer")),
     ("nose", ("left_nose_wing", "nose_tip", "right_nose_wing")),
     ("mouth", ("left_mouth_corner", "mouth_centre", "right_mouth_corner")),
     ("contour", ("chin",))],
    [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18],
    (6, 11),
    "order: spec 6.1 (read off the 2 real mmpose faces); permutation: open-mmlab/mmpose@759b39c1:"
    "configs/_base_/datasets/aflw.py; interocular: outer eye corners (AFLW benchmarks normalise by box size)",
)

# COFW 29 (the LFPW 29-point mark-up), decoded on the 2 real mmpose faces: pairs are interleaved left/right.
COFW29 = _scheme(
    "cofw29", "COFW 29 points",
    [("brows", ("left_brow_outer", "right_brow_outer", "left_brow_inner", "right_brow_inner",
                "left_brow_top", "left_brow_bottom", "right_brow_top", "right_brow_bottom")),
     ("eyes", ("left_eye_outer", "right_eye_outer", "left_eye_inner", "right_eye_inner",
               "left_eye_top", "left_eye_bottom", "right_eye_top", "right_eye_bottom", "left_pupil", "right_pupil")),
     ("nose", ("left_nose_wing", "right_nose_wing", "nose_tip", "nose_bottom")),
     ("mouth", ("left_mouth_corner", "right_mouth_corner", "upper_lip_top", "upper_lip_bottom",
                "lower_lip_top", "lower_lip_bottom")),
     ("contour", ("chin",))],
    [1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26, 27, 28],
    (8, 9),
    "order: Burgos-Artizzu et al. ICCV 2013 (LFPW 29-point mark-up), decoded on the 2 real mmpose faces; "
    "permutation: open-mmlab/mmpose@759b39c1:configs/_base_/datasets/cofw.py; interocular: mmpose "
    "DEFAULT_KEYPOINT_INDICES['cofw'] = outer eye corners",
)
