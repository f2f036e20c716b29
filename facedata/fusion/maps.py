"""Index maps between landmark schemes, as data: per target point a source index, a tuple of source indices
(their mean) or None (no source: the point comes out NaN with mask 0, never a sentinel value).

Adding a map is adding one `register(IndexMap(...))` entry; `facedata.fusion.convert` finds routes over the
registered maps, composes them and applies them. Every map commutes with both flip permutations (checked by
tests/test_fusion_maps.py), so it never swaps image-left and image-right. Sources: landmark-formats spec, 7.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from facedata.fusion.schemes import SCHEMES
from facedata.registry import Registry

Entry = int | tuple[int, ...] | None


@dataclass(frozen=True, eq=False)
class IndexMap:
    source: str
    target: str
    entries: tuple[Entry, ...]  # one per target point, in the target scheme's order
    origin: str  # where the table comes from

    def __post_init__(self) -> None:
        n_source, n_target = SCHEMES.get(self.source).num_points, SCHEMES.get(self.target).num_points
        if len(self.entries) != n_target:
            raise ValueError(f"map {self.name}: {len(self.entries)} entries for {n_target} target points")
        used = [i for e in self.entries for i in sources(e)]
        if not all(0 <= i < n_source for i in used) or any(e == () for e in self.entries):
            raise ValueError(f"map {self.name}: a source index is outside 0..{n_source - 1} or a mean is empty")

    @property
    def name(self) -> str:
        return map_name(self.source, self.target)

    @property
    def unmapped(self) -> tuple[int, ...]:
        """Target points without a source (always masked)."""
        return tuple(j for j, e in enumerate(self.entries) if e is None)


def sources(entry: Entry) -> tuple[int, ...]:
    """The source indices one entry reads (empty for None)."""
    if entry is None:
        return ()
    return entry if isinstance(entry, tuple) else (entry,)


def map_name(source: str, target: str) -> str:
    return f"{source}->{target}"


MAPS: Registry[IndexMap] = Registry("landmark map")


def register(index_map: IndexMap) -> IndexMap:
    return MAPS.register(index_map.name)(index_map)


def _map(source: str, target: str, entries: Iterable[Entry], origin: str) -> IndexMap:
    return register(IndexMap(source, target, tuple(entries), origin))


def _scatter(n_target: int, pairs: Iterable[tuple[int, int]]) -> list[Entry]:
    """Gather entries from a published scatter table of (source index, target index) pairs."""
    entries: list[Entry] = [None] * n_target
    for k, j in pairs:
        entries[j] = k
    return entries


def _runs(*runs: Sequence[int] | range) -> list[int]:
    return [i for run in runs for i in run]


# 300W-LP <-> WFLW table of PFPLD (pts_68_to_98), stated as 68 -> 98 scatter pairs. The 30 WFLW points with no
# 68-point counterpart (odd contour points, lower brow edges, eyelid mid-points 62/66/70/74, pupils) stay None;
# PFPLD writes -256 into them instead.
_IBUG_TO_WFLW_PAIRS = [
    *((k, 2 * k) for k in range(17)),                                   # jaw -> every other contour point
    *((k, k - 17 + 33) for k in range(17, 22)),                         # image-left brow -> its upper edge
    *((k, k - 22 + 42) for k in range(22, 27)),                         # image-right brow -> its upper edge
    *((k, k - 27 + 51) for k in range(27, 36)),                         # nose bridge and nostrils
    *zip(range(36, 42), (60, 61, 63, 64, 65, 67), strict=True),         # image-left eye
    *zip(range(42, 48), (68, 69, 71, 72, 73, 75), strict=True),         # image-right eye
    *((k, k - 48 + 76) for k in range(48, 68)),                         # mouth
]
IBUG68_TO_WFLW98 = _map(
    "ibug68", "wflw98", _scatter(98, _IBUG_TO_WFLW_PAIRS),
    "hanson-young/nniefacelib@d014ffe1:PFPLD/data/create_300W_LP.py:33-67 pts_68_to_98 (same in create_AFLW2000.py)",
)

# The inverse gather list ("WFLW -> 68"): every 68-point slot has a WFLW source.
WFLW98_TO_IBUG68 = _map(
    "wflw98", "ibug68", [j for _, j in sorted(_IBUG_TO_WFLW_PAIRS)],
    "inverse of PFPLD's pts_68_to_98; the same literal list is in PFPLD/pfld/loss.py:58 (commented out)",
)

# PFPLD drops LaPa points 55, 56, 57, 63, 64, 65 (nose sides) and 74, 83 (eye centres; duplicates of the
# pupils 104/105) and reads the other 98, in LaPa order, as WFLW-98.
_LAPA_ONLY = (55, 56, 57, 63, 64, 65, 74, 83)
_LAPA_FOR_WFLW = [i for i in range(106) if i not in _LAPA_ONLY]
LAPA106_TO_WFLW98 = _map(
    "lapa106", "wflw98", _LAPA_FOR_WFLW,
    "hanson-young/nniefacelib@d014ffe1:PFPLD/data/view_lapa.py:21,36-41 (drap_index counts the count line, so "
    "it drops points 55,56,57,63,64,65,74,83)",
)

# Its inverse: the 8 LaPa-only points have no WFLW source. 74/83 (eye centres) are not filled from the WFLW
# pupils 96/97: LaPa defines them separately even where the annotators made them coincide.
WFLW98_TO_LAPA106 = _map(
    "wflw98", "lapa106", _scatter(106, ((w, lapa) for w, lapa in enumerate(_LAPA_FOR_WFLW))),
    "inverse of PFPLD's LaPa -> WFLW drop list (view_lapa.py)",
)

# JD AI's own JD-106 -> 68 map (Yinglu Liu, first author of LaPa): the 17 jaw points are means of neighbouring
# 106 contour points, not every other point as in the composite lapa106 -> wflw98 -> ibug68.
LAPA106_TO_IBUG68 = _map(
    "lapa106", "ibug68",
    [(1, 2), (3, 4), (5, 6), 7, 9, 11, (12, 13), 14, 16, 18, (19, 20), 21, 23, 25, (26, 27), (28, 29), (30, 31),
     *_runs(range(33, 38), range(42, 47), range(51, 55), range(58, 63)),
     66, 67, 69, 70, 71, 73, 75, 76, 78, 79, 80, 82, *range(84, 104)],
    "JDAI-CV/FaceX-Zoo@f8f3cf1e:addition_module/face_mask_adding/FMA-3D/utils/read_info.py read_landmark_106",
)

# -> mtcnn5: eye centre = mean of the eye contour, nose tip, mouth corners (slot 0 = image-left eye).
IBUG68_TO_MTCNN5 = _map(
    "ibug68", "mtcnn5", [tuple(range(36, 42)), tuple(range(42, 48)), 30, 48, 54],
    "NVlabs/ffhq-dataset@193deb62:download_ffhq.py recreate_aligned_images (eye means 36-41 / 42-47, "
    "mouth corners 48 / 54; nose tip 30)",
)
WFLW98_TO_MTCNN5 = _map(
    "wflw98", "mtcnn5", [tuple(range(60, 68)), tuple(range(68, 76)), 54, 76, 82],
    "the ffhq construction carried through PFPLD's 68 -> 98 table (54, 76, 82 are the images of 30, 48, 54); "
    "eye centre = mean of the 8-point eye contour, not the pupils 96/97",
)
LAPA106_TO_MTCNN5 = _map(
    "lapa106", "mtcnn5", [tuple(range(66, 74)), tuple(range(75, 83)), 54, 84, 90],
    "wflw98 -> mtcnn5 carried through PFPLD's LaPa -> WFLW list; eye centre = mean of the 8-point eye contour",
)
AFLW19_TO_MTCNN5 = _map(
    "aflw19", "mtcnn5", [7, 10, 13, 15, 17],
    "AFLW annotates eye centres, nose tip and mouth corners directly (spec 6.1 order)",
)
COFW29_TO_MTCNN5 = _map(
    "cofw29", "mtcnn5", [(8, 10, 12, 13), (9, 11, 14, 15), 20, 22, 23],
    "eye centre = mean of the 4-point eye contour (corners, top, bottom), not the pupils 16/17",
)
# COCO has no mouth corners. Its person-left eye is image-right whenever the eyes are annotated (a face that
# is seen from the back has none), so it fills mtcnn5's image-right slot.
COCO17_TO_MTCNN5 = _map(
    "coco17", "mtcnn5", [2, 1, 0, None, None],
    "spec 7.4: COCO left_eye (person's left) is image-right for 27/27 camera-facing persons in coco_mini",
)
