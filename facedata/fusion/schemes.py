"""Named landmark schemes: point names and the left/right permutation a horizontal mirror needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facedata.registry import Registry


@dataclass(frozen=True)
class LandmarkScheme:
    name: str
    point_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]  # indices that swap places when the image is mirrored

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """perm such that mirrored_points = points[perm] (with x -> width - x applied separately)."""
        perm = np.arange(self.num_points)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


SCHEMES: Registry[LandmarkScheme] = Registry("landmark scheme")


def register(scheme: LandmarkScheme) -> LandmarkScheme:
    return SCHEMES.register(scheme.name)(scheme)


# CUHK facial point set (LFW / net_7876) as used by MTCNN: subject's left/right as in the source lists.
MTCNN5 = register(
    LandmarkScheme(
        name="mtcnn5",
        point_names=("left_eye", "right_eye", "nose", "left_mouth_corner", "right_mouth_corner"),
        flip_pairs=((0, 1), (3, 4)),
    )
)
