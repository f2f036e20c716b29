"""The landmark scheme registry against the real annotation files: flip permutations are involutions that map a
mirrored real face onto itself, and "left" means what each scheme says it means."""

from __future__ import annotations

import re

import numpy as np
import pytest
from landmark_samples import REAL_SAMPLES, mirror_residual

from facedata.errors import FacedataError
from facedata.fusion.schemes import SCHEMES, LandmarkScheme, layout

ALL = ["mtcnn5", "ibug68", "wflw98", "lapa106", "coco17", "aflw19", "cofw29"]
SIZES = {"mtcnn5": 5, "ibug68": 68, "wflw98": 98, "lapa106": 106, "coco17": 17, "aflw19": 19, "cofw29": 29}
# spec section 6 table: the points a flip leaves in place
FIXED = {"mtcnn5": [2], "ibug68": [8, 27, 28, 29, 30, 33, 51, 57, 62, 66],
         "wflw98": [16, 51, 52, 53, 54, 57, 79, 85, 90, 94], "lapa106": [16, 51, 52, 53, 54, 60, 87, 93, 98, 102],
         "coco17": [0], "aflw19": [13, 16, 18], "cofw29": [20, 21, 24, 25, 26, 27, 28]}
# spec sections 2.6, 5.1 and 6.1, copied literally from mmpose's swap pairs / PFLD's Mirror98.txt
PUBLISHED = {
    "mtcnn5": [1, 0, 2, 4, 3],
    "ibug68": [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 27, 28,
               29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48,
               59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65],
    "wflw98": [32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
               5, 4, 3, 2, 1, 0, 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52, 53,
               54, 59, 58, 57, 56, 55, 72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65, 82, 81, 80, 79,
               78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96],
    "lapa106": [32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,
                6, 5, 4, 3, 2, 1, 0, 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52,
                53, 54, 65, 64, 63, 62, 61, 60, 59, 58, 57, 56, 55, 79, 78, 77, 76, 75, 82, 81, 80, 83, 70, 69, 68,
                67, 66, 73, 72, 71, 74, 90, 89, 88, 87, 86, 85, 84, 95, 94, 93, 92, 91, 100, 99, 98, 97, 96, 103, 102,
                101, 105, 104],
    "coco17": [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
    "aflw19": [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18],
    "cofw29": [1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26, 27,
               28],
}
# COCO bodies: only head and torso are near-symmetric (limbs move on their own), normalised by the shoulders
RIGID = {"coco17": ([0, 1, 2, 3, 4, 5, 6, 11, 12], (5, 6))}


def test_every_scheme_is_registered_with_its_size_and_a_source():
    assert SCHEMES.names() == sorted(ALL)
    for name in ALL:
        scheme = SCHEMES.get(name)
        assert scheme.num_points == SIZES[name] and len(scheme.source) > 20
        assert scheme.left == ("person" if name == "coco17" else "image")
    with pytest.raises(FacedataError, match="unknown landmark scheme 'dlib5'; known: aflw19, coco17"):
        SCHEMES.get("dlib5")


@pytest.mark.parametrize("name", ALL)
def test_flip_permutation_is_the_published_involution_with_its_fixed_points(name):
    scheme = SCHEMES.get(name)
    perm = scheme.flip_permutation
    assert perm.tolist() == PUBLISHED[name]
    assert sorted(perm.tolist()) == list(range(scheme.num_points))
    assert (perm[perm] == np.arange(scheme.num_points)).all()
    assert np.flatnonzero(perm == np.arange(scheme.num_points)).tolist() == FIXED[name]
    # the pair list the label oracle reads is the same permutation
    swapped = np.arange(scheme.num_points)
    for a, b in scheme.flip_pairs:
        swapped[[a, b]] = swapped[[b, a]]
    assert (swapped == perm).all()


@pytest.mark.parametrize("name", ALL)
def test_groups_cover_every_point_once_and_the_interocular_pair_is_a_mirror_pair_of_eye_points(name):
    scheme = SCHEMES.get(name)
    members = sorted(i for group in scheme.groups.values() for i in group)
    assert members == list(range(scheme.num_points))
    a, b = scheme.interocular
    assert scheme.permutation[a] == b and {a, b} <= set(scheme.groups["eyes"])
    assert len(set(scheme.point_names)) == scheme.num_points
    # a point named left_<part>[_k] trades places with a right_<part>[_k'] point (runs are numbered in the
    # scheme's own order, so k' is not k when the right-hand run goes the other way round)
    for i, point in enumerate(scheme.point_names):
        if point.startswith("left_"):
            partner = scheme.point_names[scheme.permutation[i]]
            assert re.sub(r"_\d+$", "", partner) == "right_" + re.sub(r"_\d+$", "", point)[len("left_"):]


@pytest.mark.parametrize("name", ALL)
def test_mirrored_real_faces_map_onto_themselves_only_with_the_permutation(realdata, name):
    """Spec 6: mirror, permute, similarity-align: under 0.2 of the eye distance with the permutation, about
    0.5-0.7 without it."""
    scheme = SCHEMES.get(name)
    points, visible = REAL_SAMPLES[name](realdata)
    subset, pair = RIGID.get(name, (list(range(scheme.num_points)), scheme.interocular))
    where = {old: new for new, old in enumerate(subset)}
    perm = np.array([where[scheme.permutation[i]] for i in subset])
    points, visible = points[:, subset], visible[:, subset]
    labelled = (visible > 0).all(axis=1)
    assert labelled.sum() >= 2, f"{name}: too few fully labelled real faces"
    with_perm = [mirror_residual(p, v, perm, (where[pair[0]], where[pair[1]]))
                 for p, v in zip(points[labelled], visible[labelled], strict=True)]
    without = [mirror_residual(p, v, np.arange(len(subset)), (where[pair[0]], where[pair[1]]))
               for p, v in zip(points[labelled], visible[labelled], strict=True)]
    assert np.median(with_perm) < 0.2
    assert np.median(without) > 0.45 and np.median(without) > 3 * np.median(with_perm)


@pytest.mark.parametrize("name", ALL)
def test_left_means_image_left_in_face_schemes_and_the_persons_left_in_coco(realdata, name):
    """Mean x of the left_* points against their right_* partners on every real face that has both."""
    scheme = SCHEMES.get(name)
    points, visible = REAL_SAMPLES[name](realdata)
    left = [i for i, p in enumerate(scheme.point_names) if p.startswith("left_") and i in scheme.groups["eyes"]]
    right = [scheme.permutation[i] for i in left]
    both = (visible[:, left] > 0).all(axis=1) & (visible[:, right] > 0).all(axis=1)
    assert both.sum() >= 2
    image_left = points[both][:, left, 0].mean(axis=1) < points[both][:, right, 0].mean(axis=1)
    # 100 % on every sample but the 2,000 CUHK lines and the 314 WFLW faces, where a few profiles may cross
    assert image_left.mean() >= 0.98 if scheme.left == "image" else (~image_left).all()


def test_layout_numbers_points_in_runs_and_collects_groups_across_runs():
    names, groups = layout(("eyes", ("left_eye", "right_eye")), ("nose", ("tip",)), ("eyes", ("left_pupil",)))
    assert names == ("left_eye", "right_eye", "tip", "left_pupil")
    assert groups == {"eyes": (0, 1, 3), "nose": (2,)}


def test_a_scheme_with_a_permutation_that_is_not_an_involution_is_refused():
    names, groups = layout(("eyes", ("a", "b", "c")))
    with pytest.raises(ValueError, match="not an involution"):
        LandmarkScheme("bad3", "", names, groups, (1, 2, 0), (0, 1), "image", "test")
    with pytest.raises(ValueError, match="exactly once"):
        LandmarkScheme("bad3", "", names, {"eyes": (0, 1)}, (1, 0, 2), (0, 1), "image", "test")
