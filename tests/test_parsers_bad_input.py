"""Bad input: every kind of malformed item is named by file, line, field and what was expected;
the default skips and records it, strict raises at the first one; parsing resynchronises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io

from facedata.errors import FacedataError, InputError
from facedata.parsers import ingest, sniff_format

GOOD = "1 2 3 4 0 0 0 0 0 0"


def write(tmp_path: Path, name: str, lines: list[str], newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


def wider(tmp_path: Path, *blocks: list[str], newline: str = "\n") -> Path:
    lines = [line for block in blocks for line in block]
    return write(tmp_path, "wider_face_val_bbx_gt.txt", lines, newline)


def test_zero_face_conventions_and_crlf(tmp_path: Path) -> None:
    blocks = (
        ["a/one.jpg", "1", "0 0 0 0 0 0 0 0 0 0 "],  # `1` + zero record
        ["a/two.jpg", "0", "0 0 0 0 0 0 0 0 0 0 "],  # `0` + dummy record
        ["a/three.jpg", "0"],  # `0` without a dummy line
        ["a/four.jpg", "2", GOOD + " ", "5 6 0 8 1 1 1 1 1 1 "],  # second box degenerate (w = 0), kept
    )
    lf = wider(tmp_path, *blocks)
    manifest, rejects = ingest(lf)
    assert len(rejects) == 0
    assert list(manifest.images["image_id"]) == ["a/one", "a/two", "a/three", "a/four"]
    assert list(manifest.faces["image_id"]) == ["a/four", "a/four"]
    assert list(manifest.faces["degenerate"]) == [False, True]
    assert manifest.provenance["placeholders"] == 2
    assert tuple(manifest.faces.loc[0, ["x1", "y1", "x2", "y2"]]) == (1, 2, 4, 6)
    crlf_dir = tmp_path / "crlf"
    crlf_dir.mkdir()
    crlf, _ = ingest(wider(crlf_dir, *blocks, newline="\r\n"))
    pd.testing.assert_frame_equal(crlf.images, manifest.images)
    pd.testing.assert_frame_equal(crlf.faces, manifest.faces)


def test_malformed_face_line_wrong_field_count(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "2", GOOD, "1 2 3 4 0 0 0"], ["a/2.jpg", "1", GOOD])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(4, "fields")]
    reason = rejects.items[0].reason
    assert "expected 10 fields (x y w h blur expression illumination invalid occlusion pose), got 7" in reason
    assert "'a/1.jpg' dropped" in reason
    # the image with the bad face is dropped whole; the next block parses normally
    assert list(manifest.images["image_id"]) == ["a/2"]
    assert list(manifest.faces["source_line"]) == [7]
    with pytest.raises(InputError) as err:
        ingest(path, strict=True)
    assert str(err.value).startswith(f"{path}:4: fields: expected 10 fields")
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 4, "fields")


def test_non_numeric_field(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "1", "1 2 abc 4 0 0 0 0 0 0"], ["a/2.jpg", "1", GOOD])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(3, "w")]
    assert rejects.items[0].reason.startswith("expected an integer, got 'abc'")
    assert list(manifest.images["image_id"]) == ["a/2"]
    with pytest.raises(InputError, match=r":3: w: expected an integer, got 'abc'"):
        ingest(path, strict=True)


def test_unknown_attribute_code(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "1", "1 2 3 4 0 0 0 0 5 0"])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(3, "occlusion")]
    assert rejects.items[0].reason.startswith("expected one of [0, 1, 2], got 5")
    assert len(manifest.images) == 0


def test_count_not_an_integer(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "two", GOOD, GOOD], ["a/2.jpg", "1", GOOD])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(2, "count")]
    assert rejects.items[0].reason == "expected an integer face count for 'a/1.jpg', got 'two'"
    assert list(manifest.images["image_id"]) == ["a/2"]
    assert list(manifest.faces["source_line"]) == [7]


def test_wrong_face_count_next_path_and_file_end(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "3", GOOD], ["a/2.jpg", "1", GOOD], ["a/3.jpg", "4", GOOD, GOOD])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(2, "count"), (8, "count")]
    assert rejects.items[0].reason == (
        "wrong face count: 'a/1.jpg' declares 3 face line(s), found 1 before the next image path (line 4)"
    )
    assert rejects.items[1].reason == (
        "wrong face count: 'a/3.jpg' declares 4 face line(s), found 2 before the end of the file"
    )
    assert list(manifest.images["image_id"]) == ["a/2"]
    with pytest.raises(InputError, match=r":2: count: wrong face count: 'a/1.jpg' declares 3"):
        ingest(path, strict=True)


def test_file_ends_after_path_line(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "1", GOOD], ["a/2.jpg"])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field, r.reason) for r in rejects.items] == [
        (4, "count", "file ends early: no face count after 'a/2.jpg'")
    ]
    assert list(manifest.images["image_id"]) == ["a/1"]


def test_parent_and_absolute_paths_are_rejected(tmp_path: Path) -> None:
    path = wider(tmp_path, ["../up.jpg", "1", GOOD], ["/abs/x.jpg", "1", GOOD], ["a/ok.jpg", "1", GOOD])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(1, "path"), (4, "path")]
    assert (
        rejects.items[0].reason == "expected a path relative to the image root without '..', got '../up.jpg'"
    )
    assert rejects.items[1].reason.endswith("got '/abs/x.jpg'")
    assert list(manifest.images["image_id"]) == ["a/ok"]
    with pytest.raises(InputError, match=r":1: path: expected a path relative to the image root"):
        ingest(path, strict=True)


def test_duplicate_image_is_rejected(tmp_path: Path) -> None:
    path = wider(tmp_path, ["a/1.jpg", "1", GOOD], ["a/1.jpg", "1", GOOD])
    manifest, rejects = ingest(path)
    assert [(r.line, r.field, r.reason) for r in rejects.items] == [
        (4, "path", "duplicate image 'a/1.jpg' (first at line 1)")
    ]
    assert len(manifest.images) == 1 and len(manifest.faces) == 1


def test_missing_image_with_images_root(tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    cv2.imwrite(str(root / "a/1.jpg"), np.full((30, 40, 3), 128, np.uint8))
    path = wider(tmp_path, ["a/1.jpg", "1", GOOD], ["a/2.jpg", "1", GOOD])
    manifest, rejects = ingest(path, images=root)
    assert [(r.line, r.field) for r in rejects.items] == [(4, "image")]
    assert rejects.items[0].reason == f"missing image file {(root / 'a/2.jpg').resolve()}"
    assert list(manifest.images["image_id"]) == ["a/1"]
    assert (manifest.images.loc[0, "width"], manifest.images.loc[0, "height"]) == (40, 30)
    assert list(manifest.faces["image_id"]) == ["a/1"]
    with pytest.raises(InputError, match=r":4: image: missing image file .*a/2.jpg"):
        ingest(path, images=root, strict=True)
    with pytest.raises(FacedataError, match="image root is not a directory"):
        ingest(path, images=tmp_path / "nope")


def test_symlink_escaping_the_root_is_rejected(tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside.jpg"
    cv2.imwrite(str(outside), np.zeros((8, 8, 3), np.uint8))
    (root / "a/1.jpg").symlink_to(outside)
    path = wider(tmp_path, ["a/1.jpg", "1", GOOD])
    manifest, rejects = ingest(path, images=root)
    assert [(r.field, r.reason) for r in rejects.items] == [
        ("path", "'a/1.jpg' resolves outside the image root")
    ]
    assert len(manifest.images) == 0


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("wider_face_val_bbx_gt.txt", "wider_bbx_gt"),
        ("wider_face_test_filelist.txt", "wider_test_list"),
        ("wider_face_train.txt", "mtcnn_wider_list"),
        ("trainImageList.txt", "cuhk_lfw_net"),
        ("anno_train.txt", "wider_anno_xywh"),
        ("wider_face_val.mat", "wider_mat"),
        ("wider_face_test.mat", "wider_test_mat"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"" if name.endswith(".mat") else b"\n \r\n")
    with pytest.raises(InputError, match=rf"{name}: file: empty file; expected "):
        ingest(path, format=fmt)
    with pytest.raises(InputError, match=rf"{name}: file: empty file; nothing to ingest"):
        ingest(path)


def test_unrecognised_format_lists_known_formats(tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", ["hello world", "this is not an annotation file"])
    with pytest.raises(FacedataError, match=r"format not recognised; pass --format \(known: .*wider_bbx_gt"):
        sniff_format(path)
    with pytest.raises(FacedataError, match="unknown format 'nope'"):
        ingest(path, format="nope")


def test_cuhk_bad_lines(tmp_path: Path) -> None:
    points = " ".join(["10.5"] * 10)
    lines = [
        rf"lfw_5590\A_0001.jpg 84 161 92 169 {points}",
        r"lfw_5590\B_0001.jpg 84 161 92",  # wrong field count
        rf"net_7876\C.jpg 84 16x 92 169 {points}",  # non-numeric x2
        rf"..\..\etc\D.jpg 84 161 92 169 {points}",  # escapes the root
        rf"net_7876\E.jpg 1 2 3 4 {points}",
    ]
    path = write(tmp_path, "trainImageList.txt", lines, newline="\r\n")
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(2, "fields"), (3, "x2"), (4, "path")]
    assert rejects.items[0].reason.startswith("expected 14 fields (x1 x2 y1 y2 x_left_eye y_left_eye")
    assert rejects.items[0].reason.endswith("got 3")
    assert rejects.items[1].reason == "expected a number, got '16x'"
    assert rejects.items[2].reason.endswith("got " + repr(r"..\..\etc\D.jpg"))
    assert list(manifest.images["image_id"]) == ["lfw_5590/A_0001", "net_7876/E"]
    assert list(manifest.faces["source_line"]) == [1, 5]
    with pytest.raises(InputError, match=r"trainImageList.txt:2: fields: expected 14 fields"):
        ingest(path, strict=True)


def test_mtcnn_list_bad_lines(tmp_path: Path) -> None:
    lines = [
        "0--Parade/a 1.0 2.0 3.5 4.5 10 10 20 20",
        "0--Parade/b 1.0 2.0 3.5",  # not a multiple of 4
        "0--Parade/c 1.0 2.0 3.5 4.5 1 x 2 3",  # non-numeric in box 2
        "0--Parade/d",  # no boxes: an image without faces
    ]
    path = write(tmp_path, "wider_face_train.txt", lines)
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(2, "boxes"), (3, "box 2 y1")]
    assert rejects.items[0].reason == "expected groups of 4 numbers (x1 y1 x2 y2), got 3"
    assert rejects.items[1].reason == "expected a number, got 'x'"
    assert list(manifest.images["rel_path"]) == ["0--Parade/a.jpg", "0--Parade/d.jpg"]
    assert manifest.faces[["x1", "y1", "x2", "y2"]].to_numpy().tolist() == [
        [1, 2, 3.5, 4.5],
        [10, 10, 20, 20],
    ]


def test_wider_mat_bad_cells(tmp_path: Path) -> None:
    def cells(arrays: list[np.ndarray]) -> np.ndarray:
        out = np.empty((len(arrays), 1), dtype=object)
        for i, a in enumerate(arrays):
            out[i, 0] = a
        return out

    files = cells([np.array(["one"]), np.array(["two"])])
    boxes = cells([np.array([[1, 2, 3, 4]], np.int32), np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.int32)])
    labels = {
        f"{name}_label_list": cells([cells([np.zeros((1, 1), np.uint8), np.zeros((2, 1), np.uint8)])[:, 0]])
        for name in ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
    }
    labels["blur_label_list"] = cells(
        [cells([np.full((1, 1), 9, np.uint8), np.zeros((2, 1), np.uint8)])[:, 0]]
    )
    path = tmp_path / "wider_face_val.mat"
    scipy.io.savemat(
        path,
        {
            "event_list": cells([np.array(["0--Ev"])]),
            "file_list": cells([files]),
            "face_bbx_list": cells([boxes]),
            **labels,
        },
    )
    assert sniff_format(path) == "wider_mat"
    manifest, rejects = ingest(path)
    assert [(r.line, r.field) for r in rejects.items] == [(None, "blur")]
    assert rejects.items[0].reason == "expected one of [0, 1, 2], got 9 (image '0--Ev/one.jpg' dropped)"
    assert list(manifest.images["image_id"]) == ["0--Ev/two"]
    assert len(manifest.faces) == 1  # the all-zero record is the placeholder

    broken = tmp_path / "broken.mat"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"broken.mat: file: truncated MATLAB v5 .mat file"):
        ingest(broken, format="wider_mat")


def test_fractional_and_non_finite_values(tmp_path: Path) -> None:
    path = wider(
        tmp_path, ["a/1.jpg", "1", "1.5 2 3 4 0 0 0 0 0 0"], ["a/2.jpg", "1", "1 2 3 inf 0 0 0 0 0 0"]
    )
    manifest, rejects = ingest(path)
    assert [(r.line, r.field, r.reason.split(" (")[0]) for r in rejects.items] == [
        (3, "x", "expected an integer, got '1.5'"),
        (6, "h", "expected an integer, got 'inf'"),
    ]
    assert len(manifest.images) == 0
    mtcnn = write(tmp_path, "wider_face_train.txt", ["0--Parade/a 1 2 nan 4"])
    manifest, rejects = ingest(mtcnn, format="mtcnn_wider_list")
    assert [(r.line, r.field, r.reason) for r in rejects.items] == [
        (1, "box 1 x2", "expected a number, got 'nan'")
    ]
