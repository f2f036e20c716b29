"""The other forms the real WIDER files come in: RetinaFace label.txt, libfacedetection labelv2, AITTSMD's
column-major val list, VOC XML folders, and the eval tool's easy/medium/hard subsets (filter --wider-subset).
Expected values are counted from the raw files here (line by line), or hand-checked, not from the parsers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.errors import FacedataError, InputError
from facedata.filters import apply_filters, rules_from_options
from facedata.manifest import Manifest
from facedata.parsers import format_warnings, ingest, sniff_confidence, sniff_format

RETINA = "wider_face_retinaface_labels/val/label.txt"
LABELV2 = "wider_face_libfacedetection/labelv2/val/labelv2.txt"
COLMAJOR = "wider_face/aittsmd_wider_face_val_colmajor_xywh.txt"
OFFICIAL = "wider_face/wider_face_val_bbx_gt.txt"
VOC_LM = "wider_face_libfacedetection/WIDER_FACE_landmark"
VOC_RECT = "wider_face_libfacedetection/WIDER_FACE_rect/annotations"
GT_DIR = "wider_face_eval_tools/ground_truth"
PUBLISHED = {"easy": 7211, "medium": 13319, "hard": 31958}


def raw_hash_faces(path: Path) -> dict[str, list[tuple[float, ...]]]:
    """`# path ...` file -> image -> its face lines' numbers, read here independently of the parser."""
    out: dict[str, list[tuple[float, ...]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            current = line[1:].split()[0]
            out[current] = []
        elif line.strip():
            out[current].append(tuple(float(t) for t in line.split()))
    return out


def boxes_by_image(manifest: Manifest) -> dict[str, list[tuple[float, ...]]]:
    faces = manifest.faces
    out: dict[str, list[tuple[float, ...]]] = {}
    for image_id, *box in zip(faces["image_id"], faces["x1"], faces["y1"], faces["x2"], faces["y2"], strict=True):
        out.setdefault(image_id, []).append(tuple(float(v) for v in box))
    return out


def test_retinaface_val_real_file(realdata: Path) -> None:
    path = realdata / RETINA
    assert sniff_format(path) == "retinaface_txt"
    manifest, rejects = ingest(path)
    raw = raw_hash_faces(path)
    assert len(raw) == 3222 and sum(map(len, raw.values())) == 39704  # SOURCES.md
    assert len(manifest.images) == 3222
    assert len(manifest.faces) == 39704 - 1  # one identical repeated face line, kept once
    assert rejects.count("duplicate face") == 1 and len(rejects) == 1
    assert set(manifest.images["split"]) == {"val"}  # from the folder name
    assert manifest.faces["points"].isna().all()  # the val file has no points
    first = manifest.faces.iloc[0]
    assert (first.image_id, first.x1, first.y1, first.x2, first.y2) == (
        "0--Parade/0_Parade_marchingband_1_465", 345, 211, 349, 215)  # `345 211 4 4`, hand-checked
    official, _ = ingest(realdata / OFFICIAL)
    ours, theirs = boxes_by_image(manifest), boxes_by_image(official)
    assert all(sorted(ours[k]) == sorted(theirs[k]) for k in ours)  # every box set identical to the official


def test_retinaface_with_points_spaces_and_absent_points(tmp_path: Path) -> None:
    path = tmp_path / "my train" / "label.txt"
    path.parent.mkdir()
    path.write_text(
        "# 0--Parade/my image 1.jpg\n"
        "449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 1.0 485.242 425.893 0.0 "
        "538.357 431.491 0.0 0.82\n"
        "10 20 30 40 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0\n"
        "# 0--Parade/b.jpg\n"
        "1 2 3 4\n"
    )
    assert sniff_format(path) == "retinaface_txt"
    manifest, rejects = ingest(path)
    assert len(rejects) == 0
    assert manifest.images["rel_path"].tolist() == ["0--Parade/my image 1.jpg", "0--Parade/b.jpg"]
    faces = manifest.faces
    assert faces[["x1", "y1", "x2", "y2"]].to_numpy().tolist()[:2] == [[449, 330, 571, 479], [10, 20, 40, 60]]
    assert faces["scheme"].iloc[0] == "mtcnn5"
    np.testing.assert_allclose(faces["points"].iloc[0][:4], [488.906, 373.643, 542.089, 376.442], rtol=1e-6)
    assert faces["visible"].iloc[0].tolist() == [2, 2, 1, 2, 2]  # flag 1.0 on the nose: hidden
    assert np.isnan(faces["points"].iloc[1]).all() and faces["visible"].iloc[1].tolist() == [0] * 5


def test_labelv2_val_real_file(realdata: Path) -> None:
    path = realdata / LABELV2
    assert sniff_format(path) == "libfd_labelv2"
    manifest, rejects = ingest(path)
    raw = raw_hash_faces(path)
    assert len(raw) == 3226 and sum(map(len, raw.values())) == 39697  # SOURCES.md
    assert len(manifest.images) == 3226 and len(manifest.faces) == 39697 - 1  # the same repeated face
    image = manifest.images.iloc[0]
    assert (image.image_id, image.width, image.height) == ("0--Parade/0_Parade_marchingband_1_465", 1024, 678)
    first = manifest.faces.iloc[0]
    assert (first.x1, first.y1, first.x2, first.y2) == (345, 211, 349, 215)  # x1 y1 x2 y2 stored as given
    assert not manifest.faces["degenerate"].any()  # libfacedetection removed the degenerate boxes


def test_aittsmd_colmajor_real_file_equals_the_official_val(realdata: Path) -> None:
    path = realdata / COLMAJOR
    assert sniff_format(path) == "aittsmd_colmajor"
    manifest, _ = ingest(path)
    official, _ = ingest(realdata / OFFICIAL)
    assert len(manifest.images) == 3226 and len(manifest.faces) == 39703
    columns = ["image_id", "x1", "y1", "x2", "y2"]
    assert manifest.faces[columns].equals(official.faces[columns])
    # column-major: x is number 1, y number n + 1, w number 2n + 1, h number 3n + 1 of a line with n faces
    first_line = path.read_text().splitlines()[0].split()
    n = (len(first_line) - 1) // 4
    x, y, w, h = (float(first_line[1 + k * n]) for k in range(4))
    assert tuple(manifest.faces.iloc[0][["x1", "y1", "x2", "y2"]]) == (x, y, x + w, y + h) == (345, 211, 349, 215)


def test_voc_xml_real_folders(realdata: Path) -> None:
    assert sniff_format(realdata / VOC_LM) == "voc_xml"
    landmark, rejects = ingest(realdata / VOC_LM)
    assert len(rejects) == 0
    counts = landmark.faces.groupby("image_id").size().to_dict()
    assert counts == {
        "36--Football_36_Football_americanfootball_ball_36_415": 3,
        "7--Cheering_7_Cheering_Cheering_7_16": 19,
    }
    image = landmark.images.set_index("image_id").loc["7--Cheering_7_Cheering_Cheering_7_16"]
    assert (image.width, image.height) == (1024, 1024)
    cheer = landmark.faces[landmark.faces["image_id"] == "7--Cheering_7_Cheering_Cheering_7_16"].iloc[0]
    assert (cheer.x1, cheer.y1, cheer.x2, cheer.y2) == (402, 8, 466, 82)  # first <bndbox>, hand-checked
    np.testing.assert_allclose(cheer.points[:4], [417.045, 34.643, 448.223, 34.21], rtol=1e-6)
    rect, _ = ingest(realdata / VOC_RECT)
    assert rect.faces.groupby("image_id").size().tolist() == [13, 19]  # SOURCES.md: 13 of 14, 19 of 19


def test_wider_subsets_reproduce_the_published_counts(realdata: Path) -> None:
    manifest, _ = ingest(realdata / OFFICIAL)
    for level, published in PUBLISHED.items():
        rules = rules_from_options(removed="drop", wider_subset=(level, str(realdata / GT_DIR)))
        result, _ = apply_filters(manifest, rules)
        found = result.provenance["wider_subset"]
        assert found["subset_faces"] == found["subset_faces_found"] == published
        # the hard subset holds the repeated face line twice; the manifest holds that face once
        assert len(result.faces) == published - (level == "hard")
    ignored, _ = apply_filters(manifest, rules_from_options(wider_subset=("easy", str(realdata / GT_DIR))))
    assert len(ignored.faces) == len(manifest.faces) and (~ignored.faces["ignore"]).sum() == 7211


def test_wider_subset_needs_wider_val(realdata: Path, tmp_path: Path) -> None:
    manifest, _ = ingest(realdata / VOC_RECT)  # WIDER train images, not val
    with pytest.raises(FacedataError, match="--wider-subset hard: no image"):
        apply_filters(manifest, rules_from_options(wider_subset=("hard", str(realdata / GT_DIR))))
    with pytest.raises(FacedataError, match="--gt-dir"):
        apply_filters(manifest, rules_from_options(wider_subset=("hard", str(tmp_path))))


@pytest.mark.parametrize(
    ("fmt", "text", "line", "field"),
    [
        ("retinaface_txt", "# a/b.jpg\n1 2 3 4\n# a/c.jpg\n1 2 3\n", 4, "fields"),
        ("retinaface_txt", "# a/b.jpg\n1 2 3 4\n# a/c.jpg\n1 2 x 4\n", 4, "w"),
        ("retinaface_txt", "1 2 3 4\n# a/b.jpg\n1 2 3 4\n", 1, "path"),
        ("libfd_labelv2", "# a/b.jpg 100 100\n1 2 3 4\n# a/c.jpg 100\n1 2 3 4\n", 3, "path"),
        ("libfd_labelv2", "# a/b.jpg 100 100\n1 2 3 4\n# a/b.jpg 100 100\n1 2 3 4\n", 3, "path"),
        ("aittsmd_colmajor", "a\\b.jpg 1 2 3 4\na\\c.jpg 1 2 3 4 5\n", 2, "boxes"),
        ("aittsmd_colmajor", "a\\b.jpg 1 2 3 4\na\\c.jpg 1 2 3 z\n", 2, "h1"),
        ("aittsmd_colmajor", "a\\b.jpg 1 2 3 4\n..\\c.jpg 1 2 3 4\n", 2, "path"),
    ],
)
def test_bad_lines(tmp_path: Path, fmt: str, text: str, line: int, field: str) -> None:
    path = tmp_path / "bad file.txt"
    path.write_text(text)
    manifest, rejects = ingest(path, format=fmt)
    assert len(manifest.images) == 1 and manifest.images["image_id"].iloc[0] == "a/b"  # the bad image is dropped
    bad = rejects.items[0]
    assert (bad.file, bad.line, bad.field) == (str(path), line, field)
    with pytest.raises(InputError, match=f"bad file.txt:{line}: {field}:"):
        ingest(path, format=fmt, strict=True)


def test_voc_bad_files(tmp_path: Path) -> None:
    good = "<annotation><filename>a.jpg</filename><size><width>10</width><height>10</height></size>" \
           "<object><name>face</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>" \
           "</object></annotation>"
    (tmp_path / "a.xml").write_text(good)
    (tmp_path / "b.xml").write_text(good.replace("a.jpg", "b.jpg").replace("<xmax>5", "<xmax>five"))
    (tmp_path / "c.xml").write_text("<annotation><filename>c.jpg</filename>")
    manifest, rejects = ingest(tmp_path, format="voc_xml")
    assert manifest.images["image_id"].tolist() == ["a"] and len(manifest.faces) == 1
    assert [(Path(r.file).name, r.field) for r in rejects.items] == [("b.xml", "xmax"), ("c.xml", "xml")]
    with pytest.raises(InputError, match="b.xml:1: xmax: expected a number"):
        ingest(tmp_path, format="voc_xml", strict=True)


def test_cli_ingest_and_wider_subset(realdata: Path, tmp_path: Path) -> None:
    out = tmp_path / "with space"
    runner = CliRunner()
    result = runner.invoke(main, ["ingest", str(realdata / RETINA), "-o", str(out / "val.parquet")])
    assert result.exit_code == 0, result.output
    assert "format retinaface_txt (sniffed, 100% of its head fits): wrote 3,222 images, 39,703 faces" in result.output
    result = runner.invoke(main, ["filter", str(out / "val.parquet"), "-o", str(out / "hard.parquet"),
                                  "--wider-subset", "hard", "--gt-dir", str(realdata / GT_DIR), "--removed", "drop"])
    assert result.exit_code == 0, result.output
    assert "31,958 of its 31,958 faces found" in result.output
    assert len(Manifest.read(out / "hard.parquet").faces) == 31957
    result = runner.invoke(main, ["filter", str(out / "val.parquet"), "-o", str(out / "x.parquet"),
                                  "--wider-subset", "hard"])
    assert result.exit_code != 0 and "--wider-subset and --gt-dir go together" in result.output


def test_sniffing_reads_past_a_bad_first_face_line_and_reports_confidence(realdata: Path, tmp_path: Path) -> None:
    lines = (realdata / RETINA).read_text().splitlines()[:40]
    lines[1] = "345 211 4"  # the first face line is broken: one line must not decide
    path = tmp_path / "label.txt"
    path.write_text("\n".join(lines) + "\n")
    assert sniff_format(path) == "retinaface_txt"
    assert sniff_confidence(path, "retinaface_txt") == pytest.approx(1 - 1 / (40 - lines.count("") - 6), abs=0.02)
    assert sniff_confidence(realdata / LABELV2, "libfd_labelv2") == 1.0
    assert sniff_confidence(realdata / LABELV2, "retinaface_txt") == 0.0  # its `#` lines end in W H
    assert sniff_confidence(realdata / OFFICIAL, "wider_bbx_gt") is None  # that format does not measure it


@pytest.mark.parametrize(
    ("source", "fmt", "warning"),
    [
        (COLMAJOR, "mtcnn_wider_list", "73% of the boxes are degenerate"),  # column-major read as x1 y1 x2 y2 rows
        (OFFICIAL, "retinaface_txt", "read no image from this file"),
        (RETINA, "libfd_labelv2", "read no image from this file"),
    ],
)
def test_a_wrong_but_valid_format_warns(realdata: Path, tmp_path: Path, source: str, fmt: str, warning: str) -> None:
    result = CliRunner().invoke(main, ["ingest", str(realdata / source), "--format", fmt, "-q",
                                       "-o", str(tmp_path / "m.parquet")])
    assert result.exit_code == 0, result.output
    assert f"warning: format {fmt}" in result.output and warning in result.output
    manifest, rejects = ingest(realdata / OFFICIAL)
    assert format_warnings(manifest, rejects, "wider_bbx_gt") == []  # the right format is quiet


def test_voc_with_real_images_checks_the_declared_size(realdata: Path, tmp_path: Path) -> None:
    images = tmp_path / "JPEG Images"
    images.mkdir()
    for event, name in [("36--Football", "36_Football_americanfootball_ball_36_415"),
                        ("7--Cheering", "7_Cheering_Cheering_7_16")]:
        source = realdata / "wflw/WFLW_images" / event / f"{name}.jpg"  # the WIDER train images themselves
        (images / f"{event}_{name}.jpg").write_bytes(source.read_bytes())
    manifest, rejects = ingest(realdata / VOC_RECT, images=images)
    assert len(rejects) == 0 and len(manifest.faces) == 32
    assert manifest.images[["width", "height"]].to_numpy().tolist() == [[1024, 661], [1024, 1024]]  # decoded sizes
    annotations = tmp_path / "Annotations"
    annotations.mkdir()
    for file in (realdata / VOC_RECT).glob("*.xml"):
        (annotations / file.name).write_text(file.read_text().replace("<width>1024</width>", "<width>1000</width>"))
    manifest, rejects = ingest(tmp_path, format="voc_xml", images=images)
    assert len(manifest.images) == 0 and rejects.count("wrong size") == 2
    assert "declared 1000x661, the image is 1024x661" in rejects.items[0].reason


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("libfd_labelv2", "# my event/an image.jpg 640 480\n1 2 11 12\n"),
        ("aittsmd_colmajor", "my event\\an image.jpg 1 2 10 10\n"),
        ("retinaface_txt", "# my event/an image.jpg\n1 2 10 10\n"),
    ],
)
def test_paths_with_spaces(tmp_path: Path, fmt: str, text: str) -> None:
    path = tmp_path / "a folder" / "val list.txt"
    path.parent.mkdir()
    path.write_text(text)
    assert sniff_format(path) == fmt
    manifest, rejects = ingest(path)
    assert len(rejects) == 0
    assert manifest.images["rel_path"].tolist() == ["my event/an image.jpg"]
    assert manifest.faces[["x1", "y1", "x2", "y2"]].to_numpy().tolist() == [[1, 2, 11, 12]]
