"""Checks across lines: face counts against the lines that follow, repeated face lines, and faces against
the size of their image (probed with an image root), on hand-made files and on the real ones."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedata.errors import InputError
from facedata.parsers import ingest

GOOD = "1 2 3 4 0 0 0 0 0 0"
OTHER = "5 6 7 8 1 0 0 0 0 0"


def write(tmp_path: Path, name: str, lines: list[str], newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


def wider(tmp_path: Path, *blocks: list[str]) -> Path:
    return write(tmp_path, "wider_face_val_bbx_gt.txt", [line for block in blocks for line in block])


def images(root: Path, names: list[str], width: int, height: int) -> Path:
    """Real JPEGs (decoded by OpenCV) of one size under root."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / name), np.full((height, width, 3), 90, np.uint8))
    return root


# --- face counts -----------------------------------------------------------------------------------


def test_count_too_small_drops_the_image_instead_of_its_last_faces(tmp_path: Path) -> None:
    path = wider(
        tmp_path,
        ["a/1.jpg", "1", GOOD, OTHER],  # one face line more than declared
        ["a/2.jpg", "1", GOOD],
        ["a/3.jpg", "0", OTHER],  # `0` then a real face (not the all-zero dummy)
        ["a/4.jpg", "2", GOOD, OTHER, GOOD.replace("1 2", "9 9")],  # too small at the end of the file
    )
    manifest, rejects = ingest(path)
    assert [(r.line, r.field, r.kind) for r in rejects.items] == [
        (2, "count", "wrong face count"),
        (9, "count", "wrong face count"),
        (12, "count", "wrong face count"),
    ]
    assert rejects.items[0].reason == (
        "wrong face count: 'a/1.jpg' declares 1 face line(s), found 2 before the next image path (line 5)"
    )
    assert rejects.items[1].reason.endswith(
        "declares 0 face line(s), found 1 before the next image path (line 11)"
    )
    assert rejects.items[2].reason.endswith("declares 2 face line(s), found 3 before the end of the file")
    # the images go whole: kept, their undeclared faces would be background for the samplers
    assert list(manifest.images["image_id"]) == ["a/2"]
    assert list(manifest.faces["source_line"]) == [7]
    with pytest.raises(InputError, match=r"val_bbx_gt.txt:2: count: wrong face count: 'a/1.jpg' declares 1"):
        ingest(path, strict=True)


def test_counts_that_match_including_blank_lines_and_the_zero_dummy(tmp_path: Path) -> None:
    path = wider(
        tmp_path,
        ["a/1.jpg", "2", GOOD, "", OTHER, ""],  # blank lines are not face lines
        ["a/2.jpg", "0", "0 0 0 0 0 0 0 0 0 0"],  # the official zero-face dummy
        ["a/3.jpg", "0"],
    )
    manifest, rejects = ingest(path)
    assert len(rejects) == 0
    assert list(manifest.faces["image_id"]) == ["a/1", "a/1"]
    assert list(manifest.images["image_id"]) == ["a/1", "a/2", "a/3"]


def test_mat_label_lists_that_disagree_with_the_box_count_drop_the_image(tmp_path: Path) -> None:
    """The .mat has no count line: each image's box array sets it, and every label list must match it."""
    import scipy.io

    def cells(arrays: list) -> np.ndarray:
        out = np.empty((len(arrays), 1), dtype=object)
        for i, a in enumerate(arrays):
            out[i, 0] = a
        return out

    boxes = [np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32), np.array([[1, 2, 3, 4]], np.int32)]
    labels = {
        f"{name}_label_list": cells([cells([np.zeros((2, 1), np.uint8), np.zeros((1, 1), np.uint8)])[:, 0]])
        for name in ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
    }
    labels["pose_label_list"] = cells([cells([np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.uint8)])[:, 0]])
    path = tmp_path / "wider_face_val.mat"
    scipy.io.savemat(
        path,
        {
            "event_list": cells([np.array(["0--Ev"])]),
            "file_list": cells([cells([np.array(["one"]), np.array(["two"])])]),
            "face_bbx_list": cells([cells(boxes)]),
            **labels,
        },
    )
    manifest, rejects = ingest(path)
    assert [(r.line, r.field, r.reason) for r in rejects.items] == [
        (None, "pose_label_list", "0--Ev/one: expected 2 numeric labels")
    ]
    assert list(manifest.images["image_id"]) == ["0--Ev/two"] and len(manifest.faces) == 1
    with pytest.raises(InputError, match=r"wider_face_val.mat: pose_label_list: 0--Ev/one: expected 2"):
        ingest(path, strict=True)


# --- repeated face lines ---------------------------------------------------------------------------


