"""Filters on the real WIDER val annotations, checked against an independent reading of the raw txt.

Removed faces are kept as ignore regions by default (`removed="ignore"`); "faces" below means the faces
left for training, i.e. not ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from wider_raw import COLUMNS, read_raw_wider

from facedata.errors import FacedataError
from facedata.filters import (
    DROP,
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


def active(manifest: Manifest):
    """The faces left for training (not flagged ignore)."""
    return manifest.faces.loc[~manifest.faces["ignore"].to_numpy(bool)]


@pytest.mark.parametrize("removed", ["ignore", "drop"])
def test_min_size_10_removes_exactly_the_small_faces(val: Manifest, raw, removed: str) -> None:
    names, cols = raw
    small = (cols["w"] < 10) | (cols["h"] < 10)
    out, report = apply_filters(val, [MinSize(10, removed)])
    assert report.steps[0].faces_removed == int(small.sum())
    kept = active(out)
    assert len(kept) == len(cols["x"]) - int(small.sum())
    # Faces are removed, never their images: images left with no faces stay (as negatives when dropped).
    assert report.steps[0].images_removed == 0
    assert len(out.images) == len(names) == 3226
    widths = kept["x2"] - kept["x1"]
    heights = kept["y2"] - kept["y1"]
    assert bool(((widths >= 10) & (heights >= 10)).all())
    # ignore: every removed face is still there, flagged, with its box; drop: gone
    assert len(out.faces) == (len(cols["x"]) if removed == "ignore" else len(kept))
    assert report.steps[0].faces_ignored == (int(small.sum()) if removed == "ignore" else 0)


def test_min_size_10_reports_the_images_that_lost_all_their_faces(val: Manifest, raw) -> None:
    """WIDER val: 3 images have faces, all under 10 px. They are counted, and by default their faces
    stay as ignore regions so the samplers do not take these crowded images for pure negatives."""
    names, cols = raw
    big = (cols["w"] >= 10) & (cols["h"] >= 10)
    emptied = set(np.unique(cols["image"])) - set(np.unique(cols["image"][big]))
    assert len(emptied) == 3
    out, report = apply_filters(val, rules_from_options(min_size=10))
    assert report.steps[0].images_emptied == 3
    assert "3 images lost all their faces" in "\n".join(report.lines())
    ids = {names[i].removesuffix(".jpg") for i in emptied}
    lost = out.faces.loc[out.faces["image_id"].isin(ids)]
    assert len(lost) == int(np.isin(cols["image"], list(emptied)).sum()) > 0 and lost["ignore"].all()
    assert report.to_dict()["removed"] == "ignore"


def test_drop_empty_images_after_min_size(val: Manifest, raw) -> None:
    names, cols = raw
    big = (cols["w"] >= 10) & (cols["h"] >= 10)
    images_with_big_face = len(np.unique(cols["image"][big]))
    out, report = apply_filters(val, rules_from_options(min_size=10, drop_empty_images=True))
    assert [s.rule for s in report.steps] == ["min_size 10", "drop_empty_images"]
    assert len(out.images) == images_with_big_face
    assert report.steps[1].images_removed == len(names) - images_with_big_face
    assert report.steps[1].faces_removed == 0
    assert set(out.faces["image_id"]) <= set(out.images["image_id"])  # ignored faces left with their images


def test_drop_invalid_removes_invalid_and_degenerate(val: Manifest, raw) -> None:
    _, cols = raw
    bad = (cols["invalid"] == 1) | (cols["w"] <= 0) | (cols["h"] <= 0)
    out, report = apply_filters(val, [DropInvalid(DROP)])
    assert report.steps[0].faces_removed == int(bad.sum())
    assert not out.faces["invalid"].any() and not out.faces["degenerate"].any()
    ignored, _ = apply_filters(val, [DropInvalid()])
    assert not (active(ignored)["invalid"].any() or active(ignored)["degenerate"].any())
    assert int(ignored.faces["ignore"].sum()) == int(bad.sum())


def test_where_on_face_attributes(val: Manifest, raw) -> None:
    _, cols = raw
    keep = (cols["blur"] < 2) & (cols["occlusion"] == 0)
    out, report = apply_filters(val, [Where("blur < 2 and occlusion == 0")])
    assert len(active(out)) == int(keep.sum())
    assert report.steps[0].images_removed == 0


def test_where_mixing_face_and_image_columns(val: Manifest, raw) -> None:
    names, cols = raw
    parade = np.array([names[i].startswith("0--Parade/") for i in cols["image"]])
    keep = parade & (cols["w"] >= 20)
    out, _ = apply_filters(val, [Where("event == '0--Parade' and box_w >= 20")])
    assert len(active(out)) == int(keep.sum())
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
    assert report.faces_in - sum(s.faces_removed for s in report.steps) == len(active(out))
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


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_min_size_rejected(value: float) -> None:
    with pytest.raises(FacedataError, match="--min-size"):
        rules_from_options(min_size=value)
    with pytest.raises(FacedataError, match="--removed"):
        rules_from_options(min_size=10, removed="keep")


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


# --- the --where language: compare columns with literals, never run code ---------------------------


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("@pd.io.common.os.system('touch pwned') == 0", "'@'"),
        ("blur.real > 0", "attribute access"),
        ("abs(blur) > 0", "function calls"),
        ("__import__('os').system('touch pwned') == 0", "function calls"),
        ("(lambda: 1)() == 1", "function calls"),
        ("(lambda: 1) == 1", "lambdas"),
        ("event[0] == '0'", "subscripts"),
        ("__class__ == 1", "dunder"),
        ("[b for b in blur] == 1", "comprehensions"),
        ("blur ** 99999999999 > 0", "'**'"),
        ("blur < 2 & occlusion == 0", "'&'"),
        ("pd == 1", "unknown column 'pd'"),
        ("event == 3", "cannot compare text with number"),
        ("event in blur", "literal list"),
        ("points == 1", "lists"),
        ("blur + 1", "condition"),
        ("(y := 1) == 1", "assignments"),
        ("f'{blur}' == '1'", "f-strings"),
        ("blur is None", "'is'"),
        ("not " * 150 + "blur == 0", "nested"),
        ("blur == " + "9" * 5000, "longer than"),
    ],
)
def test_where_refuses_everything_but_the_language(tmp_path: Path, monkeypatch, query: str, problem: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FacedataError) as info:
        apply_filters(_small_manifest(), [Where(query)])
    message = str(info.value)
    assert message.startswith(f"--where {query!r}: ") and problem in message and "\n" not in message
    assert not (tmp_path / "pwned").exists()


def test_where_shell_payload_through_the_cli_runs_nothing(tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from facedata.cli import main

    monkeypatch.chdir(tmp_path)
    _small_manifest().write(tmp_path / "m.parquet")
    query = "@pd.io.common.os.system('touch x') == 0"
    result = CliRunner().invoke(main, ["filter", "m.parquet", "--where", query, "-o", "n.parquet"])
    assert result.exit_code != 0 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "--where" in result.output and "'@'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "n.parquet").exists()


def test_where_language_on_real_wider_val(val: Manifest, raw) -> None:
    """Chained comparisons, in / not in, arithmetic, not and parentheses against numpy on the raw txt."""
    names, cols = raw
    w, h = cols["w"].astype(float), cols["h"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        wide = w / h > 1.5  # x / 0 is inf (wide when x > 0), 0 / 0 unknown (no match)
    cases = {
        "0 < blur <= 1": (cols["blur"] > 0) & (cols["blur"] <= 1),
        "occlusion in [1, 2] and not (pose == 1)": np.isin(cols["occlusion"], [1, 2]) & (cols["pose"] != 1),
        "blur not in [0]": cols["blur"] != 0,
        "box_w * box_h >= 40 * 40 or (x2 - x1) / (y2 - y1) > 1.5": (w * h >= 1600) | wide,
        "invalid == True or -box_w < -100": (cols["invalid"] == 1) | (w > 100),
        "invalid != 1": cols["invalid"] == 0,
    }
    for query, expected in cases.items():
        out, _ = apply_filters(val, [Where(query, DROP)])
        assert len(out.faces) == int(expected.sum()), query


def test_where_arithmetic_edge_cases_do_not_crash() -> None:
    manifest = _small_manifest()  # box widths 5, 50, 30
    out, _ = apply_filters(manifest, [Where("1 / 0 > 1 and box_w / (box_w - 50) < 0", DROP)])
    assert out.faces["face_id"].tolist() == [0, 2]  # 50 / 0 = inf is not < 0
    out, _ = apply_filters(manifest, [Where("box_w * 1e308 * 10 > 0", DROP)])
    assert len(out.faces) == 3


def test_where_in_list_selects_images_by_event(val: Manifest, raw) -> None:
    names, _ = raw
    events = ["0--Parade", "12--Group"]
    out, report = apply_filters(val, [Where(f"event in {events!r}")])
    assert len(out.images) == sum(n.split("/")[0] in events for n in names)
    assert report.steps[0].faces_removed == len(val.faces) - len(out.faces)


def test_where_on_a_column_unknown_for_every_row_is_an_error(val: Manifest) -> None:
    # the val file ingested without --images: no image size is known, and WIDER has no head pose
    with pytest.raises(FacedataError, match=r"--where 'width >= 400'.*'width' is unknown for every row.*--images"):
        apply_filters(val, [Where("width >= 400")])
    with pytest.raises(FacedataError, match="'yaw' is unknown for every row"):
        apply_filters(val, [Where("yaw < 30")])


def test_where_unknown_attribute_does_not_match() -> None:
    """-1 (attribute unknown) is not < 2; `not in` does not match it either."""
    manifest = _small_manifest()  # faces 0, 1 of image a have blur 0, 2; face 2 of image c has none (-1)
    out, _ = apply_filters(manifest, [Where("blur < 2", DROP)])
    assert out.faces["face_id"].tolist() == [0]
    out, _ = apply_filters(manifest, [Where("blur not in [0]", DROP)])
    assert out.faces["face_id"].tolist() == [1]
    out, _ = apply_filters(manifest, [Where("not (blur >= 2)", DROP)])
    assert out.faces["face_id"].tolist() == [0]


def test_old_manifest_reads_with_ignore_false(tmp_path: Path) -> None:
    """A schema-1 manifest (before `ignore`) reads, every face not ignored; writing upgrades it."""
    import json

    import pyarrow.parquet as pq

    from facedata.manifest import to_table

    table = to_table(_small_manifest())
    meta = json.loads(table.schema.metadata[b"facedata"])
    meta["schema_version"] = 1
    old = table.drop_columns(["ignore"]).replace_schema_metadata({b"facedata": json.dumps(meta).encode()})
    pq.write_table(old, tmp_path / "v1.parquet")
    read = Manifest.read(tmp_path / "v1.parquet")
    assert read.faces["ignore"].dtype == bool and not read.faces["ignore"].any() and len(read.faces) == 3
    out, _ = apply_filters(read, [MinSize(10)])
    out.write(tmp_path / "v2.parquet")
    again = Manifest.read(tmp_path / "v2.parquet")
    assert again.faces["ignore"].tolist() == [True, False, False]
    meta["schema_version"] = 99
    pq.write_table(old.replace_schema_metadata({b"facedata": json.dumps(meta).encode()}), tmp_path / "v99.parquet")
    with pytest.raises(FacedataError, match="schema version 99"):
        Manifest.read(tmp_path / "v99.parquet")
