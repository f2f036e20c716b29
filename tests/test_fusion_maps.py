"""Index maps between landmark schemes: the published tables, left/right consistency with both flip
permutations, masks instead of sentinels, routes and composition, checked on the real samples against a
plain per-point reference written here from the documented rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from landmark_samples import REAL_SAMPLES

from facedata.errors import FacedataError
from facedata.fusion.convert import conversion, route
from facedata.fusion.maps import MAPS, IndexMap
from facedata.fusion.schemes import SCHEMES

ALL_MAPS = [name for name, _ in MAPS]

# spec 7.1-7.4, copied literally
W98_TO_68 = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 33, 34, 35, 36, 37, 42, 43, 44, 45, 46,
             51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75,
             76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95]
WFLW_HOLES = [*range(1, 32, 2), 38, 39, 40, 41, 47, 48, 49, 50, 62, 66, 70, 74, 96, 97]
LAPA106_TO_W98 = [*range(55), 58, 59, 60, 61, 62, *range(66, 74), *range(75, 83), *range(84, 106)]
JD106_TO_68 = [[1, 2], [3, 4], [5, 6], 7, 9, 11, [12, 13], 14, 16, 18, [19, 20], 21, 23, 25, [26, 27], [28, 29],
               [30, 31], 33, 34, 35, 36, 37, 42, 43, 44, 45, 46, 51, 52, 53, 54, 58, 59, 60, 61, 62,
               66, 67, 69, 70, 71, 73, 75, 76, 78, 79, 80, 82,
               84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103]
TO_5 = {"ibug68": [[36, 37, 38, 39, 40, 41], [42, 43, 44, 45, 46, 47], 30, 48, 54],
        "wflw98": [[60, 61, 62, 63, 64, 65, 66, 67], [68, 69, 70, 71, 72, 73, 74, 75], 54, 76, 82],
        "lapa106": [[66, 67, 68, 69, 70, 71, 72, 73], [75, 76, 77, 78, 79, 80, 81, 82], 54, 84, 90],
        "coco17": [2, 1, 0, None, None]}


def as_list(entry) -> list[int]:
    return [] if entry is None else [entry] if isinstance(entry, int) else list(entry)


def flip_errors(index_map: IndexMap) -> list[int]:
    """Target points j where M[perm_T[j]] != perm_S[M[j]] (as sets of sources)."""
    perm_s = SCHEMES.get(index_map.source).permutation
    perm_t = SCHEMES.get(index_map.target).permutation
    entries = index_map.entries
    return [j for j in range(len(entries))
            if sorted(as_list(entries[perm_t[j]])) != sorted(perm_s[i] for i in as_list(entries[j]))]


def reference(entries, points: np.ndarray, visible: np.ndarray):
    """One face at a time, one target point at a time: the documented rule."""
    n, n_target = len(points), len(entries)
    out, vis, mask = np.full((n, n_target, 2), np.nan), np.zeros((n, n_target), np.int8), np.zeros((n, n_target), bool)
    xy = points.reshape(n, -1, 2)
    for f in range(n):
        for j, entry in enumerate(entries):
            src = as_list(entry)
            if src and all(visible[f, i] > 0 and math.isfinite(xy[f, i, 0]) and math.isfinite(xy[f, i, 1])
                           for i in src):
                out[f, j] = xy[f, src].mean(axis=0)
                vis[f, j], mask[f, j] = min(visible[f, i] for i in src), True
    return out.reshape(n, -1), vis, mask


def flat(sample):
    points, visible = sample
    return points.reshape(len(points), -1), visible


def assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-9)  # NaN where NaN
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])


@pytest.mark.parametrize("name", ALL_MAPS)
def test_every_map_agrees_with_both_flip_permutations(name):
    assert flip_errors(MAPS.get(name)) == []


def test_the_flip_check_catches_a_map_that_reads_one_side_in_the_other_sides_order():
    # the image-right eye read outer -> inner like the image-left one: 42 <- 72 (outer) instead of 68 (inner)
    wrong_eye = [*W98_TO_68[:42], 72, 71, 69, 68, 75, 73, *W98_TO_68[48:]]
    assert flip_errors(IndexMap("wflw98", "ibug68", tuple(wrong_eye), "test")) == [*range(36, 48)]


def left_is_left(scheme_name: str, points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per face with both eyes: is the mean of the left_* eye points image-left of the right_* ones?"""
    scheme = SCHEMES.get(scheme_name)
    pairs = [(i, scheme.permutation[i]) for i in scheme.groups["eyes"] if scheme.point_names[i].startswith("left_")]
    left, right = map(list, zip(*[(a, b) for a, b in pairs if (mask[:, a] & mask[:, b]).any()], strict=True))
    xy = points.reshape(len(points), -1, 2)
    both = mask[:, left].all(axis=1) & mask[:, right].all(axis=1)
    return xy[both][:, left, 0].mean(axis=1) < xy[both][:, right, 0].mean(axis=1)


