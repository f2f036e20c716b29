"""300W-LP and AFLW2000-3D `.mat` folders and dlib imglab XML: counts, coordinates and poses read off the real files
by hand, the pose sign checked independently of the parser, every bad-input kind, once through the CLI.

Hand-read values (scipy.io.loadmat in a scratch session, then written here):
- AFLW2000 image00050.mat: pt3d_68[:2, 0] = (125.84849, 209.62408), point 30 (nose tip) = (224.73743, 269.69458),
  Pose_Para[:3] = (-0.0814, 0.0164, 0.0984) rad = pitch -4.66, yaw 0.94, roll 5.64 deg.
- AFLW2000 image02420.mat: yaw 70.90 deg (a profile facing image-left), pitch -10.32, roll -8.71.
- 300W-LP IBUG_image_008_1_0.mat: pt2d[:, 0] = (136.7025093, 240.11450708), yaw -44.01, pitch -7.58, roll 3.21 deg.
- dlib training_with_face_landmarks.xml line 8: image 2007_007763.jpg 500x375, first box top 90 left 194 width 37
  height 37 (line 9), part 00 = (201, 107), part 01 = (201, 110).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from facedata.cli import main
from facedata.errors import FacedataError, InputError
from facedata.manifest import Manifest
from facedata.parsers import ingest, sniff_format

AFLW = "aflw2000_3d/AFLW2000"
LP_IBUG = "300w_lp/IBUG"
LP_NAME = "IBUG_image_008_1_0"
DLIB = "dlib_faces"
# ibug68 mirror permutation written out from the landmark-formats spec section 6 (mmpose 300w.py), not imported
IBUG68_FLIP = [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46,
               39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]


def points(face) -> np.ndarray:
    return np.asarray(face["points"], np.float64).reshape(-1, 2)


def raw_aflw(realdata: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Independent reader: image id -> (68 x 2 points from pt3d_68, Pose_Para[:3] in degrees as pitch yaw roll)."""
    out = {}
    for path in sorted((realdata / AFLW).glob("*.mat")):
        data = scipy.io.loadmat(str(path))
        out[path.stem] = (data["pt3d_68"][:2].T.astype(np.float64), np.degrees(data["Pose_Para"][0, :3]))
    return out


# --------------------------------------------------------------------------------------------- AFLW2000-3D


def test_aflw2000_real_folder(realdata: Path) -> None:
    folder = realdata / AFLW
    assert sniff_format(folder) == "aflw2000_3d"
    manifest, rejects = ingest(folder)
    assert len(rejects) == 0 and len(manifest.images) == len(manifest.faces) == 16
    assert set(manifest.faces["scheme"]) == {"ibug68"} and set(manifest.faces["box_source"]) == {"derived"}
    assert set(manifest.images["width"]) == {450} and set(manifest.images["source"]) == {"aflw2000_3d"}
    faces = manifest.faces.set_index("image_id")
    first = points(faces.loc["image00050"])
    assert len(first) == 68
    assert first[0].tolist() == pytest.approx([125.84849, 209.62408], abs=1e-4)
    assert first[30].tolist() == pytest.approx([224.73743, 269.69458], abs=1e-4)
    assert faces.loc["image00050", ["pitch", "yaw", "roll"]].tolist() == pytest.approx([-4.66, 0.94, 5.64], abs=0.01)
    assert faces.loc["image02420", ["pitch", "yaw", "roll"]].tolist() == pytest.approx([-10.32, 70.90, -8.71], abs=0.01)
    assert faces.loc["image00050", ["x1", "y1", "x2", "y2"]].tolist() == pytest.approx(
        [*first.min(axis=0), *first.max(axis=0)], abs=1e-3)  # box = point extent
    raw = raw_aflw(realdata)
    for image_id, (pts, (pitch, yaw, roll)) in raw.items():
        assert points(faces.loc[image_id]) == pytest.approx(pts, abs=1e-4)
        assert faces.loc[image_id, ["pitch", "yaw", "roll"]].tolist() == pytest.approx([pitch, yaw, roll], abs=1e-3)


