"""COCO keypoint JSON: person keypoints (counts read independently from the real JSON, coordinates by hand),
scheme sniffing on each of mmpose's face re-exports and the refused ambiguous guess, COCO-WholeBody faces, every
bad-input kind, and one run through the CLI."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.errors import FacedataError, InputError
from facedata.manifest import Manifest
from facedata.parsers import ingest, sniff_format

COCO_MINI = "coco_val2017/coco_mini/annotations/person_keypoints_val2017.json"
COCO_MINI_IMAGES = "coco_val2017/coco_mini/val2017"
# mmpose re-export -> (scheme chosen without --scheme, faces, labelled-as-1 file)
REEXPORTS = {
    "wflw/mmpose_test_wflw.json": ("wflw98", 4, True),
    "lapa/mmpose/test_lapa.json": ("lapa106", 2, False),
    "aflw/mmpose/test_aflw.json": ("aflw19", 2, True),
    "cofw/mmpose/test_cofw.json": ("cofw29", 2, False),
    "coco_val2017/mmpose/test_coco.json": ("coco17", 14, False),
}
IBUG68_REEXPORTS = ["300w/mmpose/test_300w.json", "300vw/mmpose/anno_300vw.json", "300w_lp/mmpose/test_300wlp.json"]


def face_of(manifest: Manifest, image_id: str, x1: float) -> dict:
    faces = manifest.faces
    rows = faces[(faces["image_id"] == image_id) & np.isclose(faces["x1"], x1)]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def points(face: dict) -> np.ndarray:
    return np.asarray(face["points"], np.float64).reshape(-1, 2)


# --------------------------------------------------------------------------------------------- real files


def test_coco_person_keypoints_real_counts(realdata: Path) -> None:
    path = realdata / COCO_MINI
    raw = json.loads(path.read_text())
    persons = raw["annotations"]
    manifest, rejects = ingest(path, images=realdata / COCO_MINI_IMAGES)
    assert len(rejects) == 0
    assert sniff_format(path) == "coco_keypoints"
    assert len(manifest.images) == len(raw["images"]) == 79
    assert manifest.images["width"].notna().all()  # probed
    assert len(manifest.faces) == len(persons) == 118
    assert int(manifest.faces["ignore"].sum()) == sum(a["iscrowd"] for a in persons) == 1
    bare = manifest.faces["points"].isna()
    assert int(bare.sum()) == sum(a["num_keypoints"] == 0 for a in persons) == 50
    assert manifest.faces.loc[bare, "scheme"].isna().all()
    assert (manifest.faces.loc[~bare, "scheme"] == "coco17").all()
    with_people = {a["image_id"] for a in persons}
    assert manifest.faces["image_id"].nunique() == len(with_people) == 39  # 40 images kept without people
    labelled = sum(v > 0 for a in persons for v in a["keypoints"][2::3])
    assert sum(int((np.asarray(v) > 0).sum()) for v in manifest.faces.loc[~bare, "visible"]) == labelled
    assert manifest.provenance["scheme"] == "coco17" and manifest.provenance["crowd"] == 1


def test_coco_person_keypoints_coordinates_by_hand(realdata: Path) -> None:
    manifest, _ = ingest(realdata / COCO_MINI)
    # annotation 200887 of image 397133: bbox [388.66, 69.92, 109.41, 277.62]; keypoints start
    # 433,94,2, 434,90,2, 0,0,0 (right_eye not labelled), 443,98,2
    face = face_of(manifest, "000000397133", 388.66)
    assert face["x2"] == pytest.approx(388.66 + 109.41) and face["y2"] == pytest.approx(69.92 + 277.62)
    assert face["box_source"] == "annotated" and not face["ignore"]
    pts = points(face)
    assert pts[0].tolist() == [433, 94] and pts[1].tolist() == [434, 90] and pts[3].tolist() == [443, 98]
    assert np.isnan(pts[2]).all()  # v = 0 is stored as NaN (COCO writes 0, 0), never as a coordinate
    assert face["visible"][:4].tolist() == [2, 2, 0, 2]
    # the crowd annotation 900100217285: bbox [1, 1, 638, 267], num_keypoints 0 -> ignore region without points
    crowd = face_of(manifest, "000000217285", 1.0)
    assert crowd["ignore"] and crowd["points"] is None and pd.isna(crowd["scheme"])
    assert (crowd["x2"], crowd["y2"]) == (639.0, 268.0)


@pytest.mark.parametrize("name", sorted(REEXPORTS))
def test_mmpose_face_reexports_scheme_sniffed(realdata: Path, name: str) -> None:
    scheme, faces, labelled_as_1 = REEXPORTS[name]
    path = realdata / name
    raw = json.loads(path.read_text())
    assert sniff_format(path) == "coco_keypoints"
    manifest, rejects = ingest(path)
    assert len(rejects) == 0
    assert manifest.provenance["scheme"] == scheme and set(manifest.faces["scheme"].dropna()) == {scheme}
    assert len(manifest.faces) == len(raw["annotations"]) == faces
    first = raw["annotations"][0]
    image = next(i for i in raw["images"] if i["id"] == first["image_id"])
    x, y, w, h = first["bbox"]
    face = face_of(manifest, Path(image["file_name"]).stem, x)
    assert (face["x2"], face["y2"]) == pytest.approx((x + w, y + h))
    kpts = np.asarray(first["keypoints"], np.float64).reshape(-1, 3)
    if first["num_keypoints"]:
        present = kpts[:, 2] > 0
        assert np.allclose(points(face)[present], kpts[present, :2], atol=1e-4)
    assert (manifest.provenance.get("visibility") == "labelled-as-1") == labelled_as_1


def test_mmpose_visibility_kept_or_read_as_labelled(realdata: Path) -> None:
    cofw, _ = ingest(realdata / "cofw/mmpose/test_cofw.json")  # 1/2: COFW's occlusion flag, kept
    raw = json.loads((realdata / "cofw/mmpose/test_cofw.json").read_text())
    hidden = sum(v == 1 for a in raw["annotations"] for v in a["keypoints"][2::3])
    assert hidden == 15 and sum(int((np.asarray(v) == 1).sum()) for v in cofw.faces["visible"]) == hidden
    wflw, _ = ingest(realdata / "wflw/mmpose_test_wflw.json")  # v = 1 everywhere: "labelled" -> visible
    assert all((np.asarray(v) == 2).all() for v in wflw.faces["visible"])


@pytest.mark.parametrize("name", IBUG68_REEXPORTS)
def test_68_points_refused_without_scheme(realdata: Path, name: str) -> None:
    with pytest.raises(FacedataError, match=r"68 keypoints.*ibug68.*refusing to guess, pass --scheme"):
        ingest(realdata / name)
    manifest, _ = ingest(realdata / name, format_options={"scheme": "ibug68"})
    assert set(manifest.faces["scheme"]) == {"ibug68"}


def test_17_points_need_a_person_category(realdata: Path, tmp_path: Path) -> None:
    raw = json.loads((realdata / "coco_val2017/mmpose/test_coco.json").read_text())
    raw["categories"] = [{"id": 1, "name": "face", "supercategory": "person", "keypoints": []}]
    path = tmp_path / "faces17.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(FacedataError, match=r"17 keypoints .*could be coco17 or another 17-point order"):
        ingest(path)


def test_300vw_reexport_without_bbox_derives_box(realdata: Path) -> None:
    manifest, _ = ingest(realdata / "300vw/mmpose/anno_300vw.json", images=realdata / "300vw/mmpose",
                         format_options={"scheme": "ibug68"})
    assert len(manifest.faces) == 3 and (manifest.faces["box_source"] == "derived").all()
    face = manifest.faces.iloc[0]
    pts = points(face.to_dict())
    assert pts[0] == pytest.approx([743.224, 197.764])  # as in the JSON (and the 1-based .pts: mmpose copies it)
    assert [face["x1"], face["y1"], face["x2"], face["y2"]] == pytest.approx([*pts.min(0), *pts.max(0)])


def test_scheme_option_errors(realdata: Path) -> None:
    with pytest.raises(FacedataError, match=r"--scheme wflw98: has 98 points.*have 19"):
        ingest(realdata / "aflw/mmpose/test_aflw.json", format_options={"scheme": "wflw98"})
    with pytest.raises(FacedataError, match=r"unknown landmark scheme 'nope'"):
        ingest(realdata / "aflw/mmpose/test_aflw.json", format_options={"scheme": "nope"})
    with pytest.raises(FacedataError, match=r"--scheme: not an option of format wider_bbx_gt"):
        ingest(realdata / "wider_face/wider_face_val_bbx_gt.txt", format_options={"scheme": "ibug68"})


# --------------------------------------------------------------------------------------------- WholeBody


def _wholebody(realdata: Path, tmp_path: Path) -> tuple[Path, dict]:
    """The real coco_mini file with COCO-WholeBody face fields: the 300W re-export's 68 real points on the first
    annotation (face_valid, float visibility 1.0), face_valid false elsewhere (zero box and points)."""
    raw = json.loads((realdata / COCO_MINI).read_text())
    face68 = json.loads((realdata / "300w/mmpose/test_300w.json").read_text())["annotations"][0]
    for k, ann in enumerate(raw["annotations"]):
        ann["face_valid"] = k == 0
        ann["face_box"] = face68["bbox"] if k == 0 else [0, 0, 0, 0]
        ann["face_kpts"] = [float(v) for v in face68["keypoints"]] if k == 0 else [0.0] * 204
    path = tmp_path / "coco_wholebody_val.json"
    path.write_text(json.dumps(raw))
    return path, raw


def test_wholebody_face_points(realdata: Path, tmp_path: Path) -> None:
    path, raw = _wholebody(realdata, tmp_path)
    manifest, rejects = ingest(path, format_options={"wholebody_face": True})
    assert len(rejects) == 0
    faces = manifest.faces
    assert len(faces) == len(raw["annotations"])
    with_face = faces[faces["points"].notna()]
    assert len(with_face) == 1 and with_face.iloc[0]["scheme"] == "ibug68" and not with_face.iloc[0]["ignore"]
    first = raw["annotations"][0]
    x, y, w, h = first["face_box"]
    assert [with_face.iloc[0][k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx([x, y, x + w, y + h])
    assert points(with_face.iloc[0].to_dict())[30] == pytest.approx(first["face_kpts"][90:92])
    assert (np.asarray(with_face.iloc[0]["visible"]) == 2).all()
    # every other person: its face is not annotated -> an ignore region over the person's box
    others = faces[faces["points"].isna()]
    assert others["ignore"].all() and len(others) == len(raw["annotations"]) - 1
    second = raw["annotations"][1]
    assert face_of(manifest, f"{second['image_id']:012d}", second["bbox"][0])["ignore"]
    with pytest.raises(FacedataError, match=r"--scheme coco17: --wholebody-face reads ibug68"):
        ingest(path, format_options={"wholebody_face": True, "scheme": "coco17"})


# --------------------------------------------------------------------------------------------- bad input


def _mini(realdata: Path) -> dict:
    return json.loads((realdata / COCO_MINI).read_text())


def _first_with_points(raw: dict) -> dict:
    return next(a for a in raw["annotations"] if a["num_keypoints"] > 0)


def _break_keypoint_length(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["keypoints"] = ann["keypoints"][:-1]
    return ann["id"]


def _break_bbox(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["bbox"][2] = -5.0
    return ann["id"]


def _unknown_image(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["image_id"] = 999999999
    return ann["id"]


def _duplicate_annotation(raw: dict) -> int:
    ann = copy.deepcopy(_first_with_points(raw))
    ann["bbox"][0] += 10
    raw["annotations"].append(ann)
    return ann["id"]


def _bad_visibility(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["keypoints"][2] = 3
    return ann["id"]


def _num_keypoints(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["num_keypoints"] += 1
    return ann["id"]


def _not_a_number(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["keypoints"][0] = "433"
    return ann["id"]


def _escaping_name(raw: dict) -> int:
    raw["images"][0]["file_name"] = "../../etc/passwd.jpg"
    return raw["images"][0]["id"]


def _absolute_name(raw: dict) -> int:
    raw["images"][0]["file_name"] = "/tmp/000000397133.jpg"
    return raw["images"][0]["id"]


def _duplicate_image(raw: dict) -> int:
    raw["images"].append(dict(raw["images"][1], file_name="other.jpg"))
    return raw["images"][1]["id"]


def _string_image_id(raw: dict) -> str:
    raw["images"][0]["id"] = "397133"  # its annotations (would be "unknown image": int 397133) removed
    raw["annotations"] = [a for a in raw["annotations"] if a["image_id"] != 397133]
    return "397133"


def _same_file_name(raw: dict) -> int:
    raw["images"][1]["file_name"] = raw["images"][0]["file_name"].replace(".jpg", ".png")
    return raw["images"][1]["id"]


def _short_bbox(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["bbox"] = ann["bbox"][:3]
    return ann["id"]


def _no_box_no_points(raw: dict) -> int:
    ann = next(a for a in raw["annotations"] if a["num_keypoints"] == 0)
    del ann["bbox"]
    return ann["id"]


def _bad_crowd(raw: dict) -> int:
    ann = _first_with_points(raw)
    ann["iscrowd"] = "no"
    return ann["id"]


# kind -> (break the JSON, returns the id named, field, reason pattern)
BAD = {
    "keypoints length": (_break_keypoint_length, "keypoints", r"expected 51 values \(17 points x y v\), got 50"),
    "negative bbox": (_break_bbox, "bbox", r"negative size w = -5"),
    "unknown image id": (_unknown_image, "image_id", r"no image with this id"),
    "duplicate annotation id": (_duplicate_annotation, "id", r"duplicate annotation id"),
    "visibility": (_bad_visibility, "keypoints", r"point 0 has visibility 3, expected 0, 1 or 2"),
    "num_keypoints": (_num_keypoints, "num_keypoints", r"says \d+, \d+ keypoints have v > 0"),
    "non-numeric keypoint": (_not_a_number, "keypoints", r"expected a list of numbers"),
    "file_name escaping": (_escaping_name, "file_name", r"relative to the image root without '\.\.'"),
    "absolute file_name": (_absolute_name, "file_name", r"relative to the image root"),
    "duplicate image id": (_duplicate_image, "id", r"duplicate image id"),
    "non-integer image id": (_string_image_id, "id", r"expected an integer image id"),
    "file_name of another image": (_same_file_name, "file_name", r"is also image id 397133"),
    "bbox of 3 numbers": (_short_bbox, "bbox", r"expected 4 numbers \[x, y, w, h\]"),
    "no bbox, no points": (_no_box_no_points, "bbox", r"no box and no labelled keypoint"),
    "iscrowd": (_bad_crowd, "iscrowd", r"expected 0 or 1, got \"no\""),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_skipped_or_strict(realdata: Path, tmp_path: Path, kind: str) -> None:
    breaker, field, reason = BAD[kind]
    raw = _mini(realdata)
    total = len(raw["annotations"])
    named = breaker(raw)
    path = tmp_path / "person_keypoints_bad.json"
    path.write_text(json.dumps(raw))
    manifest, rejects = ingest(path)
    assert len(rejects) == 1, rejects.summary_lines()
    item = rejects.items[0]
    assert item.file == str(path) and item.field == field and str(named) in item.reason
    assert item.reason.startswith(("annotation id", "image id"))
    assert re.search(reason, item.reason)
    assert len(manifest.faces) < len(raw["annotations"]) or len(manifest.images) < len(raw["images"])
    assert len(manifest.faces) >= total - 3
    with pytest.raises(InputError) as err:
        ingest(path, strict=True)
    assert str(path) in str(err.value) and f": {field}: " in str(err.value) and str(named) in str(err.value)


def test_identical_annotation_kept_once_even_strict(realdata: Path, tmp_path: Path) -> None:
    raw = _mini(realdata)
    twin = dict(_first_with_points(raw), id=1)
    raw["annotations"].append(twin)
    path = tmp_path / "person_keypoints_twin.json"
    path.write_text(json.dumps(raw))
    for strict in (False, True):
        manifest, rejects = ingest(path, strict=strict)
        assert len(manifest.faces) == len(raw["annotations"]) - 1 and manifest.provenance["duplicates"] == 1
        assert [item.kind for item in rejects.items] == ["duplicate face"]


def test_bad_json_and_missing_lists(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [{"id": 1,')
    with pytest.raises(InputError, match=r"broken.json:1: file: not valid JSON"):
        ingest(broken, format="coco_keypoints")
    other = tmp_path / "other.json"
    other.write_text('{"images": []}')
    with pytest.raises(InputError, match=r"expected a COCO JSON object with 'images' and 'annotations'"):
        ingest(other)


def test_images_missing_and_wrong_size(realdata: Path, tmp_path: Path) -> None:
    raw = json.loads((realdata / "cofw/mmpose/test_cofw.json").read_text())
    path = tmp_path / "test_cofw.json"
    path.write_text(json.dumps(raw))
    first, second = raw["images"]
    image = cv2.imread(str(realdata / "cofw/mmpose" / first["file_name"]))
    cv2.imwrite(str(tmp_path / first["file_name"]), cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2)))
    manifest, rejects = ingest(path, images=tmp_path)
    kinds = {item.kind: item for item in rejects.items}
    assert set(kinds) == {"wrong image size", "missing image"}
    assert f"the JSON says {first['width']}x{first['height']}" in kinds["wrong image size"].reason
    assert second["file_name"] in kinds["missing image"].reason
    assert len(manifest.images) == 0 and len(manifest.faces) == 0


# --------------------------------------------------------------------------------------------- CLI


def test_cli_ingest_scheme_and_ambiguous(realdata: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    source = realdata / "300w/mmpose/test_300w.json"
    out = tmp_path / "300w.parquet"
    result = runner.invoke(main, ["ingest", str(source), "-o", str(out)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "refusing to guess, pass --scheme" in result.output and not out.exists()
    result = runner.invoke(main, ["ingest", str(source), "--scheme", "ibug68", "--images",
                                  str(source.parent), "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out)
    assert len(manifest.faces) == 2 and set(manifest.faces["scheme"]) == {"ibug68"}
    assert manifest.provenance["source_format"] == "coco_keypoints"
    result = runner.invoke(main, ["ingest", str(realdata / COCO_MINI), "--wholebody-face", "-o",
                                  str(tmp_path / "wb.parquet")])
    assert result.exit_code != 0 and "--wholebody-face: no annotation" in result.output
    assert "not COCO-WholeBody" in result.output and "Traceback" not in result.output
