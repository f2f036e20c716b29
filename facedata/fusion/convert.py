"""Converting landmarks between schemes: the route over the registered index maps, their composition, and
applying the result to many faces at once.

`conversion("lapa106", "mtcnn5").apply(points, visible)` takes flat points (N, 2S) (x0, y0, x1, y1, ...) and
visibility (N, S) (0 absent, 1 hidden, 2 visible) in the source scheme and returns, in the target scheme,
points (N, 2T), visibility (N, T) and mask (N, T): mask 1 where the target point has a true source whose
points are all present (a mean is masked unless every one of its sources is present). Where mask is 0 the
coordinates are NaN and the visibility 0: never a sentinel value. A point counts as present where its
visibility is > 0 and both coordinates are finite; a target point's visibility is the lowest of its sources'.
So in every output mask == (visible > 0) == finite coordinates: maps never fill a point they cannot source,
and the mask is returned ready for a manifest's mask column or a loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facedata.errors import FacedataError
from facedata.fusion.maps import MAPS, IndexMap, map_name, sources
from facedata.fusion.schemes import SCHEMES


@dataclass(frozen=True, eq=False)
class Conversion:
    """A map, or a chain of maps, as a padded gather: target point j is sum_k weight[j, k] * source[index[j, k]];
    a row of zero weights has no source."""

    route: tuple[str, ...]  # the schemes passed through, source first
    index: np.ndarray  # (T, K) int64
    weight: np.ndarray  # (T, K) float64; 0 = padding

    @property
    def source(self) -> str:
        return self.route[0]

    @property
    def target(self) -> str:
        return self.route[-1]

    @property
    def unmapped(self) -> tuple[int, ...]:
        """Target points without a source: always NaN with mask 0."""
        return tuple(int(j) for j in np.flatnonzero(~(self.weight > 0).any(axis=1)))

    @classmethod
    def from_map(cls, index_map: IndexMap) -> Conversion:
        rows = [sources(e) for e in index_map.entries]
        width = max(len(r) for r in rows)
        index = np.zeros((len(rows), width), np.int64)
        weight = np.zeros((len(rows), width), np.float64)
        for j, row in enumerate(rows):
            index[j, : len(row)] = row
            weight[j, : len(row)] = 1.0 / len(row) if row else 0.0
        return cls((index_map.source, index_map.target), index, weight)

    @classmethod
    def identity(cls, scheme: str) -> Conversion:
        n = SCHEMES.get(scheme).num_points
        return cls((scheme,), np.arange(n, dtype=np.int64)[:, None], np.ones((n, 1)))

    def dense(self) -> np.ndarray:
        """(T, S) weight matrix."""
        out = np.zeros((len(self.index), SCHEMES.get(self.source).num_points))
        np.add.at(out, (np.arange(len(self.index))[:, None], self.index), self.weight)
        return out

    def then(self, after: Conversion) -> Conversion:
        """This conversion followed by `after`; a target point that reads a point without a source has none."""
        if after.source != self.target:
            raise ValueError(f"cannot chain {'->'.join(self.route)} with {'->'.join(after.route)}")
        first, second = self.dense(), after.dense()
        defined = (second > 0).any(axis=1) & ~((second > 0) & ~(first > 0).any(axis=1)).any(axis=1)
        combined = np.where(defined[:, None], second @ first, 0.0)
        width = max(1, int((combined > 0).sum(axis=1).max()))
        index = np.zeros((len(combined), width), np.int64)
        weight = np.zeros((len(combined), width), np.float64)
        for j, row in enumerate(combined):
            used = np.flatnonzero(row > 0)
            index[j, : len(used)], weight[j, : len(used)] = used, row[used]
        return Conversion(self.route + after.route[1:], index, weight)

    def apply(self, points: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points (N, 2T), visible (N, T) int8, mask (N, T) bool) from points (N, 2S) and visible (N, S)."""
        n_source = SCHEMES.get(self.source).num_points
        pts, vis = np.asarray(points), np.asarray(visible)
        if pts.ndim != 2 or pts.shape[1] != 2 * n_source or vis.shape != (len(pts), n_source):
            raise FacedataError(
                f"landmark map {' -> '.join(self.route)}: scheme {self.source!r} has {n_source} points, need "
                f"points (N, {2 * n_source}) and visible (N, {n_source}); got {pts.shape} and {vis.shape}")
        vis = vis.astype(np.int8)
        planes = np.stack([pts[:, 0::2], pts[:, 1::2]]).astype(np.float64)  # (2, N, S): x and y
        present = (vis > 0) & np.isfinite(planes).all(axis=0)
        planes = np.where(present, planes, 0.0)
        n_target = len(self.index)
        total = np.zeros((2, len(pts), n_target))
        complete = np.ones((len(pts), n_target), bool)
        lowest = np.full((len(pts), n_target), np.iinfo(np.int8).max, np.int8)
        for column, weight in zip(self.index.T, self.weight.T, strict=True):
            used = weight > 0
            total += np.take(planes, column, axis=2) * weight
            complete &= np.take(present, column, axis=1) | ~used
            lowest = np.where(used, np.minimum(lowest, np.take(vis, column, axis=1)), lowest)
        mask = complete & (self.weight > 0).any(axis=1)
        coords = np.empty((len(pts), 2 * n_target), np.result_type(pts.dtype, np.float32))
        coords[:, 0::2], coords[:, 1::2] = np.where(mask, total, np.nan)
        return coords, np.where(mask, lowest, 0).astype(np.int8), mask


def route(source: str, target: str) -> tuple[str, ...]:
    """The shortest chain of registered maps from source to target; an error if there is none or several."""
    for name in (source, target):
        SCHEMES.get(name)  # an unknown name fails here, listing the known ones
    paths: list[tuple[str, ...]] = [(source,)]
    seen = {source}
    while paths:
        done = [p for p in paths if p[-1] == target]
        if len(done) == 1:
            return done[0]
        if done:
            options = "; ".join(" -> ".join(p) for p in done)
            raise FacedataError(f"several equally short landmark map routes from {source} to {target} ({options}): "
                                f"name the schemes to pass through (via)")
        paths = [(*p, m.target) for p in paths for _, m in MAPS if m.source == p[-1] and m.target not in seen]
        seen.update(p[-1] for p in paths)
    maps = ", ".join(MAPS.names())
    raise FacedataError(f"no landmark map from {source} to {target} (directly or through other schemes); "
                        f"registered maps: {maps}")


def conversion(source: str, target: str, via: Sequence[str] = ()) -> Conversion:
    """The conversion source -> target, along `via` when given, else along the shortest route."""
    if source == target and not via:
        return Conversion.identity(source)
    chain = (source, *via, target) if via else route(source, target)
    result = Conversion.identity(source)
    for a, b in zip(chain, chain[1:], strict=False):
        if map_name(a, b) not in MAPS:
            for name in (a, b):
                SCHEMES.get(name)
            raise FacedataError(f"no landmark map from {a} to {b} (asked for the route {' -> '.join(chain)})")
        result = result.then(Conversion.from_map(MAPS.get(map_name(a, b))))
    return result