def test_aflw2000_pose_sign_matches_the_face_geometry(realdata: Path) -> None:
    """The sign convention (facedata.schema) checked on the real samples from the points alone, not the parser:
    - yaw: nose tip (30) left of the outer-eye-corner midpoint (36, 45) = face turned towards image-left = yaw > 0,
      on every sample with |yaw| > 5 deg (14 of 16; 70.9 deg on image02420 has the nose 1.28 eye widths left);
    - roll: eye line angle (image-right eye lower = positive, y down) has the roll's sign on the near-frontal samples
      (|yaw| < 15, |roll| > 3: 5 faces);
    - pitch: head up = the nose tip nearer the eyes than the mouth: corr(pitch, (y30 - y_eyes)/(y_mouth - y_eyes))
      is strongly negative (-0.94 with the mouth-corner midpoint as mouth)."""
    manifest, _ = ingest(realdata / AFLW)
    faces = manifest.faces.set_index("image_id")
    ratios, pitches, checked_yaw, checked_roll = [], [], 0, 0
    for image_id, (pts, _) in raw_aflw(realdata).items():
        yaw, pitch, roll = faces.loc[image_id, ["yaw", "pitch", "roll"]]
        eyes_mid = (pts[36] + pts[45]) / 2
        nose_offset = (pts[30, 0] - eyes_mid[0]) / (pts[45, 0] - pts[36, 0])
        if abs(yaw) > 5:
            assert np.sign(yaw) == -np.sign(nose_offset), image_id
            checked_yaw += 1
        eye_angle = np.degrees(np.arctan2(pts[45, 1] - pts[36, 1], pts[45, 0] - pts[36, 0]))
        if abs(yaw) < 15 and abs(roll) > 3:
            assert np.sign(roll) == np.sign(eye_angle), image_id
            checked_roll += 1
        mouth_y = (pts[48, 1] + pts[54, 1]) / 2
        ratios.append((pts[30, 1] - eyes_mid[1]) / (mouth_y - eyes_mid[1]))
        pitches.append(pitch)
    assert (checked_yaw, checked_roll) == (14, 5)
    assert np.corrcoef(pitches, ratios)[0, 1] < -0.8
    assert faces.loc["image00430", "pitch"] > 30 and faces.loc["image02545", "pitch"] < -30  # looking up / down


# --------------------------------------------------------------------------------------------- 300W-LP


def lp_sample(realdata: Path) -> tuple[np.ndarray, np.ndarray]:
    """The real IBUG_image_008_1_0 fit: (pt2d 2 x 68, Pose_Para 1 x 7)."""
    data = scipy.io.loadmat(str(realdata / LP_IBUG / f"{LP_NAME}.mat"))
    return data["pt2d"], data["Pose_Para"]


def write_fit(folder: Path, name: str, realdata: Path, *, pt2d: np.ndarray | None = None,
              pose: np.ndarray | None = None, image: np.ndarray | None = None, **extra: object) -> Path:
    """`folder/name.mat` (pt2d, Pose_Para, defaults: the real sample's) + `folder/name.jpg` (the real image)."""
    folder.mkdir(parents=True, exist_ok=True)
    real_pt2d, real_pose = lp_sample(realdata)
    variables = {"pt2d": real_pt2d if pt2d is None else pt2d, "Pose_Para": real_pose if pose is None else pose}
    scipy.io.savemat(str(folder / f"{name}.mat"), {**variables, **extra})
    if image is None:
        shutil.copy(realdata / LP_IBUG / f"{LP_NAME}.jpg", folder / f"{name}.jpg")
    else:
        cv2.imwrite(str(folder / f"{name}.jpg"), image)
    return folder / f"{name}.mat"


