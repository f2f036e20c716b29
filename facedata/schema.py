"""The unified manifest schema: column names, dtypes and the pixel conventions every stage shares.

Box convention: float32 x1, y1, x2, y2 in pixels of the original image, continuous coordinates with
x2 = x1 + width (the right edge, exclusive). WIDER `x y w h` maps to (x, y, x + w, y + h); the MTCNN
`wider_face_train.txt` x2 = x + w already is this convention; CUHK `x1 x2 y1 y2` columns are stored as
given. Samplers that reproduce the MTCNN "+1" area convention apply it themselves, never the manifest.

Landmarks: `points` is a flat float32 list [x0, y0, x1, y1, ...] of 2K values in the same pixel frame,
`visible` an int8 list of K codes (COCO/Datumaro): 0 absent (no valid coordinate), 1 hidden, 2 visible.
`scheme` names the landmark layout (see facedata.fusion.schemes; a name the registry does not know yet,
e.g. `wflw98`, `lapa106`, `ibug68`, is stored as given). Points are 0-based: sources in the 1-based Matlab
convention (iBUG `.pts`) are converted on ingest and say so in provenance["coordinate_origin"]. Points may lie
outside the image (WFLW has x = -104.8): they are kept. A face without an annotated box gets the extent of its
present points as its box, with `box_source` = "derived" (else "annotated").

Head pose: `pitch`, `yaw`, `roll` in **degrees**, one sign convention for every source (the 3DDFA
`Pose_Para` convention, checked on AFLW2000-3D/300W-LP in the landmark-formats spec, section 3.4):
positive yaw = the face turned towards image-left, positive pitch = head tilted up, positive roll = the
image-right eye lower (clockwise in the displayed image, y down). Sources in radians are converted; a
horizontal flip negates yaw and roll and keeps pitch. NaN = not annotated.

Fused landmark manifests (`facedata fuse`, schema 4): a point without a true source in the face's scheme has
NaN coordinates and visibility 0, so mask == (visible > 0) == finite coordinates and no separate mask column
is stored (facedata.fusion.convert). `pose_source` says where pitch/yaw/roll come from ("annotated", or
"estimated" with solvePnP against facedata.fusion.derived's generic 3D face; null = no pose). `ear_left`,
`ear_right`, `ear_min` (eye aspect ratio, image-left / image-right eye) and `mouth_open` are derived from the
points (NaN where a point they need is masked); `weight` is the sampling weight of `fuse --weight` (1 = none).
"""

from __future__ import annotations

import pyarrow as pa

# Version history: 1 (issue 2); 2 adds the face flag `ignore`; 3 adds the WFLW attribute `make_up` and
# `box_source`; 4 adds the fusion columns `pose_source`, `ear_left`, `ear_right`, `ear_min`, `mouth_open`, `weight`.
# A reader accepts every version listed in SCHEMA_UPGRADES and fills the columns added since
# with their defaults; writers write SCHEMA_VERSION.
SCHEMA_VERSION = 4
BOX_ANNOTATED, BOX_DERIVED = "annotated", "derived"
POSE_ANNOTATED, POSE_ESTIMATED = "annotated", "estimated"
_ADDED_IN_3: dict[str, object] = {"make_up": -1, "box_source": BOX_ANNOTATED}
# Columns added in 4 with the value a face without them has (also filled in when a writer leaves them out).
ADDED_IN_4: dict[str, object] = {
    "pose_source": None, "ear_left": float("nan"), "ear_right": float("nan"), "ear_min": float("nan"),
    "mouth_open": float("nan"), "weight": 1.0,
}
SCHEMA_UPGRADES: dict[int, dict[str, object]] = {
    1: {"ignore": False, **_ADDED_IN_3, **ADDED_IN_4}, 2: {**_ADDED_IN_3, **ADDED_IN_4}, 3: ADDED_IN_4, 4: {},
}