def test_identical_face_lines_are_kept_once_and_reported(tmp_path: Path) -> None:
    path = wider(
        tmp_path,
        ["a/1.jpg", "3", GOOD, OTHER, GOOD + " "],  # line 5 repeats line 3 (trailing space aside)
        ["a/2.jpg", "2", GOOD, GOOD.replace(" 0 0 0 0 0 0", " 1 0 0 0 0 0")],  # same box, other blur: kept
    )
    manifest, rejects = ingest(path)
    assert [(r.line, r.field, r.kind, r.reason) for r in rejects.items] == [
        (
            5,
            "face",
            "duplicate face",
            "duplicate face in 'a/1.jpg': identical to the face at line 3; kept once",
        )
    ]
    assert manifest.faces.groupby("image_id").size().to_dict() == {"a/1": 2, "a/2": 2}
    assert list(manifest.faces["source_line"]) == [3, 4, 8, 9]
    assert manifest.provenance["duplicates"] == 1
    # kept once is a repair, not a skip: --strict records it and goes on (the official WIDER files hold repeats)
    strict_manifest, strict_rejects = ingest(path, strict=True)
    assert [r.line for r in strict_rejects.items] == [5] and len(strict_manifest.faces) == len(manifest.faces)


def test_repeated_lines_in_the_box_list_and_cuhk_formats(tmp_path: Path) -> None:
    mtcnn = write(
        tmp_path, "wider_face_train.txt", ["0--Parade/a 1 2 3 4 5 6 7 8 1 2 3 4", "0--Parade/b 1 2 3 4"]
    )
    manifest, rejects = ingest(mtcnn)
    assert [(r.line, r.kind) for r in rejects.items] == [(1, "duplicate face")]
    assert len(manifest.faces) == 3
    points = " ".join(["50.5"] * 10)
    cuhk = write(
        tmp_path,
        "trainImageList.txt",
        [rf"lfw_5590\A.jpg 20 80 20 80 {points}", rf"lfw_5590\B.jpg 20 80 20 80 {points}"] * 2,
        newline="\r\n",
    )
    manifest, rejects = ingest(cuhk)
    assert [(r.line, r.kind) for r in rejects.items] == [(3, "duplicate face"), (4, "duplicate face")]
    assert (
        rejects.items[0].reason
        == "duplicate face in 'lfw_5590/A.jpg': identical to the face at line 1; kept once"
    )
    assert list(manifest.faces["source_line"]) == [1, 2]


# --- faces against the image -----------------------------------------------------------------------


def test_boxes_outside_the_image_reject_the_image(tmp_path: Path) -> None:
    path = wider(
        tmp_path,
        ["a/1.jpg", "1", "1000000000 2 3 4 0 0 0 0 0 0"],  # x = 1e9
        ["a/2.jpg", "2", "30 2 12 10 0 0 0 0 0 0", "-2 0 4 4 0 0 0 0 0 0"],  # sticking out, overlapping
        ["a/3.jpg", "2", GOOD, "45 2 20 10 0 0 0 0 0 0"],  # 5 px right of the image: x2 = 65 is 25 px out
        ["a/4.jpg", "1", "5 27 4 4 0 0 0 0 0 0"],  # y2 = 31: 1 px out
        ["a/5.jpg", "1", "43 2 4 4 0 0 0 0 0 0"],  # 3 px right of the image, a 4 px face: x2 = 47 is 7 px out
        # the real WIDER train boxes drawn backwards past the border (degenerate, kept and flagged):
        ["b/54_Rescue_rescuepeople_54_29.jpg", "1", "1050 142 -26 50 0 0 0 0 0 0"],
        ["b/7_Cheering_Cheering_7_17.jpg", "1", "0 5 -11 5 0 0 0 1 0 0"],
    )
    root = images(tmp_path / "img", [f"a/{i}.jpg" for i in range(1, 6)], width=40, height=30)
    images(root, ["b/54_Rescue_rescuepeople_54_29.jpg", "b/7_Cheering_Cheering_7_17.jpg"], 1024, 400)
    unchecked, rejects = ingest(path)  # without an image root the size is unknown: nothing to check
    assert len(unchecked.images) == 7 and len(rejects) == 0
    manifest, rejects = ingest(path, images=root)
    assert [(r.line, r.field, r.kind) for r in rejects.items] == [
        (3, "x2", "outside image"),
        (11, "x2", "outside image"),
        (17, "x2", "outside image"),
    ]
    assert rejects.items[0].reason == (
        "1e+09 lies 1e+09 px outside the 40x30 image (tolerance 6 px; image 'a/1.jpg' dropped)"
    )
    assert rejects.items[1].reason == (
        "65 lies 25 px outside the 40x30 image (tolerance 22 px; image 'a/3.jpg' dropped)"
    )
    assert (
        rejects.items[2].reason
        == "47 lies 7 px outside the 40x30 image (tolerance 6 px; image 'a/5.jpg' dropped)"
    )
    # the whole image goes: a/3's good face is not kept without its neighbour (which would become background)
    assert list(manifest.images["image_id"]) == [
        "a/2",
        "a/4",
        "b/54_Rescue_rescuepeople_54_29",
        "b/7_Cheering_Cheering_7_17",
    ]
    assert list(manifest.faces["source_line"]) == [6, 7, 14, 20, 23]
    with pytest.raises(
        InputError, match=r"val_bbx_gt.txt:3: x2: 1e\+09 lies 1e\+09 px outside the 40x30 image"
    ):
        ingest(path, images=root, strict=True)


