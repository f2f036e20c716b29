"""Exports (`facedata export`): each format read back by an independent reader written here, on the real
WIDER val and CUHK manifests, must give the manifest's boxes, 5 points and ignore flags; the RetinaFace export
of WIDER val reproduces the published RetinaFace val label.txt; the COCO export loads in pycocotools."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO

from facedata.cli import main
from facedata.errors import FacedataError
from facedata.exports import EXPORTS, export, losses
from facedata.filters import apply_filters, rules_from_options
from facedata.manifest import Manifest
from facedata.parsers import ingest

BOX = ["x1", "y1", "x2", "y2"]


@pytest.fixture(scope="module")
def wider_val(realdata: Path) -> Manifest:
    """WIDER val with the faces under 10 px as ignore regions (so ignore flags are exercised)."""
    manifest, _ = ingest(realdata / "wider_face/wider_face_val_bbx_gt.txt")
    filtered, _ = apply_filters(manifest, rules_from_options(10.0, False, (), False, "ignore"))
    return filtered


@pytest.fixture(scope="module")
def cuhk(realdata: Path) -> Manifest:
    """CUHK train list with the images present (so sizes are probed), 5 visible points per face."""
    manifest, _ = ingest(realdata / "lfw_net_7876/trainImageList.txt", images=realdata / "lfw_net_7876")
    return manifest


# --- what the manifest says, and independent readers of each format -------------------------------------


def expected(manifest: Manifest) -> pd.DataFrame:
    """One row per face: rel_path, box, ignore, and the 5 points (NaN where absent) with visibility."""
    faces = manifest.faces.merge(manifest.images[["image_id", "rel_path"]], on="image_id")
    rows = []
    for face in faces.itertuples():
        points, visible = np.full(10, np.nan), np.zeros(5, int)
        if face.scheme == "mtcnn5" and face.points is not None and len(face.points):
            visible = np.asarray(face.visible, int)
            points = np.where(np.repeat(visible > 0, 2), np.asarray(face.points, float), np.nan)
        rows.append((face.rel_path, float(face.x1), float(face.y1), float(face.x2), float(face.y2),
                     bool(face.ignore), points, visible))
    return _frame(rows)


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["rel_path", *BOX, "ignore", "points", "visible"])
    return frame.sort_values(["rel_path", *BOX]).reset_index(drop=True)


def read_coco(path: Path) -> pd.DataFrame:
    data = json.loads(path.read_text())
    names = {image["id"]: image["file_name"] for image in data["images"]}
    rows = []
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        kp = np.asarray(ann.get("keypoints", [0] * 15), float).reshape(5, 3)
        visible = kp[:, 2].astype(int)
        points = np.where(np.repeat(visible > 0, 2), kp[:, :2].ravel(), np.nan)
        rows.append((names[ann["image_id"]], x, y, x + w, y + h, bool(ann["iscrowd"]), points, visible))
    return _frame(rows)


def read_voc(folder: Path) -> pd.DataFrame:
    rows = []
    for xml in folder.rglob("*.xml"):
        root = ET.parse(xml).getroot()
        rel_path = "/".join(part for part in (root.findtext("folder"), root.findtext("filename")) if part)
        for obj in root.iter("object"):
            box = [float(obj.find("bndbox").findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
            rows.append((rel_path, *box, obj.findtext("difficult") == "1", np.full(10, np.nan), np.zeros(5, int)))
    return _frame(rows)


def read_retinaface(path: Path) -> pd.DataFrame:
    rows, rel_path = [], None
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            rel_path = line[2:]
            continue
        values = [float(v) for v in line.split()]
        x, y, w, h = values[:4]
        triples = np.asarray(values[4:19] or [-1] * 15).reshape(5, 3)
        visible = np.where(triples[:, 2] < 0, 0, np.where(triples[:, 2] == 1, 1, 2))
        points = np.where(np.repeat(visible > 0, 2), triples[:, :2].ravel(), np.nan)
        rows.append((rel_path, x, y, x + w, y + h, False, points, visible))
    return _frame(rows)


def read_yolo(folder: Path, manifest: Manifest) -> pd.DataFrame:
    images = manifest.images.set_index(manifest.images["rel_path"].map(lambda p: str(Path(p).with_suffix(".txt"))))
    rows = []
    for txt in folder.rglob("*.txt"):
        image = images.loc[txt.relative_to(folder).as_posix()]
        scale = np.array([image.width, image.height], float)
        for line in txt.read_text().splitlines():
            values = np.asarray(line.split()[1:], float)
            (cx, cy), (w, h) = values[:2] * scale, values[2:4] * scale
            raw = values[4:14].reshape(5, 2) if len(values) > 4 else np.full((5, 2), -1.0)
            visible = np.where((raw == -1).all(axis=1), 0, 2)
            points = np.where(np.repeat(visible > 0, 2), (raw * scale).ravel(), np.nan)
            rows.append((image.rel_path, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, False, points, visible))
    return _frame(rows)


def assert_same(got: pd.DataFrame, want: pd.DataFrame, *, ignore: bool, points: bool, atol: float) -> None:
    assert len(got) == len(want)
    assert (got["rel_path"] == want["rel_path"]).all()
    np.testing.assert_allclose(got[BOX].to_numpy(float), want[BOX].to_numpy(float), atol=atol, rtol=0)
    if ignore:
        assert (got["ignore"] == want["ignore"]).all()
    if points:
        np.testing.assert_allclose(np.stack(got["points"]), np.stack(want["points"]), atol=atol, rtol=0)
        assert (np.stack(got["visible"]) == np.stack(want["visible"])).all()


# --- round trips -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["coco", "voc", "retinaface"])
def test_wider_val_round_trips(tmp_path: Path, wider_val: Manifest, name: str) -> None:
    out = tmp_path / name
    export(wider_val, name, out)
    got = {"coco": read_coco, "voc": read_voc, "retinaface": read_retinaface}[name](out)
    assert wider_val.faces["ignore"].sum() > 0  # the filter made ignore regions
    assert_same(got, expected(wider_val), ignore=name != "retinaface", points=False, atol=0)


@pytest.mark.parametrize("name", ["coco", "voc", "retinaface", "yolo"])
def test_cuhk_round_trips_with_points(tmp_path: Path, cuhk: Manifest, name: str) -> None:
    out = tmp_path / name
    export(cuhk, name, out)
    readers = {"coco": read_coco, "voc": read_voc, "retinaface": read_retinaface,
               "yolo": lambda p: read_yolo(p, cuhk)}
    got = readers[name](out)
    assert_same(got, expected(cuhk), ignore=False, points=name != "voc", atol=1e-3 if name == "yolo" else 0)


def test_every_image_is_written_including_those_without_faces(tmp_path: Path, wider_val: Manifest) -> None:
    empty = set(wider_val.images["image_id"]) - set(wider_val.faces["image_id"])
    assert len(empty) == 4
    export(wider_val, "voc", tmp_path / "voc")
    export(wider_val, "retinaface", tmp_path / "label.txt")
    assert len(list((tmp_path / "voc").rglob("*.xml"))) == len(wider_val.images) == 3226
    assert (tmp_path / "label.txt").read_text().count("\n# ") + 1 == 3226


def test_retinaface_export_reproduces_the_published_val_labels(tmp_path: Path, realdata: Path) -> None:
    """The published file differs only where facedata keeps more: the 4 faceless images' `#` lines, and it
    repeats one face the WIDER file lists twice (ingest keeps it once)."""
    manifest, _ = ingest(realdata / "wider_face/wider_face_val_bbx_gt.txt")
    export(manifest, "retinaface", tmp_path / "label.txt")
    ours = (tmp_path / "label.txt").read_text().splitlines()
    published = (realdata / "wider_face_retinaface_labels/val/label.txt").read_text().splitlines()
    faceless = {f"# {p}" for p in manifest.images["rel_path"][
        ~manifest.images["image_id"].isin(manifest.faces["image_id"])]}
    assert [line for line in ours if line not in faceless] == _without_one_repeat(published)


def _without_one_repeat(lines: list[str]) -> list[str]:
    """The published lines with the one face line that repeats an earlier face of its image removed."""
    kept, seen, removed = [], set(), 0
    for line in lines:
        if line.startswith("#"):
            seen = set()
        elif line in seen:
            removed += 1
            continue
        seen.add(line)
        kept.append(line)
    assert removed == 1
    return kept


def test_coco_export_loads_in_pycocotools(tmp_path: Path, wider_val: Manifest, cuhk: Manifest) -> None:
    for manifest in (wider_val, cuhk):
        export(manifest, "coco", tmp_path / "out.json", overwrite=True)
        coco = COCO(str(tmp_path / "out.json"))
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(coco.anns) == len(anns) == len(manifest.faces)  # unique annotation ids
        assert len(coco.getImgIds()) == len(manifest.images)
        faces = manifest.faces
        areas = ((faces["x2"] - faces["x1"]) * (faces["y2"] - faces["y1"])).to_numpy(float)
        np.testing.assert_allclose(sorted(a["area"] for a in anns), np.sort(areas), rtol=1e-6)
        crowd = coco.getAnnIds(iscrowd=True)
        assert len(crowd) == int(faces["ignore"].sum())
    assert coco.loadCats(1)[0]["keypoints"][0] and all(a["num_keypoints"] == 5 for a in anns)


# --- what a format cannot hold, refusals, atomic writes -----------------------------------------------------


def test_losses_are_named_and_counted(wider_val: Manifest, cuhk: Manifest) -> None:

    lost = [str(x) for x in losses(wider_val, EXPORTS.get("retinaface"))]
    n_ignore = int(wider_val.faces["ignore"].sum())
    assert lost == ["39,703 faces with attributes (blur, expression, illumination, occlusion, pose, invalid)",
                    f"{n_ignore:,} faces with ignore regions"]
    assert losses(cuhk, EXPORTS.get("voc")) == []  # 5 visible points per face: VOC's <lm> holds them
    assert [str(x) for x in losses(cuhk, EXPORTS.get("retinaface"))] == ["101 images with image sizes"]
    assert losses(cuhk, EXPORTS.get("coco")) == []


def _manifest_file(tmp_path: Path, manifest: Manifest) -> Path:
    path = tmp_path / "m.parquet"
    manifest.write(path)
    return path


def test_cli_warns_refuses_under_strict_and_never_overwrites(tmp_path: Path, cuhk: Manifest) -> None:
    source = _manifest_file(tmp_path, _with_point_cases(cuhk))
    runner = CliRunner()
    out = tmp_path / "voc"
    result = runner.invoke(main, ["export", "voc", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: voc cannot hold 1 faces with mtcnn5 points with some absent" in result.output
    before = sorted(p.read_bytes() for p in out.rglob("*.xml"))
    strict = runner.invoke(main, ["export", "voc", str(source), "-o", str(tmp_path / "v2"), "--strict"])
    assert strict.exit_code == 2 and "cannot hold 1 faces with mtcnn5 points with some absent" in strict.output
    assert not (tmp_path / "v2").exists()
    again = runner.invoke(main, ["export", "voc", str(source), "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert sorted(p.read_bytes() for p in out.rglob("*.xml")) == before
    same = runner.invoke(main, ["export", "coco", str(source), "-o", str(source), "--overwrite"])
    assert same.exit_code == 2 and "same file" in same.output
    assert Manifest.read(source).faces.shape == cuhk.faces.shape


def test_yolo_without_image_sizes_is_refused(tmp_path: Path, wider_val: Manifest) -> None:
    source = _manifest_file(tmp_path, wider_val)
    result = CliRunner().invoke(main, ["export", "yolo", str(source), "-o", str(tmp_path / "yolo")])
    assert result.exit_code == 2
    assert "yolo needs image sizes but 3,226 image(s) have no width/height" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "yolo").exists()


def test_a_failed_folder_export_leaves_the_old_output(tmp_path: Path, cuhk: Manifest) -> None:
    export(cuhk, "yolo", tmp_path / "yolo")
    before = {p: p.read_bytes() for p in (tmp_path / "yolo").rglob("*.txt")}
    broken = Manifest(cuhk.images.assign(width=0), cuhk.faces, cuhk.provenance)  # a division by zero mid-write
    with pytest.raises(ZeroDivisionError):
        export(broken, "yolo", tmp_path / "yolo", overwrite=True)
    assert {p: p.read_bytes() for p in (tmp_path / "yolo").rglob("*.txt")} == before
    assert [p.name for p in tmp_path.iterdir()] == ["yolo"]


def test_ambiguous_outputs_are_refused(tmp_path: Path, cuhk: Manifest) -> None:
    """Two images whose per-image files would coincide, or images under two roots, are errors naming them."""
    images = cuhk.images.copy()
    images.loc[images.index[1], "rel_path"] = str(Path(images["rel_path"].iloc[0]).with_suffix(".png"))
    with pytest.raises(FacedataError, match=r"voc writes one file per image but .* \(2 images clash\)"):
        export(Manifest(images, cuhk.faces, cuhk.provenance), "voc", tmp_path / "voc")
    two_roots = cuhk.images.assign(root=["a", "b"] * (len(cuhk.images) // 2) + ["a"] * (len(cuhk.images) % 2))
    with pytest.raises(FacedataError, match="images under 2 roots"):
        export(Manifest(two_roots, cuhk.faces, cuhk.provenance), "coco", tmp_path / "c.json")
    assert list(tmp_path.iterdir()) == []


def test_coco_export_ingests_back_through_facedata(tmp_path: Path, cuhk: Manifest) -> None:
    """ingest(export(m)) == m for what COCO holds, through facedata's own coco_keypoints parser: boxes, the 5
    points with visibility (hidden, absent and negative coordinates included) and ignore regions (iscrowd)."""
    manifest = _with_point_cases(cuhk)
    manifest.faces.loc[manifest.faces.index[0], "ignore"] = True
    export(manifest, "coco", tmp_path / "faces.json")
    back, rejects = ingest(tmp_path / "faces.json", format="coco_keypoints")
    assert len(rejects) == 0 and back.faces["scheme"].eq("mtcnn5").sum() == len(manifest.faces) - 1
    assert_same(expected(back), expected(manifest), ignore=True, points=True, atol=0)
    assert expected(back)["ignore"].sum() == 1


def test_other_schemes_and_pose_are_named(tmp_path: Path, realdata: Path) -> None:
    """AFLW2000-3D: 68 iBUG points and a head pose per face; every format names both, --strict refuses."""
    source = tmp_path / "aflw.parquet"
    manifest, _ = ingest(realdata / "aflw2000_3d")
    manifest.faces.loc[manifest.faces.index[:3], "weight"] = 2.0  # as `fuse --weight` sets it
    manifest.write(source)
    for name in EXPORTS.names():
        held = {str(x) for x in losses(manifest, EXPORTS.get(name))}
        assert {"16 faces with points of scheme(s) ibug68", "16 faces with head pose",
                "16 faces with boxes derived from points", "3 faces with sampling weights"} <= held, name
    result = CliRunner().invoke(main, ["export", "coco", str(source), "-o", str(tmp_path / "c.json"), "--strict"])
    assert result.exit_code == 2 and not (tmp_path / "c.json").exists()
    assert "coco cannot hold 16 faces with points of scheme(s) ibug68; 16 faces with head pose" in result.output


def test_overwrite_never_removes_a_folder_holding_other_files(tmp_path: Path, cuhk: Manifest) -> None:
    """`-o .` beside the manifest, or a folder of images: --overwrite refuses instead of replacing it."""
    source = _manifest_file(tmp_path, cuhk)
    result = CliRunner().invoke(main, ["export", "voc", str(source), "-o", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2 and "which is not a voc export file" in result.output
    assert source.exists() and Manifest.read(source).faces.shape == cuhk.faces.shape
    with pytest.raises(FacedataError, match="not a coco export file"):
        export(cuhk, "coco", tmp_path, overwrite=True)


# --- ingest(export(m)) == m through facedata's own parsers (retinaface_txt, voc_xml) --------------------------


def _with_point_cases(manifest: Manifest) -> Manifest:
    """CUHK faces plus the cases a 5-point format must carry: a hidden point (the nose, and on another face only
    the 5th point), an absent point, a face without points, a visible point at negative coordinates."""
    faces = manifest.faces.copy()
    index = faces.index
    faces.at[index[1], "visible"] = np.array([2, 2, 1, 2, 2], np.int8)
    faces.at[index[2], "visible"] = np.array([2, 2, 2, 2, 1], np.int8)
    points = np.asarray(faces.at[index[3], "points"], np.float32).copy()
    points[6:8] = np.nan
    faces.at[index[3], "points"], faces.at[index[3], "visible"] = points, np.array([2, 2, 2, 0, 2], np.int8)
    faces.at[index[4], "points"], faces.at[index[4], "visible"] = np.full(10, np.nan, np.float32), np.zeros(5, np.int8)
    points = np.asarray(faces.at[index[5], "points"], np.float32).copy()
    points[0:2] = [-3.5, -2.25]  # a real point outside the image's top-left corner, not an absent one
    faces.at[index[5], "points"] = points
    return Manifest(manifest.images, faces, manifest.provenance)


def test_retinaface_export_ingests_back_through_retinaface_txt(tmp_path: Path, cuhk: Manifest) -> None:
    """Boxes (float32 exact), every point with its flag (0.0 visible, 1.0 hidden, -1 absent, also at negative
    coordinates), faces without points and image order come back; a line has the published 20 fields."""
    manifest = _with_point_cases(cuhk)
    out = tmp_path / "train" / "label.txt"
    out.parent.mkdir()
    export(manifest, "retinaface", out)
    assert {len(line.split()) for line in out.read_text().splitlines() if not line.startswith("#")} == {20}
    back, rejects = ingest(out, format="retinaface_txt")
    assert len(rejects) == 0
    assert back.images["rel_path"].tolist() == manifest.images["rel_path"].tolist()
    assert_same(expected(back), expected(manifest), ignore=False, points=True, atol=0)
    assert back.faces[["x1", "y1", "x2", "y2"]].equals(manifest.faces[["x1", "y1", "x2", "y2"]])


def test_voc_export_ingests_back_through_voc_xml(tmp_path: Path, wider_val: Manifest) -> None:
    """Nested rel_paths (event folders), boxes in the manifest frame, ignore regions as difficult (read back as
    `ignore`), faceless images; image sizes when known."""
    export(wider_val, "voc", tmp_path / "voc")
    back, rejects = ingest(tmp_path / "voc")  # the nested folder is sniffed as VOC
    assert len(rejects) == 0 and back.provenance["source_format"] == "voc_xml"
    assert sorted(back.images["rel_path"]) == sorted(wider_val.images["rel_path"])
    assert len(back.images) == 3226 and len(back.faces) == len(wider_val.faces)
    assert_same(expected(back), expected(wider_val), ignore=True, points=False, atol=0)


def test_voc_export_with_points_and_sizes_ingests_back(tmp_path: Path, cuhk: Manifest) -> None:
    """libfacedetection's landmark VOC form: <lm> x1..y5, <visible> (the 5th point's flag), <has_lm>."""
    manifest = _with_point_cases(cuhk)
    lost = export(manifest, "voc", tmp_path / "voc")
    assert [str(x) for x in lost] == ["1 faces with mtcnn5 points with some absent",
                                      "1 faces with hidden points other than the 5th"]
    back, rejects = ingest(tmp_path / "voc", format="voc_xml")
    assert len(rejects) == 0
    sizes = back.images.set_index("rel_path")[["width", "height"]]
    images = manifest.images
    assert sizes.loc[images["rel_path"]].to_numpy().tolist() == images[["width", "height"]].to_numpy().tolist()
    got, want = expected(back), expected(manifest)
    held = ~want["rel_path"].isin(_paths_of(manifest, [1, 3]))  # the faces the warnings name
    assert_same(got[held].reset_index(drop=True), want[held].reset_index(drop=True), ignore=False, points=True,
                atol=0)
    partial = got[want["rel_path"].isin(_paths_of(manifest, [3]))]
    assert (np.stack(partial["visible"]) == 0).all()  # points of a partly annotated face are not written


def _paths_of(manifest: Manifest, rows: list[int]) -> list[str]:
    ids = manifest.faces["image_id"].iloc[rows]
    return manifest.images.set_index("image_id").loc[ids, "rel_path"].tolist()


def test_real_libfacedetection_voc_files_round_trip(tmp_path: Path, realdata: Path) -> None:
    """libfacedetection's real landmark VOC files: <visible> is read as the 5th point's flag (1 on 2 faces), and
    ingest -> export voc -> ingest gives the same boxes, points, flags and image sizes."""
    first, _ = ingest(realdata / "wider_face_libfacedetection/WIDER_FACE_landmark")
    codes = np.stack([np.asarray(v) for v in first.faces["visible"]])
    assert (codes[:, :4] == 2).all() and int((codes[:, 4] == 1).sum()) == 2  # the files' two <visible>1
    assert lost_names(first, "voc") == []
    export(first, "voc", tmp_path / "voc")
    back, rejects = ingest(tmp_path / "voc", format="voc_xml")
    assert len(rejects) == 0
    assert_same(expected(back), expected(first), ignore=True, points=True, atol=0)
    columns = ["rel_path", "width", "height"]
    assert back.images[columns].sort_values("rel_path").values.tolist() == first.images[columns].sort_values(
        "rel_path").values.tolist()


def lost_names(manifest: Manifest, name: str) -> list[str]:
    return [str(x) for x in losses(manifest, EXPORTS.get(name))]