@pytest.mark.parametrize("name", ALL_MAPS)
def test_mapped_real_faces_keep_each_side_where_the_target_scheme_says(realdata, name):
    """The flip check cannot see a map that swaps a whole left/right pair consistently; real faces can."""
    index_map = MAPS.get(name)
    points, visible = flat(REAL_SAMPLES[index_map.source](realdata))
    out, _, mask = conversion(index_map.source, index_map.target).apply(points, visible)
    image_left = left_is_left(index_map.target, out, mask)
    assert len(image_left) >= 2 and image_left.mean() >= 0.98
    swapped = IndexMap(index_map.source, index_map.target,
                       tuple(index_map.entries[i] for i in SCHEMES.get(index_map.target).permutation), "test")
    assert flip_errors(swapped) == []  # passes the flip check ...
    flipped, _, flipped_mask = reference(swapped.entries, points, visible)
    assert left_is_left(index_map.target, flipped, flipped_mask).mean() < 0.02  # ... but not this one


def test_the_published_tables():
    assert list(MAPS.get("wflw98->ibug68").entries) == W98_TO_68
    to98 = MAPS.get("ibug68->wflw98")
    assert list(to98.unmapped) == WFLW_HOLES and len(WFLW_HOLES) == 30
    assert all(to98.entries[W98_TO_68[k]] == k for k in range(68))  # the same PFPLD table, scattered
    assert list(MAPS.get("lapa106->wflw98").entries) == LAPA106_TO_W98
    back = MAPS.get("wflw98->lapa106")
    assert list(back.unmapped) == [55, 56, 57, 63, 64, 65, 74, 83]
    assert all(back.entries[LAPA106_TO_W98[j]] == j for j in range(98))
    assert [as_list(e) for e in MAPS.get("lapa106->ibug68").entries] == [as_list(e) for e in JD106_TO_68]
    for source, table in TO_5.items():
        assert [as_list(e) for e in MAPS.get(f"{source}->mtcnn5").entries] == [as_list(e) for e in table]
    assert {m.source for _, m in MAPS if m.target == "mtcnn5"} == set(SCHEMES.names()) - {"mtcnn5"}


def test_68_to_98_to_68_is_the_identity_on_real_faces(realdata):
    points, visible = flat(REAL_SAMPLES["ibug68"](realdata))
    there = conversion("ibug68", "wflw98")
    wide = there.apply(points, visible)
    assert np.isnan(wide[0].reshape(len(points), 98, 2)[:, WFLW_HOLES]).all()
    assert (~wide[2][:, WFLW_HOLES]).all() and (wide[1][:, WFLW_HOLES] == 0).all() and wide[2].sum() == 68 * len(points)
    back = conversion("wflw98", "ibug68").apply(*wide[:2])
    np.testing.assert_array_equal(back[0], points)
    assert back[2].all() and (back[1] == 2).all()
    assert np.array_equal(there.then(conversion("wflw98", "ibug68")).dense(), np.eye(68))