def test_300w_lp_real_sample(realdata: Path) -> None:
    folder = realdata / "300w_lp"
    assert sniff_format(folder) == "300w_lp" and sniff_format(realdata / LP_IBUG) == "300w_lp"
    manifest, rejects = ingest(folder)
    assert len(rejects) == 0 and len(manifest.faces) == 1 and len(manifest.images) == 1
    face = manifest.faces.iloc[0]
    assert face["image_id"] == f"IBUG/{LP_NAME}" and face["scheme"] == "ibug68" and face["box_source"] == "derived"
    pts = points(face)
    assert pts[0].tolist() == pytest.approx([136.7025093, 240.11450708], abs=1e-4)
    assert [face["pitch"], face["yaw"], face["roll"]] == pytest.approx([-7.58, -44.01, 3.21], abs=0.01)
    # yaw < 0 = turned towards image-right: the nose tip lies right of the eye corners' midpoint (checked on the raw
    # pt2d, not the parser's output: +0.41 eye widths)
    raw = lp_sample(realdata)[0].T
    assert (raw[30, 0] - (raw[36, 0] + raw[45, 0]) / 2) / (raw[45, 0] - raw[36, 0]) > 0.3
    assert manifest.images.iloc[0][["width", "height"]].tolist() == [450, 450]
    assert manifest.provenance["points_from"] == {"pts_2d": 0, "pt2d": 1} and manifest.provenance["flipped"] == 0


def test_300w_lp_landmarks_form_from_real_mmpose_points(realdata: Path, tmp_path: Path) -> None:
    """`landmarks/AFW/<name>_pts.mat` (pts_2d 68 x 2) built from the real 300W-LP points of mmpose's re-export (which
    copies pts_2d), with the 2 real AFW images: first point of AFW_134212_1_0 = (144.78085, 253.39178)."""
    import json

    data = json.loads((realdata / "300w_lp/mmpose/test_300wlp.json").read_text())
    names = {img["id"]: Path(img["file_name"]).stem for img in data["images"]}
    for ann in data["annotations"]:
        name = names[ann["image_id"]]
        pts = np.asarray(ann["keypoints"], np.float64).reshape(68, 3)[:, :2]
        (tmp_path / "landmarks/AFW").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(tmp_path / f"landmarks/AFW/{name}_pts.mat"), {"pts_2d": pts, "pts_3d": pts})
        (tmp_path / "AFW").mkdir(exist_ok=True)
        shutil.copy(realdata / f"300w_lp/mmpose/{name}.jpg", tmp_path / f"AFW/{name}.jpg")
    assert sniff_format(tmp_path) == "300w_lp"
    manifest, rejects = ingest(tmp_path)
    assert len(rejects) == 0 and manifest.faces["image_id"].tolist() == ["AFW/AFW_134212_1_0", "AFW/AFW_134212_2_0"]
    assert points(manifest.faces.iloc[0])[0].tolist() == pytest.approx([144.78085, 253.39178], abs=1e-4)
    assert manifest.faces["yaw"].isna().all()  # pts_2d has no pose
    assert manifest.provenance["points_from"] == {"pts_2d": 2, "pt2d": 0}


def test_300w_lp_points_from_pts_2d_pose_from_the_fit(realdata: Path, tmp_path: Path) -> None:
    """Also: a model `.mat` in the release's Code/ folder, sorted first, neither breaks sniffing nor is rejected."""
    pt2d, pose = lp_sample(realdata)
    (tmp_path / "Code").mkdir()
    scipy.io.savemat(str(tmp_path / "Code/Model_Shape.mat"), {"mu_shape": np.zeros((3, 1))})
    write_fit(tmp_path / "IBUG", LP_NAME, realdata)
    (tmp_path / "landmarks/IBUG").mkdir(parents=True)
    scipy.io.savemat(str(tmp_path / f"landmarks/IBUG/{LP_NAME}_pts.mat"), {"pts_2d": pt2d.T + 1.5})
    assert sniff_format(tmp_path) == "300w_lp"
    manifest, rejects = ingest(tmp_path)
    assert len(rejects) == 0 and len(manifest.faces) == 1 and manifest.provenance["other_mat_files"] == 1
    face = manifest.faces.iloc[0]
    assert points(face)[0].tolist() == pytest.approx((pt2d[:, 0] + 1.5).tolist(), abs=1e-4)
    assert face["yaw"] == pytest.approx(np.degrees(pose[0, 1]), abs=1e-3)


