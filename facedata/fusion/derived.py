"""Columns derived from fused landmarks for queries and balancing: eye aspect ratio, mouth opening and a head
pose estimated with solvePnP against a generic 3D face.

Eye aspect ratio (EAR) of one eye = mean over the eyelid pairs of |upper_k - lower_k| over |corner - corner|:
on WFLW/LaPa's 8-point eyes (61-67, 62-66, 63-65 over 60-64) it is PFPLD's `view_lapa.py` formula, on iBUG's
6-point eyes (37-41, 38-40 over 36-39) Soukupova & Cech's. `mouth_open` is the same ratio on the inner lips
over the outer mouth corners. Every point used must be present: a masked one gives NaN, never a guess.

Head pose (degrees, the schema's 3DDFA convention: + yaw = face turned to image-left, + pitch = head up,
+ roll = image-right eye lower) from 14 points through the scheme's map to ibug68 and PFLD's generic 3D face
(guoqiangqi/PFLD@d654b2e2 euler_angles_utils.py, landmark-formats spec 8.3), with its known bugs fixed:
1. PFLD-pytorch and PFPLD copy NOSE_RIGHT's coordinates into NOSE_LEFT; the original's +x value is used (with
   the copy, the yaw error on AFLW2000-3D's 16 samples grows from median 1.8 / max 8.9 deg to 5.1 / 15.1).
2. Their WFLW indices 38 / 50 are the *lower* brow edges, not the images of dlib 21 / 22 (WFLW 37 / 42): the
   model is indexed in ibug68 and reached through the registered maps, so every scheme uses the same points.
3. PFLD-pytorch/PFPLD pass [0, 1]-normalised points to a 256-px camera; here pixels and a camera fitted to the
   face (principal point at the centre of the points, focal length FOCAL_FACES x their extent).
The model is stated in camera axes (x image-right, y down, z away from the camera), so a frontal face is the
identity rotation in front of the camera. PFLD's axes (x towards image-left, y up, z towards the viewer) are
the point reflection of these: a pinhole camera cannot tell the two apart (solvePnP then puts the face behind
the camera), so this changes no angle, only makes the rotation readable.
"""

from __future__ import annotations

import math

import numpy as np

from facedata.errors import FacedataError
from facedata.fusion.convert import conversion

# Eye / mouth definitions per scheme: (corner a, corner b, upper lid points, the lower lid points below them).
Ratio = tuple[int, int, tuple[int, ...], tuple[int, ...]]
_EYES: dict[str, tuple[Ratio, Ratio]] = {  # (image-left eye, image-right eye)
    "ibug68": ((36, 39, (37, 38), (41, 40)), (42, 45, (43, 44), (47, 46))),
    "wflw98": ((60, 64, (61, 62, 63), (67, 66, 65)), (68, 72, (69, 70, 71), (75, 74, 73))),
    "lapa106": ((66, 70, (67, 68, 69), (73, 72, 71)), (75, 79, (76, 77, 78), (82, 81, 80))),
}
_MOUTH: dict[str, Ratio] = {  # outer corners, inner upper lip, inner lower lip
    "ibug68": (48, 54, (61, 62, 63), (67, 66, 65)),
    "wflw98": (76, 82, (89, 90, 91), (95, 94, 93)),
    "lapa106": (84, 90, (97, 98, 99), (103, 102, 101)),
}

