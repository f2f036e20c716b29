"""Parsers on the real annotation files: published counts, txt/.mat equivalence, conventions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from facedata.errors import InputError
from facedata.manifest import Manifest
from facedata.parsers import FORMATS, ingest, sniff_format

WIDER_FILES = {
    "wider_face/wider_face_val_bbx_gt.txt": "wider_bbx_gt",
    "wider_face/wider_face_train_bbx_gt_first20.txt": "wider_bbx_gt",
    "wider_face/wider_face_val.mat": "wider_mat",
    "wider_face/wider_face_train.mat": "wider_mat",
    "wider_face/wider_face_test_filelist.txt": "wider_test_list",
    "wider_face/wider_face_test.mat": "wider_test_mat",
    "wider_face/aittsmd_wider_face_train_first20_xyxy.txt": "mtcnn_wider_list",
    "lfw_net_7876/trainImageList.txt": "cuhk_lfw_net",
    "lfw_net_7876/testImageList.txt": "cuhk_lfw_net",
}


# The official files repeat a few face lines identically (same box and attributes): kept once, reported.
VAL_DUPLICATE = "duplicate face in '21--Festival/21_Festival_Festival_21_604.jpg': "
TRAIN_DUPLICATES = ("2--Demonstration/2_Demonstration_Protesters_2_231", "7--Cheering/7_Cheering_Cheering_7_17")


@pytest.fixture(scope="module")
def val_txt(realdata: Path) -> Manifest:
    manifest, rejects = ingest(realdata / "wider_face/wider_face_val_bbx_gt.txt")
    assert [(r.line, r.field, r.kind) for r in rejects.items] == [(24001, "face", "duplicate face")]
    assert rejects.items[0].reason == VAL_DUPLICATE + "identical to the face at line 23962; kept once"
    return manifest


@pytest.fixture(scope="module")
def val_mat(realdata: Path) -> Manifest:
    manifest, rejects = ingest(realdata / "wider_face/wider_face_val.mat")
    assert [(r.line, r.kind) for r in rejects.items] == [(None, "duplicate face")]
    assert rejects.items[0].reason == VAL_DUPLICATE + "face 104 is identical to face 65; kept once"
    return manifest


@pytest.fixture(scope="module")
def train_mat(realdata: Path) -> Manifest:
    manifest, rejects = ingest(realdata / "wider_face/wider_face_train.mat")
    assert [r.kind for r in rejects.items] == ["duplicate face"] * 2
    assert all(name in r.reason for name, r in zip(TRAIN_DUPLICATES, rejects.items, strict=True))
    return manifest


def _width_height(faces: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return (faces["x2"] - faces["x1"]).to_numpy(), (faces["y2"] - faces["y1"]).to_numpy()


def test_every_format_is_registered_with_a_description() -> None:
    names = FORMATS.names()
    for expected in set(WIDER_FILES.values()) | {"wider_anno_xywh"}:
        assert expected in names
    for _, fmt in FORMATS:
        assert fmt.description and fmt.name in names


@pytest.mark.parametrize("rel, expected", sorted(WIDER_FILES.items()))
def test_sniff_recognises_real_files(realdata: Path, rel: str, expected: str) -> None:
    assert sniff_format(realdata / rel) == expected


def test_wider_val_txt_published_counts(val_txt: Manifest) -> None:
    images, faces = val_txt.images, val_txt.faces
    assert len(images) == 3226
    assert val_txt.provenance["records"] == 39708
    assert val_txt.provenance["placeholders"] == 4
    assert val_txt.provenance["duplicates"] == 1
    assert len(faces) == 39708 - 4 - 1
    width, height = _width_height(faces)
    assert int(((width == 0) | (height == 0)).sum()) == 6
    # the degenerate flag also covers the one box with negative width (w = -2) in val
    assert int((width < 0).sum()) == 1
    assert int(faces["degenerate"].sum()) == 6 + 1
    assert int(faces["invalid"].sum()) == 585
    assert images["event"].nunique() == 61
    assert (images["split"] == "val").all() and (images["root"] == "wider_val").all()
    assert images["image_id"].is_unique and faces["face_id"].is_unique


def test_wider_attribute_order_pinned_by_val_data(val_txt: Manifest) -> None:
    """Official order: only blur and occlusion take the value 2 (torchvision/Datumaro order fails this)."""
    faces = val_txt.faces
    takes_two = {
        name
        for name in ("blur", "expression", "illumination", "occlusion", "pose")
        if (faces[name] == 2).any()
    }
    assert takes_two == {"blur", "occlusion"}
    assert set(faces["expression"].unique()) <= {0, 1}
    assert set(faces["pose"].unique()) <= {0, 1}


def test_zero_face_images_are_kept_without_faces(val_txt: Manifest) -> None:
    with_faces = set(val_txt.faces["image_id"])
    empty = val_txt.images.loc[~val_txt.images["image_id"].isin(with_faces), "image_id"]
    assert len(empty) == 4
    assert not ((val_txt.faces[["x1", "y1", "x2", "y2"]] == 0).all(axis=1)).any()


def test_wider_val_txt_and_mat_are_identical(val_txt: Manifest, val_mat: Manifest) -> None:
    pd.testing.assert_frame_equal(val_txt.images, val_mat.images)
    # source_line is the txt line of each face; a .mat has no lines, so it is the only difference
    pd.testing.assert_frame_equal(
        val_txt.faces.drop(columns="source_line"), val_mat.faces.drop(columns="source_line")
    )
    assert val_mat.faces["source_line"].isna().all()
    assert val_txt.faces["source_line"].notna().all()


def test_source_lines_point_at_the_face_lines(realdata: Path, val_txt: Manifest) -> None:
    lines = (realdata / "wider_face/wider_face_val_bbx_gt.txt").read_text().splitlines()
    for _, face in val_txt.faces.sample(50, random_state=0).iterrows():
        x, y, w, h = (int(v) for v in lines[face["source_line"] - 1].split()[:4])
        assert (face["x1"], face["y1"], face["x2"], face["y2"]) == (x, y, x + w, y + h)


def test_wider_train_mat_published_counts(train_mat: Manifest) -> None:
    images, faces = train_mat.images, train_mat.faces
    assert len(images) == 12880
    assert train_mat.provenance["records"] == 159424
    assert train_mat.provenance["placeholders"] == 4
    assert train_mat.provenance["duplicates"] == 2
    assert len(faces) == 159424 - 4 - 2
    width, height = _width_height(faces)
    assert int(((width == 0) | (height == 0)).sum()) == 25
    assert int(((width < 0) | (height < 0)).sum()) == 2
    assert int(faces["degenerate"].sum()) == 25 + 2
    assert int(faces["invalid"].sum()) == 2399 - 1  # one of the repeated faces is flagged invalid
    assert images["event"].nunique() == 61
    assert len(set(images["image_id"]) - set(faces["image_id"])) == 4


def test_full_train_xywh_list_matches_train_mat(realdata: Path, train_mat: Manifest) -> None:
    path = realdata / "wider_face/sierkinhane_anno_train_xywh.txt"
    manifest, rejects = ingest(path, format="wider_anno_xywh")
    # boxes only: the repeats of the .mat plus a box the .mat gives twice with different attributes
    repeated = [r.reason.split("'")[1] for r in rejects.items]
    soccer = "37--Soccer/37_Soccer_Soccer_37_851"
    assert repeated == [f"{name}.jpg" for name in (TRAIN_DUPLICATES[0], soccer, TRAIN_DUPLICATES[1])]
    pd.testing.assert_frame_equal(manifest.images, train_mat.images)
    cols = ["image_id", "x1", "y1", "x2", "y2", "degenerate"]
    boxes = train_mat.faces[cols].drop_duplicates().reset_index(drop=True)
    pd.testing.assert_frame_equal(manifest.faces[cols], boxes)
    assert (manifest.faces["blur"] == -1).all()


def test_wider_test_list_txt_and_mat(realdata: Path) -> None:
    txt, r1 = ingest(realdata / "wider_face/wider_face_test_filelist.txt")
    mat, r2 = ingest(realdata / "wider_face/wider_face_test.mat")
    assert len(r1) == len(r2) == 0
    assert len(txt.images) == 16097
    assert len(txt.faces) == 0
    assert (txt.images["split"] == "test").all()
    pd.testing.assert_frame_equal(txt.images, mat.images)


def test_first20_bbx_gt_and_mtcnn_xyxy_agree(realdata: Path) -> None:
    gt, r1 = ingest(realdata / "wider_face/wider_face_train_bbx_gt_first20.txt")
    xyxy, r2 = ingest(realdata / "wider_face/aittsmd_wider_face_train_first20_xyxy.txt")
    assert len(r1) == len(r2) == 0
    assert len(gt.images) == len(xyxy.images) == 20
    assert len(gt.faces) == len(xyxy.faces) == 1002
    pd.testing.assert_frame_equal(gt.images, xyxy.images)
    assert (gt.faces["image_id"].to_numpy() == xyxy.faces["image_id"].to_numpy()).all()
    cols = ["x1", "y1", "x2", "y2"]
    diff = np.abs(gt.faces[cols].to_numpy() - xyxy.faces[cols].to_numpy())
    assert diff.max() <= 5
    assert (diff.max(axis=1) <= 1).mean() > 0.9
    # the xyxy file stores x2 = x + w itself: kept exactly as written
    first = (realdata / "wider_face/aittsmd_wider_face_train_first20_xyxy.txt").read_text().split()
    assert xyxy.faces.loc[0, "x2"] == np.float32(first[3])


def test_cuhk_lists_counts_and_subsets(realdata: Path) -> None:
    expected = {
        "trainImageList.txt": (10000, 4151, 5849, "train"),
        "testImageList.txt": (3466, 1439, 2027, "test"),
    }
    for name, (total, lfw, net, split) in expected.items():
        manifest, rejects = ingest(realdata / "lfw_net_7876" / name)
        assert len(rejects) == 0
        images, faces = manifest.images, manifest.faces
        assert len(images) == len(faces) == total
        subsets = images["tags"].str.extract(r'"subset": "(\w+)"')[0].value_counts()
        assert subsets["lfw_5590"] == lfw and subsets["net_7876"] == net
        assert (images["split"] == split).all() and (images["source"] == "cuhk_lfw_net").all()
        assert (faces["scheme"] == "mtcnn5").all()
        assert all(len(p) == 10 for p in faces["points"]) and all(
            list(v) == [2] * 5 for v in faces["visible"]
        )


def test_cuhk_box_columns_are_x1_x2_y1_y2(realdata: Path) -> None:
    path = realdata / "lfw_net_7876/trainImageList.txt"
    manifest, _ = ingest(path)
    faces = manifest.faces
    raw = path.read_bytes().split(b"\r\n")[0].decode().split()
    assert manifest.images.loc[0, "rel_path"] == raw[0].replace("\\", "/")
    x1, x2, y1, y2 = (float(v) for v in raw[1:5])
    assert tuple(faces.loc[0, ["x1", "y1", "x2", "y2"]]) == (x1, y1, x2, y2)
    assert list(faces.loc[0, "points"]) == [float(v) for v in raw[5:15]]
    # with the right column order the 5 points fall inside their box (nearly always)
    pts = np.stack(faces["points"].to_numpy()).reshape(-1, 5, 2)
    inside = (
        (pts[..., 0] >= faces["x1"].to_numpy()[:, None])
        & (pts[..., 0] <= faces["x2"].to_numpy()[:, None])
        & (pts[..., 1] >= faces["y1"].to_numpy()[:, None])
        & (pts[..., 1] <= faces["y2"].to_numpy()[:, None])
    ).all(axis=1)
    assert inside.mean() > 0.95


def test_split_override_and_roots(realdata: Path) -> None:
    manifest, _ = ingest(realdata / "wider_face/wider_face_train_bbx_gt_first20.txt", split="holdout")
    assert (manifest.images["split"] == "holdout").all()
    assert manifest.provenance["roots"] == {"wider_holdout": ""}


def test_provenance_names_format_and_sha256(realdata: Path, val_txt: Manifest) -> None:
    path = realdata / "wider_face/wider_face_val_bbx_gt.txt"
    prov = val_txt.provenance
    assert prov["source_format"] == "wider_bbx_gt"
    assert prov["source_files"] == [
        {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    ]
    assert prov["roots"] == {"wider_val": ""}


def test_parsed_manifests_round_trip(tmp_path: Path, realdata: Path, val_txt: Manifest) -> None:
    cuhk, _ = ingest(realdata / "lfw_net_7876/testImageList.txt")
    for manifest in (val_txt, cuhk):
        out = tmp_path / "m.parquet"
        manifest.write(out)
        back = Manifest.read(out)
        pd.testing.assert_frame_equal(back.images, manifest.images)
        pd.testing.assert_frame_equal(
            back.faces.drop(columns=["points", "visible"]), manifest.faces.drop(columns=["points", "visible"])
        )
        for column in ("points", "visible"):
            for a, b in zip(back.faces[column], manifest.faces[column], strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)
        assert back.provenance == manifest.provenance


def test_ingest_cuhk_with_images_reports_missing_and_probes(realdata: Path) -> None:
    root = realdata / "lfw_net_7876"
    manifest, rejects = ingest(root / "testImageList.txt", images=root)
    present = {p.name for p in (root / "net_7876").glob("*.jpg")}
    listed = [line.split()[0] for line in (root / "testImageList.txt").read_text().splitlines()]
    expected_kept = [
        p for p in listed if p.replace("\\", "/").split("/")[-1] in present and p.startswith("net_7876")
    ]
    assert len(manifest.images) == len(expected_kept) == 100
    assert len(rejects) == 3466 - 100
    assert all(r.field == "image" and r.reason.startswith("missing image file") for r in rejects.items)
    assert {r.line for r in rejects.items} <= set(range(1, 3467))
    assert manifest.provenance["roots"] == {"cuhk_lfw_net": str(root.resolve())}
    paths = manifest.image_paths()
    for (_, image), path in list(zip(manifest.images.iterrows(), paths, strict=True))[:20]:
        pixels = cv2.imread(path)
        assert (image["width"], image["height"]) == (pixels.shape[1], pixels.shape[0])
    with pytest.raises(
        InputError, match=r"testImageList.txt:1: image: missing image file .*Abbas_Kiarostami_0001.jpg"
    ):
        ingest(root / "testImageList.txt", images=root, strict=True)


def test_ingest_wider_train_mat_with_two_real_images(realdata: Path) -> None:
    root = realdata / "wflw/WFLW_images"
    manifest, rejects = ingest(realdata / "wider_face/wider_face_train.mat", images=root)
    assert len(manifest.images) == 2
    assert rejects.count("missing image") == 12880 - 2 and rejects.count("duplicate face") == 2
    counts = manifest.faces.groupby("image_id").size().to_dict()
    assert counts == {
        "36--Football/36_Football_americanfootball_ball_36_415": 14,
        "7--Cheering/7_Cheering_Cheering_7_16": 19,
    }
    for (_, image), path in zip(manifest.images.iterrows(), manifest.image_paths(), strict=True):
        pixels = cv2.imread(path)
        assert (image["width"], image["height"]) == (pixels.shape[1], pixels.shape[0])
    faces = manifest.faces.merge(manifest.images[["image_id", "width", "height"]], on="image_id")
    assert ((faces["x2"] <= faces["width"]) & (faces["y2"] <= faces["height"])).all()