# Official WIDER Face column order after x y w h (wider_face_split readme; the val data confirms it:
# only blur and occlusion take the value 2 and `invalid` has 585 ones).
WIDER_ATTRIBUTES: tuple[str, ...] = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
WIDER_ATTRIBUTE_CODES: dict[str, dict[int, str]] = {
    "blur": {0: "clear", 1: "normal blur", 2: "heavy blur"},
    "expression": {0: "typical expression", 1: "exaggerate expression"},
    "illumination": {0: "normal illumination", 1: "extreme illumination"},
    "invalid": {0: "valid", 1: "invalid"},
    "occlusion": {0: "no occlusion", 1: "partial occlusion", 2: "heavy occlusion"},
    "pose": {0: "typical pose", 1: "atypical pose"},
}
# WFLW's six 0/1 flags (pose expression illumination make-up occlusion blur; official README order) share
# WIDER's columns and code meanings (WFLW blur 1 = "blurred", occlusion 1 = "occluded"); make-up is new.
WFLW_ATTRIBUTES: tuple[str, ...] = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")
ATTRIBUTE_CODES: dict[str, dict[int, str]] = {**WIDER_ATTRIBUTE_CODES, "make_up": {0: "no make-up", 1: "make-up"}}
# Attributes stored as int8 with -1 = unknown; `invalid` is stored as a bool flag instead.
FACE_ATTRIBUTES: tuple[str, ...] = (*(a for a in WIDER_ATTRIBUTES if a != "invalid"), "make_up")
UNKNOWN_ATTRIBUTE = -1

VISIBILITY_ABSENT, VISIBILITY_HIDDEN, VISIBILITY_VISIBLE = 0, 1, 2

IMAGE_FIELDS: list[pa.Field] = [
    pa.field("image_id", pa.string(), nullable=False),  # stable id, unique within a manifest
    pa.field("root", pa.string(), nullable=False),  # name of the image root (see provenance["roots"])
    pa.field("rel_path", pa.string(), nullable=False),  # POSIX path relative to that root
    pa.field("split", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # dataset, e.g. wider_face, cuhk_lfw_net
    pa.field("width", pa.int32()),  # null when unknown
    pa.field("height", pa.int32()),
    pa.field("event", pa.string()),  # WIDER event folder, e.g. 0--Parade
    pa.field("tags", pa.string()),  # JSON object of further per-image tags
]

FACE_FIELDS: list[pa.Field] = [
    pa.field("face_id", pa.int64()),
    pa.field("x1", pa.float32()),
    pa.field("y1", pa.float32()),
    pa.field("x2", pa.float32()),
    pa.field("y2", pa.float32()),
    pa.field("scheme", pa.string()),
    pa.field("points", pa.list_(pa.float32())),
    pa.field("visible", pa.list_(pa.int8())),
    pa.field("yaw", pa.float32()),
    pa.field("pitch", pa.float32()),
    pa.field("roll", pa.float32()),
    *[pa.field(name, pa.int8()) for name in FACE_ATTRIBUTES],
    pa.field("invalid", pa.bool_()),
    pa.field("degenerate", pa.bool_()),  # width or height <= 0
    pa.field("box_source", pa.string()),  # "annotated", or "derived" from the extent of the points
    pa.field("ignore", pa.bool_()),  # removed by `filter` but kept as an ignore region (see facedata.filters)
    pa.field("source_line", pa.int32()),  # 1-based line in the source file, when it has lines
    pa.field("pose_source", pa.string()),  # "annotated" / "estimated" / null (no pose)
    pa.field("ear_left", pa.float32()),  # eye aspect ratio of the image-left eye (facedata.fusion.derived)
    pa.field("ear_right", pa.float32()),
    pa.field("ear_min", pa.float32()),  # the smaller of the two (NaN if either is unknown)
    pa.field("mouth_open", pa.float32()),  # inner-lip gap over mouth width
    pa.field("weight", pa.float32()),  # sampling weight (fuse --weight); 1 = none
]

# On disk a manifest is one Parquet table, one row per face plus one row (null face_id) per image
# without faces, so that zero-face images (pure negatives) survive and `--where` sees both levels.
MANIFEST_SCHEMA = pa.schema(IMAGE_FIELDS + FACE_FIELDS)
IMAGE_COLUMNS = [f.name for f in IMAGE_FIELDS]
FACE_COLUMNS = ["image_id"] + [f.name for f in FACE_FIELDS]