@pytest.mark.parametrize("name", ALL_MAPS)
def test_apply_matches_the_per_point_rule_on_real_faces_with_points_knocked_out(realdata, name):
    index_map = MAPS.get(name)
    points, visible = flat(REAL_SAMPLES[index_map.source](realdata))
    points, visible = points[:60].copy(), visible[:60].copy()
    rng = np.random.default_rng(9)
    n_source = visible.shape[1]
    visible[rng.random(visible.shape) < 0.1] = 0  # absent
    visible[(rng.random(visible.shape) < 0.1) & (visible > 0)] = 1  # labelled, hidden
    holes = rng.random(visible.shape) < 0.05
    points.reshape(len(points), n_source, 2)[holes] = np.nan  # NaN counts as absent whatever visible says
    got = conversion(index_map.source, index_map.target).apply(points, visible)
    assert_same(got, reference(index_map.entries, points, visible))
    assert (np.isnan(got[0].reshape(len(points), -1, 2)).all(axis=2) == ~got[2]).all()  # NaN exactly where masked


def test_a_mean_is_masked_unless_all_its_sources_are_present(realdata):
    points, visible = flat(REAL_SAMPLES["wflw98"](realdata))
    points, visible = points[:3].astype(np.float32), visible[:3].copy()
    visible[0, 63] = 0  # one point of the image-left eye contour
    visible[1, 70] = 1  # hidden, not absent
    out, vis, mask = conversion("wflw98", "mtcnn5").apply(points, visible)
    assert out.dtype == np.float32 and vis.dtype == np.int8
    assert mask.tolist() == [[False, True, True, True, True], [True] * 5, [True] * 5]
    assert np.isnan(out[0, :2]).all() and vis[0].tolist() == [0, 2, 2, 2, 2] and vis[1].tolist() == [2, 1, 2, 2, 2]
    np.testing.assert_allclose(out[2, 0:2], points[2].reshape(98, 2)[60:68].mean(axis=0), rtol=1e-6)


def test_coco_persons_map_their_left_eye_to_the_image_right_slot_and_have_no_mouth(realdata):
    points, visible = flat(REAL_SAMPLES["coco17"](realdata))
    out, vis, mask = conversion("coco17", "mtcnn5").apply(points, visible)
    assert (~mask[:, 3:]).all() and np.isnan(out[:, 6:]).all()
    eyes = (visible[:, 1] > 0) & (visible[:, 2] > 0)
    assert eyes.sum() >= 20 and (mask[:, :2] == (visible[:, [2, 1]] > 0)).all()
    assert (out[eyes, 0] < out[eyes, 2]).all()  # slot 0 is image-left, as in the CUHK lists
    assert np.isnan(out[~mask.repeat(2, axis=1)]).all()  # v = 0 keypoints are (0, 0) in COCO: never copied


def test_routes_compose_registered_maps_and_mask_what_any_step_lacks(realdata):
    assert route("ibug68", "lapa106") == ("ibug68", "wflw98", "lapa106")
    up = conversion("ibug68", "lapa106")
    assert len(up.unmapped) == 38  # spec 7.5: 30 WFLW holes + 8 LaPa-only points
    points, visible = flat(REAL_SAMPLES["ibug68"](realdata))
    step = reference(MAPS.get("ibug68->wflw98").entries, points, visible)
    assert_same(up.apply(points, visible), reference(MAPS.get("wflw98->lapa106").entries, step[0], step[1]))


