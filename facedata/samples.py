"""The training-sample record shared by samplers, storage, readers and label verification.

A sample is a crop (uint8 HWC BGR, size x size x 3) plus one fixed-width record that holds its
targets and everything needed to re-derive them from the manifest: which image (and face) it was cut
from, the crop box in image pixels, the mirror flag and the rotation angle.
"""

from __future__ import annotations

import hashlib

import numpy as np

LABEL_POSITIVE, LABEL_NEGATIVE, LABEL_PART, LABEL_LANDMARK = 1, 0, -1, -2
LABEL_NAMES: dict[int, str] = {
    LABEL_NEGATIVE: "negative",
    LABEL_POSITIVE: "positive",
    LABEL_PART: "part",
    LABEL_LANDMARK: "landmark",
}
# The class order of every per-label table, summary and ratio (neg:pos:part:landmark, as --ratio reads).
LABEL_ORDER = (LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_PART, LABEL_LANDMARK)
# Which manifest a sample's image_index / face_index refer to.
ORIGIN_DETECTIONS, ORIGIN_LANDMARKS = 0, 1
NO_FACE = -1
# Crop size of each MTCNN cascade stage: the samplers, the detector and the build all use this one map.
STAGE_SIZE: dict[str, int] = {"pnet": 12, "rnet": 24, "onet": 48}


def sample_dtype(n_points: int = 5) -> np.dtype:
    """Fixed-width record; landmark targets are (x, y) pairs normalised to the crop, 0 when unused."""
    return np.dtype(
        [
            ("label", "i1"),
            ("origin", "i1"),
            ("mirror", "i1"),
            ("reserved", "i1"),
            ("image_index", "<i4"),  # row of the image in its manifest's images table
            ("face_index", "<i4"),  # row in the faces table of the face the crop was cut for, or -1
            ("angle", "<f4"),  # rotation in degrees, counter-clockwise (cv2.getRotationMatrix2D)
            ("crop", "<f4", (4,)),  # crop box x1 y1 x2 y2 in image pixels (before rotation/mirror)
            ("bbox", "<f4", (4,)),  # (gt - crop) / crop size for positives and parts, else 0
            ("landmarks", "<f4", (2 * n_points,)),  # landmark targets in [0, 1], else 0
        ]
    )


SAMPLE_DTYPE = sample_dtype(5)


def stable_hash(text: str) -> int:
    """64-bit hash of a string that is the same in every process and Python run (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def image_rng(seed: int, image_id: str, stream: int = 0) -> np.random.Generator:
    """The random stream of one image: a function of (seed, image id, stream) only, never of workers."""
    return np.random.default_rng([seed & 0xFFFFFFFF, stable_hash(image_id), stream])
