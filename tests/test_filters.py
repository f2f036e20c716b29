"""Filters on the real WIDER val annotations, checked against an independent reading of the raw txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from wider_raw import COLUMNS, read_raw_wider

from facedata.errors import FacedataError
from facedata.filters import (
    DropEmptyImages,
    DropInvalid,
    MinSize,
    Where,
    apply_filters,
    face_table,
    rules_from_options,
)
from facedata.manifest import Manifest, ManifestBuilder


def read_raw_columns(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Image names and one int column per field, plus "image" (owner index per face)."""
    names, table, owners = read_raw_wider(path)
    columns = {name: table[:, j] for j, name in enumerate(COLUMNS)}
    columns["image"] = owners
    return names, columns


@pytest.fixture(scope="module")
def val_file(realdata: Path) -> Path:
    return realdata / "wider_face" / "wider_face_val_bbx_gt.txt"


@pytest.fixture(scope="module")
def raw(val_file: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    return read_raw_columns(val_file)


@pytest.fixture(scope="module")
def val(val_file: Path) -> Manifest:
    from facedata.parsers import ingest

    manifest, rejects = ingest(val_file)
    assert [r.kind for r in rejects.items] == ["duplicate face"]  # the one repeated line, kept once
    return manifest


def test_independent_reader_matches_published_counts(raw) -> None:
    names, cols = raw
    assert len(names) == 3226
    assert len(cols["x"]) == 39703


def test_min_size_10_removes_exactly_the_small_faces(val: Manifest, raw) -> None:
    names, cols = raw
    small = (cols["w"] < 10) | (cols["h"] < 10)
    out, report = apply_filters(val, [MinSize(10)])
    assert report.steps[0].faces_removed == int(small.sum())
    assert len(out.faces) == len(cols["x"]) - int(small.sum())
    # Faces are dropped, never their images: images left with no faces stay as negatives.
    assert report.steps[0].images_removed == 0
    assert len(out.images) == len(names) == 3226
    widths = out.faces["x2"] - out.faces["x1"]
    heights = out.faces["y2"] - out.faces["y1"]
    assert bool(((widths >= 10) & (heights >= 10)).all())


def test_drop_empty_images_after_min_size(val: Manifest, raw) -> None:
    names, cols = raw
    big = (cols["w"] >= 10) & (cols["h"] >= 10)
    images_with_big_face = len(np.unique(cols["image"][big]))
    out, report = apply_filters(val, rules_from_options(min_size=10, drop_empty_images=True))
    assert [s.rule for s in report.steps] == ["min_size 10", "drop_empty_images"]
    assert len(out.images) == images_with_big_face
    assert report.steps[1].images_removed == len(names) - images_with_big_face
    assert report.steps[1].faces_removed == 0


def test_drop_invalid_removes_invalid_and_degenerate(val: Manifest, raw) -> None:
    _, cols = raw
    bad = (cols["invalid"] == 1) | (cols["w"] <= 0) | (cols["h"] <= 0)
    out, report = apply_filters(val, [DropInvalid()])
    assert report.steps[0].faces_removed == int(bad.sum())
    assert not out.faces["invalid"].any() and not out.faces["degenerate"].any()


def test_where_on_face_attributes(val: Manifest, raw) -> None:
    _, cols = raw
    keep = (cols["blur"] < 2) & (cols["occlusion"] == 0)
    out, report = apply_filters(val, [Where("blur < 2 and occlusion == 0")])
    assert len(out.faces) == int(keep.sum())
    assert report.steps[0].images_removed == 0


def test_where_mixing_face_and_image_columns(val: Manifest, raw) -> None:
    names, cols = raw
    parade = np.array([names[i].startswith("0--Parade/") for i in cols["image"]])
    keep = parade & (cols["w"] >= 20)
    out, _ = apply_filters(val, [Where("event == '0--Parade' and box_w >= 20")])
    assert len(out.faces) == int(keep.sum())
    assert len(out.images) == 3226


def test_where_on_image_columns_selects_images(val: Manifest, raw) -> None:
    names, cols = raw
    parade_images = [i for i, n in enumerate(names) if n.startswith("0--Parade/")]
    parade_faces = int(np.isin(cols["image"], parade_images).sum())
    out, report = apply_filters(val, [Where("event == '0--Parade'")])
    assert len(out.images) == len(parade_images)
    assert len(out.faces) == parade_faces
    assert report.steps[0].images_removed == len(names) - len(parade_images)


def test_report_steps_add_up_and_provenance_appends(val: Manifest, tmp_path: Path) -> None:
    rules = rules_from_options(min_size=10, drop_invalid=True, where=["pose == 0"], drop_empty_images=True)
    out, report = apply_filters(val, rules)
    assert report.faces_in - sum(s.faces_removed for s in report.steps) == len(out.faces)
    assert report.images_in - sum(s.images_removed for s in report.steps) == len(out.images)
    out.write(tmp_path / "f1.parquet")
    again, _ = apply_filters(Manifest.read(tmp_path / "f1.parquet"), [Where("blur == 0")])
    history = again.provenance["filters"]
    assert [len(h["steps"]) for h in history] == [4, 1]
    assert history[0]["steps"][0]["faces_removed"] == report.steps[0].faces_removed
    # The input's provenance is kept (source files, format) and not mutated by filtering.
    assert again.provenance["source_format"] == val.provenance["source_format"]
    assert "filters" not in val.provenance


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("blurr < 2", "blurr"),
        ("blur <", "syntax"),
        ("x1 + 1", "condition"),
        ("", "empty"),
    ],
)
def test_bad_where_is_a_clean_error(query: str, problem: str) -> None:
    manifest = _small_manifest()
    with pytest.raises(FacedataError) as info:
        apply_filters(manifest, [Where(query)])
    message = str(info.value)
    assert repr(query) in message and problem in message
    assert "\n" not in message


def test_where_null_width_does_not_match() -> None:
    manifest = _small_manifest()
    out, _ = apply_filters(manifest, [Where("width > 100")])
    assert list(out.images["image_id"]) == ["a"]  # "b" has unknown width


def test_face_table_has_image_columns_and_box_size() -> None:
    table = face_table(_small_manifest())
    assert {"event", "width", "box_w", "box_h", "blur"} <= set(table.columns)
    assert table["box_w"].tolist() == [5.0, 50.0, 30.0]


def test_negative_min_size_rejected() -> None:
    with pytest.raises(FacedataError, match="min-size"):
        rules_from_options(min_size=-1)


def test_drop_empty_images_keeps_images_with_faces() -> None:
    out, report = apply_filters(_small_manifest(), [DropEmptyImages()])
    assert report.steps[0].images_removed == 1
    assert sorted(out.images["image_id"]) == ["a", "c"]


def _small_manifest() -> Manifest:
    builder = ManifestBuilder("wider_face", "train", "wider")
    builder.add_image("a", "0--Parade/a.jpg", width=640, height=480, event="0--Parade")
    builder.add_faces(
        "a",
        np.array([[0, 0, 5, 20], [10, 10, 60, 70]]),
        attributes={"blur": np.array([0, 2])},
        invalid=[0, 1],
    )
    builder.add_image("b", "1--Handshaking/b.jpg", event="1--Handshaking")
    builder.add_image("c", "c.jpg", width=90, height=90)
    builder.add_faces("c", np.array([[0, 0, 30, 30]]))
    return builder.build({"source_format": "test"})