# PFLD's 14 reference points as ibug68 indices (its comment's dlib list) and their 3D coordinates in PFLD's
# frame (x towards image-left, y up, z towards the viewer), NOSE_LEFT corrected (bug 1).
MODEL_IBUG68 = (17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8)
_PFLD_MODEL = np.array([
    [6.825897, 6.760612, 4.402142], [1.330353, 7.122144, 6.903745],    # brows: image-left outer, inner
    [-1.330353, 7.122144, 6.903745], [-6.825897, 6.760612, 4.402142],  # image-right inner, outer
    [5.311432, 5.485328, 3.987654], [1.789930, 5.393625, 4.413414],    # image-left eye outer, inner corner
    [-1.789930, 5.393625, 4.413414], [-5.311432, 5.485328, 3.987654],  # image-right eye inner, outer corner
    [2.005628, 1.409845, 6.165652], [-2.005628, 1.409845, 6.165652],   # nostrils image-left, image-right
    [2.774015, -2.080775, 5.048531], [-2.774015, -2.080775, 5.048531],  # mouth corners
    [0.000000, -3.116408, 6.097667], [0.000000, -7.415691, 4.070434],  # lower lip centre, chin
])
MODEL_3D = -_PFLD_MODEL  # camera axes: x image-right, y down, z away from the camera (bug 3)
FOCAL_FACES = 2.0  # on AFLW2000-3D's samples 2 fits best (1 is a 53-deg view, 20 nearly orthographic)


def _ratio(xy: np.ndarray, spec: Ratio) -> np.ndarray:
    """(N,) mean lid gap over corner distance; NaN wherever a point is NaN (masked)."""
    a, b, upper, lower = spec
    gaps = np.linalg.norm(xy[:, list(upper)] - xy[:, list(lower)], axis=2).mean(axis=1)
    width = np.linalg.norm(xy[:, a] - xy[:, b], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(width > 0, gaps / width, np.nan)


def eye_mouth_ratios(scheme: str, points: np.ndarray) -> dict[str, np.ndarray]:
    """ear_left, ear_right, ear_min, mouth_open for (N, 2K) points of `scheme` (all NaN for a scheme with no
    eyelids, e.g. mtcnn5)."""
    xy = np.asarray(points, np.float64).reshape(len(points), -1, 2)
    if scheme not in _EYES:
        nan = np.full(len(xy), np.nan)
        return {"ear_left": nan, "ear_right": nan, "ear_min": nan, "mouth_open": nan}
    left, right = (_ratio(xy, eye) for eye in _EYES[scheme])
    return {"ear_left": left, "ear_right": right, "ear_min": np.minimum(left, right),
            "mouth_open": _ratio(xy, _MOUTH[scheme])}


def estimable(scheme: str) -> bool:
    """Whether the scheme reaches ibug68 through the registered maps (and can carry an estimated pose)."""
    try:
        conversion(scheme, "ibug68")
    except FacedataError:
        return False
    return True


def estimate_pose(scheme: str, points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, 3) pitch, yaw, roll in degrees (schema convention); NaN rows where a model point is masked."""
    import cv2

    mapped, _, mask = conversion(scheme, "ibug68").apply(points, visible)
    xy = np.ascontiguousarray(mapped.reshape(len(mapped), -1, 2)[:, MODEL_IBUG68], np.float64)
    usable = mask[:, MODEL_IBUG68].all(axis=1)
    out = np.full((len(xy), 3), np.nan)
    for i in np.flatnonzero(usable):
        out[i] = _solve(cv2, xy[i])
    return out


def _solve(cv2, image_points: np.ndarray) -> np.ndarray:
    low, high = image_points.min(axis=0), image_points.max(axis=0)
    focal = FOCAL_FACES * float(max(high - low)) or 1.0
    centre = (low + high) / 2
    camera = np.array([[focal, 0, centre[0]], [0, focal, centre[1]], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(MODEL_3D, image_points, camera, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    return euler_degrees(cv2.Rodrigues(rvec)[0])


def euler_degrees(rotation: np.ndarray) -> np.ndarray:
    """pitch, yaw, roll (schema convention) of a model-to-camera rotation R = Rx(-pitch) Ry(yaw) Rz(roll) in
    camera axes (x right, y down, z forward). This order matches AFLW2000-3D's Pose_Para: on its 16 real samples
    the roll error is median 0.9 deg (max 20) against 3.2 (max 44) with Rz Ry Rx."""
    r = rotation
    yaw = math.asin(max(-1.0, min(1.0, r[0, 2])))
    pitch = math.atan2(r[1, 2], r[2, 2])
    roll = math.atan2(-r[0, 1], r[0, 0])
    return np.degrees([pitch, yaw, roll])
