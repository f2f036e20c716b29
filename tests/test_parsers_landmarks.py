"""Landmark corpora: WFLW lists, LaPa split folders and iBUG `.pts` folders on the real samples (counts and
coordinates read off the files by hand), every bad-input kind of each format, folder ingest and derived boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.errors import FacedataError, InputError
from facedata.manifest import Manifest
from facedata.parsers import FORMATS, ingest, sniff_format

WFLW_LISTS = "wflw/WFLW_annotations/list_98pt_test"
# (file suffix, lines = faces, distinct images) — lines: the WFLW paper's subset sizes; images: `sort -u` of field 197
WFLW_SUBSETS = [
    ("blur", "blur", 773, 650),
    ("expression", "expression", 314, 277),
    ("illumination", "illumination", 698, 572),
    ("largepose", "pose", 326, 311),
    ("makeup", "make_up", 206, 164),
    ("occlusion", "occlusion", 736, 668),
]
POINTS98 = " ".join(f"{100 + i % 7}.5 {200 + i // 7}.25" for i in range(98))  # a well-formed 98-point face


def points(face) -> np.ndarray:
    return np.asarray(face["points"], np.float64).reshape(-1, 2)


# --------------------------------------------------------------------------------------------- WFLW


@pytest.mark.parametrize(("suffix", "flag", "faces", "images"), WFLW_SUBSETS)
def test_wflw_subset_lists_real_counts(realdata: Path, suffix: str, flag: str, faces: int, images: int) -> None:
    path = realdata / WFLW_LISTS / f"list_98pt_test_{suffix}.txt"
    assert sniff_format(path) == "wflw"
    manifest, rejects = ingest(path)
    assert len(rejects) == 0
    assert (len(manifest.faces), len(manifest.images)) == (faces, images)
    assert set(manifest.faces["scheme"]) == {"wflw98"} and set(manifest.faces["box_source"]) == {"derived"}
    assert (manifest.faces[flag] == 1).all()  # a subset list holds exactly the faces with that flag
    others = [a for a in ("pose", "expression", "illumination", "make_up", "occlusion", "blur") if a != flag]
    assert (manifest.faces[others] == -1).all().all()
    assert set(manifest.images["split"]) == {"test"} and manifest.provenance["subset"] == flag


def test_wflw_real_coordinates_kept_outside_the_image(realdata: Path) -> None:
    """Values read off list_98pt_test_blur.txt: line 1 starts `216.123001 264.334991 215.631822 268.580286`,
    line 593 (28_Sports_Fan_Sports_Fan_28_201) `-104.807999 218.707993`, line 449 reaches y = 6039.713558."""
    manifest, _ = ingest(realdata / WFLW_LISTS / "list_98pt_test_blur.txt")
    faces = manifest.faces.set_index("source_line")
    first = points(faces.loc[1])
    assert first[:2].ravel().tolist() == pytest.approx([216.123001, 264.334991, 215.631822, 268.580286], abs=1e-4)
    assert faces.loc[1, "image_id"] == "39--Ice_Skating/39_Ice_Skating_Ice_Skating_39_546"
    far = points(faces.loc[593])
    assert far[0].tolist() == pytest.approx([-104.807999, 218.707993], abs=1e-4)
    assert faces.loc[593, "x1"] == pytest.approx(-104.807999, abs=1e-4)  # derived box = point extent
    assert faces.loc[593, ["x2", "y2"]].tolist() == pytest.approx(far.max(axis=0).tolist(), abs=1e-4)
    assert points(faces.loc[449])[:, 1].max() == pytest.approx(6039.713558, abs=1e-3)
    assert manifest.images.set_index("image_id").loc["28--Sports_Fan/28_Sports_Fan_Sports_Fan_28_201", "event"] == (
        "28--Sports_Fan"
    )


def _wflw_from_mmpose(realdata: Path, tmp_path: Path, rect: bool) -> tuple[Path, Path, list[np.ndarray]]:
    """A WFLW list (rect_attr when `rect`, else 197 fields) of the 4 real faces of mmpose's WFLW test json,
    with the 2 real WFLW (WIDER) images as image root: the full rect_attr files are not in realdata."""
    data = json.loads((realdata / "wflw/mmpose_test_wflw.json").read_text())
    names = {img["id"]: img["file_name"] for img in data["images"]}
    folder = {"36_Football_americanfootball_ball_36_415.jpg": "36--Football", "7_Cheering_Cheering_7_16.jpg":
              "7--Cheering"}
    lines, pts = [], []
    for i, ann in enumerate(data["annotations"]):
        xy = np.asarray(ann["keypoints"], np.float64).reshape(98, 3)[:, :2]
        pts.append(xy)
        fields = [f"{v:.6f}" for v in xy.ravel()]
        if rect:
            x, y, w, h = ann["bbox"]
            fields += [str(round(x)), str(round(y)), str(round(x + w)), str(round(y + h)), "0", "1", "0", str(i % 2),
                       "0", "1"]
        name = names[ann["image_id"]]
        lines.append(" ".join([*fields, f"{folder[name]}/{name}"]))
    path = tmp_path / ("list_98pt_rect_attr_train.txt" if rect else "list_98pt_test.txt")
    path.write_text("\n".join(lines) + "\n")
    return path, realdata / "wflw/WFLW_images", pts


def test_wflw_rect_attr_with_real_images(realdata: Path, tmp_path: Path) -> None:
    path, images, pts = _wflw_from_mmpose(realdata, tmp_path, rect=True)
    assert sniff_format(path) == "wflw"
    manifest, rejects = ingest(path, images=images)
    assert len(rejects) == 0 and len(manifest.faces) == 4 and len(manifest.images) == 2
    sizes = manifest.images.set_index("image_id")[["width", "height"]]
    assert sizes.loc["36--Football/36_Football_americanfootball_ball_36_415"].tolist() == [1024, 661]
    faces = manifest.faces.sort_values("source_line")
    assert set(faces["box_source"]) == {"annotated"} and set(manifest.images["split"]) == {"train"}
    # json face id 2: bbox [432.305, 113.750, 100.689, 101.075] -> rect 432 114 533 215
    assert faces.iloc[0][["x1", "y1", "x2", "y2"]].tolist() == [432, 114, 533, 215]
    assert faces.iloc[0][["pose", "expression", "illumination", "make_up", "occlusion", "blur"]].tolist() == [
        0, 1, 0, 0, 0, 1]
    assert faces["make_up"].tolist() == [0, 1, 0, 1]
    assert points(faces.iloc[0])[0].tolist() == pytest.approx([440.696106, 132.732559], abs=1e-4)
    reread_path = tmp_path / "m.parquet"
    manifest.write(reread_path)
    assert Manifest.read(reread_path).faces["make_up"].tolist() == [0, 1, 0, 1]


def test_wflw_points_outside_a_small_rectangle_are_kept(realdata: Path, tmp_path: Path) -> None:
    """Line 593 of the blur list (x = -104.8, a face cut by the border) with a 100-px rectangle on a 1024 x 768
    image: the face's size is its points' spread (261 px), so the point lies within the tolerance and is kept.
    Measured against the rectangle alone (102 px) it dropped the image."""
    line = (realdata / WFLW_LISTS / "list_98pt_test_blur.txt").read_text().splitlines()[592].split()
    path = tmp_path / "list_98pt_rect_attr_test.txt"
    path.write_text(" ".join([*line[:196], "0", "200", "100", "300", "1", "0", "0", "0", "0", "1", line[196]]) + "\n")
    image = tmp_path / "img" / line[196]
    image.parent.mkdir(parents=True)
    cv2.imwrite(str(image), np.zeros((768, 1024, 3), np.uint8))
    manifest, rejects = ingest(path, images=tmp_path / "img")
    assert len(rejects) == 0 and len(manifest.faces) == 1
    assert points(manifest.faces.iloc[0])[0, 0] == pytest.approx(-104.807999, abs=1e-4)


def _wflw_line(path: str = "1--Handshaking/a.jpg", flags: str = "0 0 0 0 0 0", box: str = "100 200 107 214") -> str:
    return f"{POINTS98} {box} {flags} {path}"


def test_wflw_bad_lines(tmp_path: Path) -> None:
    good = _wflw_line()
    lines = [
        good,
        _wflw_line("1--Handshaking/b.jpg").replace("101.5", "1O1.5", 1),  # line 2: non-numeric (letter O)
        " ".join(good.split()[:100]),  # line 3: wrong field count
        _wflw_line("1--Handshaking/c.jpg", flags="0 0 0 2 0 0"),  # line 4: make-up flag 2
        _wflw_line("../escape.jpg"),  # line 5
        _wflw_line("/abs/d.jpg"),  # line 6
        good,  # line 7: identical repeat of line 1
        _wflw_line("1--Handshaking/e.jpg"),  # line 8: fine
    ]
    path = tmp_path / "list_98pt_rect_attr_train.txt"
    path.write_text("\n".join(lines) + "\n")
    manifest, rejects = ingest(path)
    got = [(r.line, r.field, r.kind) for r in rejects.items]
    assert got == [
        (2, "x1", "bad number"),
        (3, "fields", "wrong field count"),
        (4, "make_up", "unknown attribute code"),
        (5, "path", "bad path"),
        (6, "path", "bad path"),
        (7, "face", "duplicate face"),
    ]
    assert "expected 207 fields (x0 y0 ... x97 y97 x_min_rect" in rejects.items[1].reason
    assert "got 100" in rejects.items[1].reason
    assert "'1O1.5'" in rejects.items[0].reason
    assert sorted(manifest.images["image_id"]) == ["1--Handshaking/a", "1--Handshaking/e"]
    assert manifest.faces["source_line"].tolist() == [1, 8]
    with pytest.raises(InputError, match=r"list_98pt_rect_attr_train.txt:2: x1: expected a number"):
        ingest(path, strict=True)


def test_wflw_missing_image_and_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "WFLW_images"
    (root / "1--Handshaking").mkdir(parents=True)
    cv2.imwrite(str(root / "1--Handshaking/a.jpg"), np.zeros((400, 300, 3), np.uint8))
    outside = tmp_path / "outside.jpg"
    cv2.imwrite(str(outside), np.zeros((400, 300, 3), np.uint8))
    (root / "1--Handshaking/link.jpg").symlink_to(outside)
    path = tmp_path / "list_98pt_test.txt"
    path.write_text("\n".join(
        f"{POINTS98} 1--Handshaking/{name}.jpg" for name in ("a", "missing", "link")) + "\n")
    manifest, rejects = ingest(path, images=root)
    assert [(r.line, r.field, r.kind) for r in rejects.items] == [
        (2, "image", "missing image"), (3, "path", "bad path")]
    assert manifest.images["image_id"].tolist() == ["1--Handshaking/a"]
    assert manifest.images[["width", "height"]].iloc[0].tolist() == [300, 400]


# --------------------------------------------------------------------------------------------- LaPa


def _lapa_split(realdata: Path, tmp_path: Path, split: str = "train") -> tuple[Path, dict[str, np.ndarray]]:
    """A LaPa split folder of the 2 real LaPa images with their 106 points from mmpose's LaPa json (the
    original landmarks/*.txt are not in realdata; LaPa's grammar: a count line, then `x y` lines)."""
    folder = tmp_path / split
    (folder / "landmarks").mkdir(parents=True)
    (folder / "images").mkdir()
    data = json.loads((realdata / "lapa/mmpose/test_lapa.json").read_text())
    names = {img["id"]: img["file_name"] for img in data["images"]}
    pts = {}
    for ann in data["annotations"]:
        name = names[ann["image_id"]]
        xy = np.asarray(ann["keypoints"], np.float64).reshape(106, 3)[:, :2]
        pts[name[:-4]] = xy
        shutil.copy(realdata / "lapa/mmpose" / name, folder / "images" / name)
        body = "\n".join(f"{x:g} {y:g}" for x, y in xy)
        (folder / "landmarks" / f"{name[:-4]}.txt").write_text(f"106\n{body}\n")
    return folder, pts


def test_lapa_split_folder(realdata: Path, tmp_path: Path) -> None:
    folder, pts = _lapa_split(realdata, tmp_path)
    assert sniff_format(folder) == "lapa"
    manifest, rejects = ingest(folder)
    assert len(rejects) == 0
    assert manifest.images["image_id"].tolist() == ["images/10773046825_0", "images/13609937564_5"]
    assert manifest.images[["width", "height"]].to_numpy().tolist() == [[1424, 1494], [486, 496]]
    assert set(manifest.images["split"]) == {"train"} and set(manifest.faces["scheme"]) == {"lapa106"}
    face = manifest.faces.iloc[0]
    # json: point 0 = (406, 644), bbox [388, 541, 652, 654] = the points' extent (x y w h)
    assert points(face)[0].tolist() == [406, 644]
    assert face[["x1", "y1", "x2", "y2", "box_source"]].tolist() == [388, 541, 388 + 652, 541 + 654, "derived"]
    assert manifest.provenance["roots"] == {"lapa": str(folder.resolve())}
    assert len(manifest.provenance["source_files"]) == 2


def _write_lapa(folder: Path, name: str, text: str) -> None:
    (folder / "landmarks" / f"{name}.txt").write_text(text)
    cv2.imwrite(str(folder / "images" / f"{name}.jpg"), np.zeros((300, 300, 3), np.uint8))


def test_lapa_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "val"
    (folder / "landmarks").mkdir(parents=True)
    (folder / "images").mkdir()
    good = "".join(f"{100 + i % 10} {100 + i // 10}\n" for i in range(106))
    _write_lapa(folder, "a_good", "106\n" + good)
    _write_lapa(folder, "b_count", "105\n" + good)  # count line disagrees with the 106 lines
    _write_lapa(folder, "c_not_int", "1O6\n" + good)
    _write_lapa(folder, "d_fields", "106\n" + good.replace("100 100\n", "100 100 7\n", 1))
    _write_lapa(folder, "e_number", "106\n" + good.replace("101 100\n", "101 nan\n", 1))
    _write_lapa(folder, "f_98", "98\n" + "".join(good.splitlines(keepends=True)[:98]))
    _write_lapa(folder, "g_empty", "")
    (folder / "landmarks" / "h_noimage.txt").write_text("106\n" + good)
    (tmp_path / "elsewhere.jpg").write_bytes((folder / "images/a_good.jpg").read_bytes())
    (folder / "landmarks" / "i_link.txt").write_text("106\n" + good)
    (folder / "images" / "i_link.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    manifest, rejects = ingest(folder)
    got = [(Path(r.file).name, r.line, r.field, r.kind) for r in rejects.items]
    assert got == [
        ("b_count.txt", 1, "count", "wrong point count"),
        ("c_not_int.txt", 1, "count", "bad count"),
        ("d_fields.txt", 2, "fields", "wrong field count"),
        ("e_number.txt", 3, "y", "bad number"),
        ("f_98.txt", 1, "count", "wrong point count"),
        ("g_empty.txt", None, "file", "unreadable file"),
        ("h_noimage.txt", None, "image", "missing image"),
        ("i_link.txt", None, "path", "bad path"),
    ]
    assert "count line says 105 points, 106 point lines follow" in rejects.items[0].reason
    assert "expected 106 points (lapa106), got 98" in rejects.items[4].reason
    assert manifest.images["image_id"].tolist() == ["images/a_good"] and set(manifest.images["split"]) == {"val"}
    with pytest.raises(InputError, match=r"b_count.txt:1: count: count line says 105"):
        ingest(folder, strict=True)


# --------------------------------------------------------------------------------------------- iBUG .pts


def test_pts_300vw_folder_header_crlf_lf_and_one_based(realdata: Path) -> None:
    """001/annot/000006.pts (CRLF, `version: 1`) starts `743.224 197.764`; 401/annot/000731.pts says
    `version: 1.0` (6 decimals, first point `354.326810 277.170196`); 000732.pts is LF. Stored minus 1."""
    folder = realdata / "300vw/mmpose"
    assert sniff_format(folder) == "ibug_pts"
    manifest, rejects = ingest(folder)
    assert len(rejects) == 0
    assert manifest.images["image_id"].tolist() == [
        "001/imgs/000006", "001/imgs/000009", "401/imgs/000731", "401/imgs/000732"]
    assert manifest.images[["width", "height"]].to_numpy().tolist() == [[1280, 720]] * 2 + [[700, 512]] * 2
    assert set(manifest.images["source"]) == {"ibug_300vw"} and set(manifest.faces["scheme"]) == {"ibug68"}
    faces = manifest.faces.set_index("image_id")
    assert points(faces.loc["001/imgs/000006"])[0].tolist() == pytest.approx([742.224, 196.764], abs=1e-4)
    assert points(faces.loc["401/imgs/000731"])[0].tolist() == pytest.approx([353.32681, 276.170196], abs=1e-4)
    assert manifest.provenance["coordinate_origin"]["source"] == 1
    assert manifest.provenance["headerless_files"] == 0
    assert set(manifest.faces["box_source"]) == {"derived"}


def test_pts_300w_headerless_folder(realdata: Path) -> None:
    """helen/testset/2968560214_1.pts line 16 is `683.000000 480.779703` on a 683-px-wide image: the right
    edge pixel in 1-based coordinates, 682 once 0-based."""
    folder = realdata / "300w/spinkoo"
    manifest, rejects = ingest(folder)
    assert len(rejects) == 0 and len(manifest.faces) == 16 and manifest.provenance["headerless_files"] == 16
    assert set(manifest.images["source"]) == {"ibug_300w"}
    faces = manifest.faces.set_index("image_id")
    helen = points(faces.loc["helen/testset/2968560214_1"])
    assert helen[15].tolist() == pytest.approx([682.0, 479.779703], abs=1e-4)
    assert helen[:, 0].max() == pytest.approx(682.0)
    image = manifest.images.set_index("image_id").loc["helen/testset/2968560214_1"]
    assert image["width"] == 683
    afw = faces.loc["afw/afw/134212_1"]  # first line `721.189915 229.034461`
    assert points(afw)[0].tolist() == pytest.approx([720.189915, 228.034461], abs=1e-4)
    assert afw["x1"] == pytest.approx(points(afw)[:, 0].min())


PTS_BODY = "".join(f"{101 + i % 10}.5 {101 + i // 10}.5\n" for i in range(68))


def _write_pts(folder: Path, name: str, text: str, image: bool = True, newline: str = "\n") -> None:
    (folder / f"{name}.pts").write_bytes(text.replace("\n", newline).encode())
    if image:
        cv2.imwrite(str(folder / f"{name}.png"), np.zeros((240, 320, 3), np.uint8))


def test_pts_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "300w"
    folder.mkdir()
    header = "version: 1\nn_points: 68\n{\n"
    _write_pts(folder, "a_good", header + PTS_BODY + "}\n", newline="\r\n")
    _write_pts(folder, "b_count", "version: 1\nn_points: 67\n{\n" + PTS_BODY + "}\n")
    _write_pts(folder, "c_brace", header + PTS_BODY)  # no closing brace
    _write_pts(folder, "d_fields", header + PTS_BODY.replace("101.5 101.5\n", "101.5\n", 1) + "}\n")
    _write_pts(folder, "e_number", header + PTS_BODY.replace("102.5 101.5", "102.5 abc", 1) + "}\n")
    _write_pts(folder, "f_39", "version: 1\nn_points: 39\n{\n" + "".join(PTS_BODY.splitlines(True)[:39]) + "}\n")
    _write_pts(folder, "g_header", "version 1\nn_points: 68\n{\n" + PTS_BODY + "}\n")
    _write_pts(folder, "h_noimage", header + PTS_BODY + "}\n", image=False)
    (tmp_path / "outside.png").write_bytes((folder / "a_good.png").read_bytes())
    _write_pts(folder, "i_link", header + PTS_BODY + "}\n", image=False)
    (folder / "i_link.png").symlink_to(tmp_path / "outside.png")
    manifest, rejects = ingest(folder)
    got = [(Path(r.file).name, r.line, r.field, r.kind) for r in rejects.items]
    assert got == [
        ("b_count.pts", 2, "n_points", "wrong point count"),
        ("c_brace.pts", None, "braces", "bad header"),
        ("d_fields.pts", 4, "fields", "wrong field count"),
        ("e_number.pts", 5, "y", "bad number"),
        ("f_39.pts", 2, "n_points", "wrong point count"),
        ("g_header.pts", 1, "header", "bad header"),
        ("h_noimage.pts", None, "image", "missing image"),
        ("i_link.pts", None, "path", "bad path"),
    ]
    assert "n_points says 67, 68 point lines follow" in rejects.items[0].reason
    assert manifest.images["rel_path"].tolist() == ["a_good.png"]
    assert points(manifest.faces.iloc[0])[0].tolist() == [100.5, 100.5]  # 101.5 1-based
    assert manifest.images[["width", "height"]].iloc[0].tolist() == [320, 240]
    with pytest.raises(InputError, match=r"b_count.pts:2: n_points: n_points says 67"):
        ingest(folder, strict=True)


def test_pts_duplicate_face_kept_once_and_conflict_skipped(tmp_path: Path) -> None:
    """300VW layout: `annot/` + `imgs/`; a copy of a .pts beside its image names the same image again."""
    video = tmp_path / "001"
    (video / "annot").mkdir(parents=True)
    (video / "imgs").mkdir()
    text = "version: 1\nn_points: 68\n{\n" + PTS_BODY + "}\n"
    for name in ("000001", "000002"):
        (video / "annot" / f"{name}.pts").write_text(text)
        cv2.imwrite(str(video / "imgs" / f"{name}.jpg"), np.zeros((240, 320, 3), np.uint8))
    (video / "imgs" / "000001.pts").write_text(text)  # same points: the same face
    (video / "imgs" / "000002.pts").write_text(text.replace("101.5 101.5", "99.5 101.5", 1))  # other points
    manifest, rejects = ingest(tmp_path)
    assert [(str(Path(r.file).relative_to(tmp_path)), r.kind) for r in rejects.items] == [
        ("001/imgs/000001.pts", "duplicate face"), ("001/imgs/000002.pts", "duplicate image")]
    assert manifest.images["image_id"].tolist() == ["001/imgs/000001", "001/imgs/000002"]
    assert len(manifest.faces) == 2
    with pytest.raises(InputError, match="000002.pts: image: .* with other points"):
        ingest(tmp_path, strict=True)  # the repaired duplicate does not stop a strict run; the conflict does


# --------------------------------------------------------------------------------------------- CLI, registry


def test_formats_lists_the_landmark_formats() -> None:
    assert {"wflw", "lapa", "ibug_pts"} <= set(FORMATS.names())
    out = CliRunner().invoke(main, ["formats"]).output
    assert "wflw98" in out and "lapa106" in out and "ibug68" in out


def test_cli_ingest_folders_and_bad_input(realdata: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "vw.parquet"
    result = runner.invoke(main, ["ingest", str(realdata / "300vw/mmpose"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "format ibug_pts (sniffed): wrote 4 images, 4 faces" in result.output
    assert "no --images given" not in result.output  # a folder holds its images
    assert len(Manifest.read(out).faces) == 4
    folder, _ = _lapa_split(realdata, tmp_path / "lapa", "test")
    (folder / "landmarks" / "10773046825_0.txt").write_text("107\n1 2\n")
    result = runner.invoke(main, ["ingest", str(folder), "-o", str(tmp_path / "l.parquet"), "--strict"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "10773046825_0.txt:1: count: count line says 107 points, 1 point lines follow" in result.output
    result = runner.invoke(main, ["ingest", str(folder), "-o", str(tmp_path / "l.parquet")])
    assert result.exit_code == 0 and "1 wrong point count" in result.output
    wflw = tmp_path / "list_98pt_test.txt"
    wflw.write_text(f"{POINTS98} a/b.jpg\n{POINTS98.rsplit(' ', 1)[0]} a/c.jpg\n")
    result = runner.invoke(main, ["ingest", str(wflw), "-o", str(tmp_path / "w.parquet"), "--strict"])
    assert result.exit_code != 0 and "list_98pt_test.txt:2: fields: expected 197 fields" in result.output


def test_folder_without_a_known_layout_and_format_mismatch(tmp_path: Path) -> None:
    with pytest.raises(FacedataError, match="no folder format recognised"):
        ingest(tmp_path)
    with pytest.raises(FacedataError, match="format wflw reads a file, got a folder"):
        ingest(tmp_path, format="wflw")


def test_pts_point_far_outside_drops_the_image(tmp_path: Path) -> None:
    """The point tolerance is the face's size: a point 5,000 px right of a 320-px image is an annotation of
    another image."""
    folder = tmp_path / "pts"
    folder.mkdir()
    _write_pts(folder, "far", "version: 1\nn_points: 68\n{\n" + PTS_BODY.replace("101.5 101.5", "5101.5 101.5", 1)
               + "}\n")
    manifest, rejects = ingest(folder)
    assert [(r.field, r.kind) for r in rejects.items] == [("x0", "outside image")] and len(manifest.images) == 0


def test_schema_2_manifest_reads_with_make_up_unknown_and_annotated_boxes(tmp_path: Path) -> None:
    """A manifest written before schema 3 (no make_up, no box_source) reads with make_up = -1 (unknown) and
    box_source = "annotated" (every earlier parser read annotated boxes)."""
    import pyarrow.parquet as pq

    from facedata.manifest import ManifestBuilder, to_table

    builder = ManifestBuilder("wider_face", "val", "wider")
    builder.add_image("a", "a.jpg")
    builder.add_faces("a", np.array([[1, 2, 30, 40], [5, 5, 50, 50]]))
    table = to_table(builder.build({}))
    meta = json.loads(table.schema.metadata[b"facedata"])
    meta["schema_version"] = 2
    old = table.drop_columns(["make_up", "box_source"])
    old = old.replace_schema_metadata({b"facedata": json.dumps(meta).encode()})
    pq.write_table(old, tmp_path / "v2.parquet")
    faces = Manifest.read(tmp_path / "v2.parquet").faces
    assert faces["make_up"].tolist() == [-1, -1] and faces["box_source"].tolist() == ["annotated", "annotated"]


def test_builder_takes_ignore_and_box_source_per_face() -> None:
    """ignore and derived_box may differ face by face within one add_faces call (COCO crowds, dlib ignore
    boxes, COCO re-exports with a missing bbox), so no parser patches the built table."""
    from facedata.manifest import ManifestBuilder

    builder = ManifestBuilder("coco", "val", "coco")
    builder.add_image("a", "a.jpg")
    builder.add_faces("a", np.array([[1, 2, 30, 40], [5, 5, 50, 50]]), ignore=np.array([False, True]),
                      derived_box=np.array([True, False]))
    builder.add_faces("a", np.array([[0, 0, 9, 9]]))
    faces = builder.build({}).faces
    assert faces["ignore"].tolist() == [False, True, False]
    assert faces["box_source"].tolist() == ["derived", "annotated", "annotated"]