def test_landmarks_outside_the_image_reject_the_image(tmp_path: Path) -> None:
    inside = "35 40 65 40 50 55 40 70 60 70"
    lines = [
        rf"lfw_5590\A.jpg 20 80 20 80 {inside}",
        rf"lfw_5590\B.jpg 20 80 20 80 {inside.replace('50 55', '180 55')}",  # nose x = 180 in a 100 px image
        rf"lfw_5590\C.jpg 20 80 20 80 {inside.replace('40 70', '40 150')}",  # 50 px below, face 60 px: fine
    ]
    path = write(tmp_path, "trainImageList.txt", lines, newline="\r\n")
    root = images(tmp_path / "img", ["lfw_5590/A.jpg", "lfw_5590/B.jpg", "lfw_5590/C.jpg"], 100, 100)
    manifest, rejects = ingest(path, images=root)
    assert [(r.line, r.field, r.reason) for r in rejects.items] == [
        (
            2,
            "x_nose",
            "180 lies 80 px outside the 100x100 image (tolerance 62 px; image 'lfw_5590/B.jpg' dropped)",
        )
    ]
    assert list(manifest.images["image_id"]) == ["lfw_5590/A", "lfw_5590/C"]


def test_half_size_copies_of_real_wider_images_are_rejected(realdata: Path, tmp_path: Path) -> None:
    """The 2 real WIDER train images, replaced by half-size copies: the .mat boxes no longer fit."""
    full_root = realdata / "wflw/WFLW_images"
    half_root = tmp_path / "half"
    for source in full_root.rglob("*.jpg"):
        pixels = cv2.imread(str(source))
        target = half_root / source.relative_to(full_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.resize(pixels, (pixels.shape[1] // 2, pixels.shape[0] // 2)))
    mat = realdata / "wider_face/wider_face_train.mat"
    full, rejects = ingest(mat, images=full_root)
    assert len(full.images) == 2 and len(full.faces) == 14 + 19 and rejects.count("outside image") == 0
    half, rejects = ingest(mat, images=half_root)
    assert len(half.images) == 0
    outside = [r for r in rejects.items if r.kind == "outside image"]
    dropped = {r.reason.split("image '")[1].split("'")[0] for r in outside}
    assert dropped == {
        "36--Football/36_Football_americanfootball_ball_36_415.jpg",
        "7--Cheering/7_Cheering_Cheering_7_16.jpg",
    }
    assert {r.field for r in outside} <= {"x2", "y2"}
    assert all(
        " outside the 512x330 image" in r.reason or " outside the 512x512 image" in r.reason for r in outside
    )
    # counted independently: every face whose far corner leaves the half image by more than the tolerance
    faces = full.faces.merge(full.images[["image_id", "width", "height"]], on="image_id")
    size = np.maximum(faces["x2"] - faces["x1"], faces["y2"] - faces["y1"]).to_numpy()
    over = np.maximum(faces["x2"] - faces["width"] / 2, faces["y2"] - faces["height"] / 2).to_numpy()
    assert len(outside) == int((over > 2 + size).sum()) >= 15


def _jpeg_header(width: int, height: int) -> bytes:
    """SOI + a baseline frame header: enough for the size probe (which reads no pixels)."""
    frame = struct.pack(">BHHB", 8, height, width, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(frame) + 2) + frame


def test_real_wider_val_fits_its_images(realdata: Path, tmp_path: Path) -> None:
    """Every val box fits its image (sizes from libfacedetection's labelv2, an independent list), so the
    published counts survive the check; header-only files carry those sizes (3,226 full JPEGs are not here)."""
    labelv2 = realdata / "wider_face_libfacedetection/labelv2/val/labelv2.txt"
    for line in labelv2.read_text().splitlines():
        if line.startswith("#"):
            _, name, width, height = line.split()
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_jpeg_header(int(width), int(height)))
    manifest, rejects = ingest(realdata / "wider_face/wider_face_val_bbx_gt.txt", images=tmp_path)
    assert [r.kind for r in rejects.items] == ["duplicate face"]
    assert len(manifest.images) == 3226 and len(manifest.faces) == 39708 - 4 - 1
    assert manifest.images["width"].eq(1024).all()


def test_real_cuhk_fits_its_images(realdata: Path) -> None:
    root = realdata / "lfw_net_7876"
    for name in ("trainImageList.txt", "testImageList.txt"):
        manifest, rejects = ingest(root / name, images=root)
        assert rejects.count("outside image") == 0
        assert len(manifest.images) == len(manifest.faces) == 100 + (name == "trainImageList.txt")
