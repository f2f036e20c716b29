"""An independent label and pixel oracle for built datasets (`facedata verify --labels / --pixels`).

It shares no code with facedata.samplers or facedata.detect: IoU, box offsets, landmark projection
(mirror and rotation), ignore-region cover, the usable-face rule and the crop warp are written again
from the documented conventions, so "0 mismatches" means the samplers agree with the documentation,
not with themselves. It reads only the manifests, the shards and the record layout (facedata.samples).
pnet/rnet/onet builds: labels.py / pixels.py; pfld and topdown builds: keypoints.py (crop squares, projected
points and masks, Euler angles through the augmentation, mmpose centre/scale and affine), built on the public
helpers of the other two (labels: Checks, recorded_rules, face_check; pixels: ArraySource, all_records,
sample_bilinear, decode_source, compare_pixels).
"""

from facedata.oracle.dataset import (
    build_manifests,
    check_inputs,
    rules_from_index,
    verify_build_labels,
    verify_build_pixels,
)
from facedata.oracle.labels import DetectionRules, LabelReport, LandmarkRules, Mismatch, verify_labels
from facedata.oracle.pixels import TOLERANCE, PixelReport, Tolerance, pick_samples, recut, verify_pixels

__all__ = [
    "TOLERANCE",
    "DetectionRules",
    "LabelReport",
    "LandmarkRules",
    "Mismatch",
    "PixelReport",
    "Tolerance",
    "build_manifests",
    "check_inputs",
    "pick_samples",
    "recut",
    "rules_from_index",
    "verify_build_labels",
    "verify_build_pixels",
    "verify_labels",
    "verify_pixels",
]