def test_lapa_to_mtcnn5_through_ibug68_equals_the_two_maps_one_after_the_other(realdata):
    points, visible = flat(REAL_SAMPLES["lapa106"](realdata))
    visible = visible.copy()
    visible[0, 69] = 0  # an eye point the 6-point 68 eye uses
    via = conversion("lapa106", "mtcnn5", via=["ibug68"])
    assert via.route == ("lapa106", "ibug68", "mtcnn5")
    step = reference(MAPS.get("lapa106->ibug68").entries, points, visible)
    got = via.apply(points, visible)
    assert_same(got, reference(MAPS.get("ibug68->mtcnn5").entries, step[0], step[1]))
    assert got[2][0].tolist() == [False, True, True, True, True]
    # the direct map (8-point eye mean) agrees with it up to the eye contour sampling (spec 7.4: < 0.024 IOD)
    direct = conversion("lapa106", "mtcnn5").apply(points, visible)[0].reshape(-1, 5, 2)
    xy = points.reshape(-1, 106, 2)
    iod = np.linalg.norm(xy[:, 66] - xy[:, 79], axis=1)
    gap = np.linalg.norm(direct[1:, :2] - got[0].reshape(-1, 5, 2)[1:, :2], axis=2) / iod[1:, None]
    assert gap.max() < 0.03


def test_jd_map_and_the_route_through_wflw98_differ_only_on_the_jaw():
    jd = conversion("lapa106", "ibug68").dense()
    through = conversion("lapa106", "ibug68", via=["wflw98"]).dense()
    differ = np.flatnonzero((jd != through).any(axis=1)).tolist()
    assert differ == [*range(0, 7), *range(10, 17)]  # spec 7.3


def test_derived_eye_centres_lie_on_the_annotated_pupils(realdata):
    """wflw98 -> mtcnn5 eye centre (contour mean) against WFLW's own pupils 96/97 (spec 7.4: median 0.023)."""
    points, visible = flat(REAL_SAMPLES["wflw98"](realdata))
    eyes = conversion("wflw98", "mtcnn5").apply(points, visible)[0].reshape(-1, 5, 2)[:, :2]
    xy = points.reshape(-1, 98, 2)
    gap = np.linalg.norm(eyes - xy[:, [96, 97]], axis=2) / np.linalg.norm(xy[:, 60] - xy[:, 72], axis=1)[:, None]
    assert np.median(gap) < 0.05


def test_no_route_is_a_clear_error_naming_both_schemes():
    with pytest.raises(FacedataError, match="no landmark map from mtcnn5 to ibug68"):
        conversion("mtcnn5", "ibug68")
    with pytest.raises(FacedataError, match="no landmark map from coco17 to wflw98"):
        route("coco17", "wflw98")
    with pytest.raises(FacedataError, match=r"no landmark map from mtcnn5 to wflw98 \(asked for the route "
                                            r"lapa106 -> mtcnn5 -> wflw98\)"):
        conversion("lapa106", "wflw98", via=["mtcnn5"])
    with pytest.raises(FacedataError, match="unknown landmark scheme 'jd106'"):
        conversion("jd106", "wflw98")


def test_two_equally_short_routes_are_refused_not_guessed(monkeypatch):
    for target, n in (("ibug68", 68), ("lapa106", 106)):
        extra = IndexMap("aflw19", target, (None,) * n, "test")
        monkeypatch.setitem(MAPS._items, extra.name, extra)
    with pytest.raises(FacedataError, match=r"several equally short .*\(aflw19 -> ibug68 -> wflw98; "
                                            r"aflw19 -> lapa106 -> wflw98\)"):
        conversion("aflw19", "wflw98")
    assert conversion("aflw19", "wflw98", via=["lapa106"]).route == ("aflw19", "lapa106", "wflw98")


def test_points_of_the_wrong_scheme_are_refused_with_the_counts():
    with pytest.raises(FacedataError, match=r"scheme 'wflw98' has 98 points, need points \(N, 196\)"):
        conversion("wflw98", "ibug68").apply(np.zeros((2, 136)), np.ones((2, 68)))
    out, vis, mask = conversion("wflw98", "ibug68").apply(np.zeros((0, 196)), np.zeros((0, 98)))
    assert out.shape == (0, 136) and vis.shape == mask.shape == (0, 68)