def mirrored(realdata: Path, permute: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real sample mirrored as 300W-LP's _Flip copies should be: image flipped, x -> W - 1 - x, points
    re-indexed (unless not `permute`), yaw and roll negated."""
    pt2d, pose = lp_sample(realdata)
    image = cv2.imread(str(realdata / LP_IBUG / f"{LP_NAME}.jpg"))
    xy = pt2d.T.copy()
    xy[:, 0] = image.shape[1] - 1 - xy[:, 0]
    if permute:
        xy = xy[IBUG68_FLIP]
    flipped_pose = pose.copy()
    flipped_pose[0, 1:3] *= -1
    return xy.T, flipped_pose, cv2.flip(image, 1)


def test_300w_lp_flip_recognised_and_checked(realdata: Path, tmp_path: Path) -> None:
    write_fit(tmp_path / "IBUG", LP_NAME, realdata)
    pt2d, pose, image = mirrored(realdata)
    write_fit(tmp_path / "IBUG_Flip", LP_NAME, realdata, pt2d=pt2d, pose=pose, image=image)
    manifest, rejects = ingest(tmp_path)
    assert len(rejects) == 0 and len(manifest.faces) == 2
    faces = manifest.faces.set_index("image_id")
    flip, original = faces.loc[f"IBUG_Flip/{LP_NAME}"], faces.loc[f"IBUG/{LP_NAME}"]
    assert [flip["pitch"], flip["yaw"], flip["roll"]] == pytest.approx(
        [original["pitch"], -original["yaw"], -original["roll"]], abs=1e-3)
    assert flip["yaw"] > 40  # the mirror faces image-left
    tags = manifest.images.set_index("image_id")["tags"]
    assert tags[f"IBUG_Flip/{LP_NAME}"] == '{"flipped": true}' and tags.isna()[f"IBUG/{LP_NAME}"]
    assert manifest.provenance["flipped"] == 1


@pytest.mark.parametrize("defect", ["pose", "points"])
def test_300w_lp_flip_that_is_not_the_mirror_is_rejected(realdata: Path, tmp_path: Path, defect: str) -> None:
    """A _Flip copy whose yaw/roll were not negated, or whose points were mirrored without re-indexing (so
    image-left eye points sit on the right): rejected, named, the original kept."""
    write_fit(tmp_path / "IBUG", LP_NAME, realdata)
    pt2d, pose, image = mirrored(realdata, permute=defect != "points")
    if defect == "pose":
        pose = lp_sample(realdata)[1]
    bad = write_fit(tmp_path / "IBUG_Flip", LP_NAME, realdata, pt2d=pt2d, pose=pose, image=image)
    manifest, rejects = ingest(tmp_path)
    assert manifest.faces["image_id"].tolist() == [f"IBUG/{LP_NAME}"]
    (item,) = rejects.items
    assert item.file == str(bad) and item.kind == "flip mismatch"
    assert item.field == ("Pose_Para" if defect == "pose" else "points")
    assert f"not the mirror of {LP_NAME}.mat" in item.reason
    with pytest.raises(InputError, match="IBUG_Flip"):
        ingest(tmp_path, strict=True)


def test_300w_lp_stale_points_of_a_rotated_copy(realdata: Path, tmp_path: Path) -> None:
    """`<face>_3` with pt2d identical to `<face>_0`'s but another pose (cleardusk/3DDFA#192): rejected; with its own
    landmarks/*_pts.mat it is kept (points from pts_2d, pose from the fit)."""
    pt2d, pose = lp_sample(realdata)
    write_fit(tmp_path / "IBUG", LP_NAME, realdata)
    rotated = pose.copy()
    rotated[0, 1] += 0.3  # 17 deg more yaw
    stale = write_fit(tmp_path / "IBUG", "IBUG_image_008_1_3", realdata, pose=rotated)
    manifest, rejects = ingest(tmp_path)
    assert manifest.faces["image_id"].tolist() == [f"IBUG/{LP_NAME}"]
    assert [(r.file, r.field, r.kind) for r in rejects.items] == [(str(stale), "pt2d", "stale points")]
    (tmp_path / "landmarks/IBUG").mkdir(parents=True)
    scipy.io.savemat(str(tmp_path / "landmarks/IBUG/IBUG_image_008_1_3_pts.mat"), {"pts_2d": pt2d.T + 3})
    manifest, rejects = ingest(tmp_path)
    assert len(rejects) == 0 and len(manifest.faces) == 2


# --------------------------------------------------------------------------------------------- .mat bad input


MAT_DEFECTS = [  # (name, writer(folder, realdata) -> bad file, field, kind, reason fragment)
    ("empty", lambda f, r: _touch(f / "IBUG/IBUG_x_0.mat"), "file", "unreadable file", "empty file"),
    ("not a mat", lambda f, r: _text(f / "IBUG/IBUG_x_0.mat", "hello"), "file", "unreadable file",
     "not a MATLAB v5 .mat file"),
    ("missing key", lambda f, r: _mat(f, r, drop="Pose_Para"), "file", "unreadable file", "missing variable"),
    ("transposed", lambda f, r: _mat(f, r, pt2d=lp_sample(r)[0].T), "pt2d", "wrong shape", "expected a 2x68 numeric"),
    ("21 points", lambda f, r: _mat(f, r, pt2d=np.ones((2, 21))), "pt2d", "wrong shape", "got 2x21"),
    ("text", lambda f, r: _mat(f, r, pt2d="abc"), "pt2d", "wrong shape", "numeric array"),
    ("nan", lambda f, r: _mat(f, r, pt2d=np.where(np.arange(68) == 5, np.nan, lp_sample(r)[0])), "pt2d",
     "bad number", "finite"),
    ("degrees", lambda f, r: _mat(f, r, pose=np.array([[10.0, -44.0, 3.0, 0, 0, 0, 0.001]])), "Pose_Para",
     "bad pose", "radians"),
    ("no image", lambda f, r: _no_image(f, r), "image", "missing image", "missing image file"),
]


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _mat(folder: Path, realdata: Path, drop: str | None = None, **kwargs: object) -> Path:
    path = write_fit(folder / "IBUG", "IBUG_x_0", realdata, **kwargs)  # type: ignore[arg-type]
    if drop:
        data = {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__") and k != drop}
        scipy.io.savemat(str(path), data)
    return path


def _no_image(folder: Path, realdata: Path) -> Path:
    path = _mat(folder, realdata)
    path.with_suffix(".jpg").unlink()
    return path


@pytest.mark.parametrize(("name", "write", "field", "kind", "reason"), MAT_DEFECTS, ids=[d[0] for d in MAT_DEFECTS])
def test_300w_lp_bad_files_are_skipped_and_named(realdata: Path, tmp_path: Path, name: str, write, field: str,
                                                  kind: str, reason: str) -> None:
    write_fit(tmp_path / "IBUG", LP_NAME, realdata)  # sorted first: the folder still sniffs as 300W-LP
    bad = write(tmp_path, realdata)
    manifest, rejects = ingest(tmp_path, format="300w_lp")
    assert manifest.faces["image_id"].tolist() == [f"IBUG/{LP_NAME}"]
    (item,) = rejects.items
    assert (item.field, item.kind) == (field, kind) and reason in item.reason
    assert item.file == str(bad)
    with pytest.raises(InputError) as err:
        ingest(tmp_path, format="300w_lp", strict=True)
    assert str(bad) in str(err.value) and f": {field}: " in str(err.value)


def test_aflw2000_bad_files(realdata: Path, tmp_path: Path) -> None:
    """AFLW2000 shares the .mat checks: a 300W-LP-style file (pt2d, no pt3d_68) and a 2-row pt3d_68 are rejected;
    an image that is a symlink out of the folder does not escape it."""
    for name in ("image00050", "image00081"):
        shutil.copy(realdata / AFLW / f"{name}.mat", tmp_path)
        shutil.copy(realdata / AFLW / f"{name}.jpg", tmp_path)
    _, pose = lp_sample(realdata)
    scipy.io.savemat(str(tmp_path / "image00100.mat"), {"pt2d": np.ones((2, 21)), "Pose_Para": pose})
    scipy.io.savemat(str(tmp_path / "image00200.mat"), {"pt3d_68": np.ones((2, 68)), "Pose_Para": pose})
    for name in ("image00100", "image00200"):
        shutil.copy(realdata / AFLW / "image00050.jpg", tmp_path / f"{name}.jpg")
    outside = tmp_path.parent / f"{tmp_path.name}_outside.jpg"
    shutil.copy(realdata / AFLW / "image00081.jpg", outside)
    (tmp_path / "image00081.jpg").unlink()
    (tmp_path / "image00081.jpg").symlink_to(outside)
    manifest, rejects = ingest(tmp_path)
    assert manifest.faces["image_id"].tolist() == ["image00050"]
    assert [(Path(r.file).name, r.field, r.kind) for r in rejects.items] == [  # files read, then images checked
        ("image00100.mat", "file", "unreadable file"),
        ("image00200.mat", "pt3d_68", "wrong shape"),
        ("image00081.mat", "path", "bad path"),
    ]
    assert "missing variable(s) ['pt3d_68']" in rejects.items[0].reason
    assert "resolves outside the image root" in rejects.items[2].reason


def test_aflw2000_truncated_files_do_not_hide_the_folder_format(realdata: Path, tmp_path: Path) -> None:
    """Truncated .mat files (an interrupted copy) found before the readable one: the folder is still sniffed as
    AFLW2000-3D and each truncated file is one named reject, not "no folder format recognised"."""
    shutil.copy(realdata / AFLW / "image00050.mat", tmp_path)
    shutil.copy(realdata / AFLW / "image00050.jpg", tmp_path)
    truncated = (realdata / AFLW / "image00081.mat").read_bytes()[:300]
    for k in range(1, 6):
        (tmp_path / f"image0{k}000.mat").write_bytes(truncated)
        shutil.copy(realdata / AFLW / "image00081.jpg", tmp_path / f"image0{k}000.jpg")
    assert sniff_format(tmp_path) == "aflw2000_3d"
    manifest, rejects = ingest(tmp_path)
    assert manifest.faces["image_id"].tolist() == ["image00050"]
    assert sorted((Path(r.file).name, r.kind) for r in rejects.items) == [
        (f"image0{k}000.mat", "unreadable file") for k in range(1, 6)]


def test_mat_folder_points_outside_the_image(realdata: Path, tmp_path: Path) -> None:
    """With probing, a fit whose points lie far outside its 450 x 450 image (a wrong image) drops it, named."""
    pt2d, _ = lp_sample(realdata)
    write_fit(tmp_path / "IBUG", LP_NAME, realdata)
    bad = write_fit(tmp_path / "IBUG", "IBUG_far_0", realdata, pt2d=pt2d + 2000)
    manifest, rejects = ingest(tmp_path)
    assert len(manifest.faces) == 1
    (item,) = rejects.items
    assert item.file == str(bad) and item.kind == "outside image" and item.field.startswith(("x", "y"))


def test_empty_mat_folder(tmp_path: Path) -> None:
    with pytest.raises(FacedataError, match="no .mat files"):
        ingest(tmp_path, format="aflw2000_3d")


# --------------------------------------------------------------------------------------------- dlib XML


@pytest.mark.parametrize(("name", "images", "faces", "split"), [
    ("training.xml", 4, 18, "train"), ("testing.xml", 5, 25, "test"),
    ("training_with_face_landmarks.xml", 4, 18, "train"), ("testing_with_face_landmarks.xml", 5, 25, "test"),
])
def test_dlib_real_files(realdata: Path, name: str, images: int, faces: int, split: str) -> None:
    path = realdata / DLIB / name
    assert sniff_format(path) == "dlib_xml"
    manifest, rejects = ingest(path, images=realdata / DLIB)
    assert len(rejects) == 0 and (len(manifest.images), len(manifest.faces)) == (images, faces)
    assert set(manifest.images["split"]) == {split} and not manifest.faces["ignore"].any()
    assert set(manifest.faces["box_source"]) == {"annotated"}
    with_points = "landmarks" in name
    assert manifest.faces["scheme"].notna().all() == with_points
    assert manifest.faces["scheme"].isna().all() != with_points
    if with_points:
        assert "shape_predictor_68_face_landmarks" in manifest.provenance["comment"]  # model predictions


def test_dlib_real_coordinates(realdata: Path) -> None:
    manifest, _ = ingest(realdata / DLIB / "training_with_face_landmarks.xml", images=realdata / DLIB)
    first = manifest.faces.iloc[0]
    assert first["image_id"] == "2007_007763" and first["source_line"] == 11
    assert [first["x1"], first["y1"], first["x2"], first["y2"]] == [194, 90, 231, 127]  # left top +width +height
    assert points(first)[:2].tolist() == [[201, 107], [201, 110]]
    assert set(first["visible"]) == {2}
    assert manifest.images.set_index("image_id").loc["2007_007763", ["width", "height"]].tolist() == [500, 375]
    # training.xml and its landmark version differ in 2 boxes of 2008_002079 (left 407 vs 406; 433 171 53x52 vs
    # 439 175 44x44): each file is read as written
    boxes_only, _ = ingest(realdata / DLIB / "training.xml")
    differ = (boxes_only.faces[["x1", "y1", "x2", "y2"]] != manifest.faces[["x1", "y1", "x2", "y2"]]).any(axis=1)
    assert boxes_only.faces.loc[differ, "image_id"].tolist() == ["2008_002079"] * 2
    assert manifest.faces.loc[differ, ["x1", "y1", "x2", "y2"]].to_numpy().tolist() == [[406, 166, 443, 203],
                                                                                      [439, 175, 483, 219]]


XML_HEAD = "<?xml version='1.0' encoding='ISO-8859-1'?>\n<dataset>\n<name>t</name>\n<images>\n"
PARTS = "".join(f"<part name='{i:02d}' x='{200 + i % 10}' y='{100 + i // 10}'/>" for i in range(68))


def dlib_file(tmp_path: Path, realdata: Path, body: str, name: str = "training.xml") -> Path:
    for image in ("2007_007763.jpg", "2008_001009.jpg"):
        shutil.copy(realdata / DLIB / image, tmp_path / image)
    path = tmp_path / name
    path.write_text(XML_HEAD + body + "</images>\n</dataset>\n", encoding="latin-1")
    return path


def test_dlib_ignore_boxes_and_boxes_without_parts(realdata: Path, tmp_path: Path) -> None:
    body = (f"<image file='2007_007763.jpg'>\n<box top='90' left='194' width='37' height='37'>{PARTS}</box>\n"
            "<box top='10' left='10' width='20' height='20' ignore='1'/>\n</image>\n"
            "<image file='2008_001009.jpg'>\n<box top='5' left='6' width='30' height='40' occluded='1'/>\n</image>\n")
    path = dlib_file(tmp_path, realdata, body)
    manifest, rejects = ingest(path, images=tmp_path)
    assert len(rejects) == 0 and manifest.faces["ignore"].tolist() == [False, True, False]
    assert manifest.provenance["ignore_boxes"] == 1 and manifest.provenance["box_attributes_not_stored"] == {
        "occluded": 1}
    no_parts = manifest.faces.iloc[1]
    assert np.isnan(points(no_parts)).all() and set(no_parts["visible"]) == {0}  # absent, not a sentinel
    out = tmp_path / "m.parquet"
    manifest.write(out)
    assert Manifest.read(out).faces["ignore"].tolist() == [False, True, False]


GOOD_BOX = f"<box top='90' left='194' width='37' height='37'>{PARTS}</box>"
XML_DEFECTS = [  # (id, box element replacing GOOD_BOX or image attributes, field, kind, reason fragment)
    ("no file", "<image>", "file", "missing field", "without a file"),
    ("absolute path", "<image file='/etc/2007_007763.jpg'>", "path", "bad path", "relative"),
    ("dotdot path", "<image file='../2007_007763.jpg'>", "path", "bad path", "'..'"),
    ("missing image", "<image file='nope.jpg'>", "image", "missing image", "missing image file"),
    ("wrong size", "<image file='2007_007763.jpg' width='375' height='500'>", "width", "size mismatch",
     "declares 375x500, the image file '2007_007763.jpg' is 500x375"),
    ("box no width", "<box top='1' left='2' height='3'/>", "width", "bad number", "got missing"),
    ("box float", "<box top='1.5' left='2' width='3' height='3'/>", "top", "bad number", "'1.5'"),
    ("bad ignore", "<box top='1' left='2' width='3' height='3' ignore='yes'/>", "ignore", "bad attribute", "0 or 1"),
    ("part no x", GOOD_BOX.replace("x='200' y='100'", "y='100'", 1), "x", "missing field", "without x"),
    ("part text", GOOD_BOX.replace("x='200'", "x='abc'", 1), "x", "bad number", "'abc'"),
    ("part 68", GOOD_BOX.replace("name='00'", "name='68'"), "name", "bad part", "0..67"),
    ("part twice", GOOD_BOX.replace("name='01'", "name='00'"), "name", "bad part", "given twice"),
    ("67 parts", GOOD_BOX.replace("<part name='67' x='207' y='106'/>", ""), "part", "wrong point count", "got 67"),
]


@pytest.mark.parametrize(("name", "element", "field", "kind", "reason"), XML_DEFECTS, ids=[d[0] for d in XML_DEFECTS])
def test_dlib_bad_items(realdata: Path, tmp_path: Path, name: str, element: str, field: str, kind: str,
                        reason: str) -> None:
    """The bad item drops its image (named by XML line and attribute); the other image is kept."""
    if element.startswith("<image"):
        bad = f"{element}\n{GOOD_BOX}\n</image>\n"
    else:
        bad = f"<image file='2007_007763.jpg'>\n{element}\n</image>\n"
    good = f"<image file='2008_001009.jpg'>\n{GOOD_BOX}\n</image>\n"
    path = dlib_file(tmp_path, realdata, bad + good)
    manifest, rejects = ingest(path, images=tmp_path)
    assert manifest.images["image_id"].tolist() == ["2008_001009"]
    (item,) = rejects.items
    assert (item.field, item.kind, item.line) == (field, kind, 5 if element.startswith("<image") else 6)
    assert reason in item.reason
    with pytest.raises(InputError, match=rf"training.xml:{item.line}: {field}: "):
        ingest(path, images=tmp_path, strict=True)


def test_dlib_repeated_box_kept_once(realdata: Path, tmp_path: Path) -> None:
    body = ("<image file='2007_007763.jpg'>\n<box top='1' left='2' width='30' height='30'/>\n"
            "<box top='1' left='2' width='30' height='30'/>\n</image>\n")
    manifest, rejects = ingest(dlib_file(tmp_path, realdata, body), images=tmp_path, strict=True)
    assert len(manifest.faces) == 1 and manifest.provenance["duplicates"] == 1
    (item,) = rejects.items
    assert (item.line, item.kind) == (7, "duplicate face") and "identical to the face at line 6" in item.reason


def test_dlib_malformed_xml_and_wrong_root(realdata: Path, tmp_path: Path) -> None:
    path = dlib_file(tmp_path, realdata, "<image file='2007_007763.jpg'>\n<box top='1'\n</image>\n")
    with pytest.raises(InputError, match=r"training.xml:7: xml: malformed XML"):
        ingest(path)
    other = tmp_path / "voc.xml"
    other.write_text("<annotation><dataset/><images/></annotation>")
    with pytest.raises(InputError, match="root element must be <dataset>"):
        ingest(other, format="dlib_xml")


# --------------------------------------------------------------------------------------------- CLI


def test_cli_ingest_mat_folder_and_dlib_xml(realdata: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "aflw.parquet"
    result = runner.invoke(main, ["ingest", str(realdata / AFLW), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "format aflw2000_3d (sniffed): wrote 16 images, 16 faces" in result.output
    faces = Manifest.read(out).faces.set_index("image_id")
    assert faces.loc["image02420", "yaw"] == pytest.approx(70.90, abs=0.01)
    result = runner.invoke(main, ["ingest", str(realdata / DLIB / "testing_with_face_landmarks.xml"), "--images",
                                  str(realdata / DLIB), "-o", str(tmp_path / "dlib.parquet")])
    assert result.exit_code == 0 and "format dlib_xml (sniffed): wrote 5 images, 25 faces" in result.output
    write_fit(tmp_path / "lp/IBUG", LP_NAME, realdata)
    _mat(tmp_path / "lp", realdata, pt2d=lp_sample(realdata)[0].T)
    result = runner.invoke(main, ["ingest", str(tmp_path / "lp"), "-o", str(tmp_path / "lp.parquet"), "--strict"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "IBUG_x_0.mat: pt2d: expected a 2x68 numeric array, got 68x2 of float64" in result.output
