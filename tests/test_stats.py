"""Statistics on the real WIDER val annotations, checked against values computed here from the raw files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from wider_raw import COLUMNS, read_raw_wider

from facedata.errors import FacedataError
from facedata.manifest import Manifest, ManifestBuilder
from facedata.schema import WIDER_ATTRIBUTE_CODES
from facedata.stats import compute_stats, parse_inputs, render_json, render_markdown, render_text


def read_labelv2_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """Image sizes from libfacedetection's labelv2 val file (`# event/name.jpg W H` lines)."""
    sizes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            _, name, width, height = line.split()
            sizes[name] = (int(width), int(height))
    return sizes


@pytest.fixture(scope="module")
def raw(realdata: Path):
    return read_raw_wider(realdata / "wider_face" / "wider_face_val_bbx_gt.txt")


@pytest.fixture(scope="module")
def val(realdata: Path) -> Manifest:
    from facedata.parsers import ingest

    manifest, _ = ingest(realdata / "wider_face" / "wider_face_val_bbx_gt.txt")
    return manifest


@pytest.fixture(scope="module")
def sizes(realdata: Path) -> dict[str, tuple[int, int]]:
    return read_labelv2_sizes(realdata / "wider_face_libfacedetection" / "labelv2" / "val" / "labelv2.txt")


@pytest.fixture(scope="module")
def val_sized(val: Manifest, sizes) -> Manifest:
    """The val manifest with image sizes filled from labelv2 (as ingest --images would probe them)."""
    images = val.images.copy()
    images["width"] = images["rel_path"].map(lambda p: sizes[p][0]).astype("Int32")
    images["height"] = images["rel_path"].map(lambda p: sizes[p][1]).astype("Int32")
    return Manifest(images, val.faces, val.provenance)


def test_counts_match_published_and_raw(val: Manifest, raw) -> None:
    names, table, owners = raw
    stats = compute_stats(val)
    assert stats["images"] == 3226 and stats["faces"] == 39703
    assert stats["by_split"] == {"val": {"images": 3226, "faces": 39703}}
    assert sum(v["images"] for v in stats["by_source"].values()) == 3226
    per_image = np.bincount(owners, minlength=len(names))
    per = stats["faces_per_image"]
    assert per["max"] == int(per_image.max())
    assert per["buckets"]["0"] == int((per_image == 0).sum()) == stats["images_without_faces"] == 4
    assert per["buckets"][">50"] == int((per_image > 50).sum())
    assert per["buckets"]["2-5"] == int(((per_image >= 2) & (per_image <= 5)).sum())
    assert sum(per["buckets"].values()) == 3226
    assert per["mean"] == pytest.approx(per_image.mean(), abs=1e-4)


def test_flags_and_size_histogram(val: Manifest, raw) -> None:
    _, table, _ = raw
    w, h = table[:, 2], table[:, 3]
    stats = compute_stats(val)
    degenerate = (w <= 0) | (h <= 0)
    # The "6 degenerate" counts w or h == 0; val also has one box with w = -2 (see SOURCES.md).
    assert int(((w == 0) | (h == 0)).sum()) == 6
    assert stats["flags"]["degenerate"] == int(degenerate.sum()) == 7
    assert stats["flags"]["invalid"] == int((table[:, 7] == 1).sum()) == 585
    buckets = stats["face_size"]["buckets"]
    assert sum(buckets.values()) == 39703 - int(degenerate.sum())
    side = np.minimum(w, h)[~degenerate]  # face size: the shorter side (facedata.faces)
    assert buckets["8-16"] == int(((side >= 8) & (side < 16)).sum())
    assert buckets["0-4"] == int((side < 4).sum())
    assert buckets[">=1024"] == int((side >= 1024).sum())


def test_attribute_distributions(val: Manifest, raw) -> None:
    _, table, _ = raw
    stats = compute_stats(val)["attributes"]
    for name, codes in WIDER_ATTRIBUTE_CODES.items():
        column = table[:, COLUMNS.index(name)]
        counts = stats[name]
        assert sum(counts.values()) == 39703, name
        for code, label in codes.items():
            assert counts[label] == int((column == code).sum()), (name, label)
    # The published pin: in val only blur and occlusion take the value 2.
    assert stats["blur"]["heavy blur"] > 0 and stats["occlusion"]["heavy occlusion"] > 0
    assert stats["invalid"] == {"valid": 39703 - 585, "invalid": 585}


def test_survival_without_sizes_says_unknown(val: Manifest) -> None:
    surv = compute_stats(val)["survival"]
    assert surv["faces_with_image_size"] == 0 and surv["faces_unknown_size"] == 39703
    assert all(r["share_under"] is None and r["under"] == 0 for r in surv["rows"])
    assert "unknown" in surv["note"]
    assert "n/a" in render_text(compute_stats(val))


def test_survival_table_matches_independent_computation(val_sized: Manifest, raw, sizes) -> None:
    names, table, owners = raw
    inputs = [(320, 240), (480, 360), (640, 480), (1024, 768)]
    stats = compute_stats(val_sized, inputs=inputs)
    rows = {r["input"]: r for r in stats["survival"]["rows"]}
    assert stats["survival"]["faces_with_image_size"] == 39703 and stats["survival"]["note"] is None
    for tw, th in inputs:
        under = 0
        for (_, _, w, h, *_), owner in zip(table.tolist(), owners.tolist(), strict=True):
            width, height = sizes[names[owner]]
            scale = min(tw / width, th / height)
            under += min(w * scale, h * scale) < 10
        assert rows[f"{tw}x{th}"]["under"] == under
        assert rows[f"{tw}x{th}"]["share_under"] == pytest.approx(under / 39703, abs=1e-6)
    native = int(((table[:, 2] < 10) | (table[:, 3] < 10)).sum())
    assert rows["native"]["under"] == native
    # Bigger inputs lose fewer faces (same aspect ratio, so every scale grows).
    unders = [rows[f"{tw}x{th}"]["under"] for tw, th in inputs]
    assert unders == sorted(unders, reverse=True) and unders[0] > unders[-1]
    # WIDER val images are ~1024 px wide, so a 320x240 input loses most faces.
    assert rows["320x240"]["share_under"] > 0.5


def test_stretch_rule_differs_from_fit(val_sized: Manifest) -> None:
    fit = compute_stats(val_sized, inputs=[(320, 240)])["survival"]["rows"][1]["under"]
    stretch = compute_stats(val_sized, inputs=[(320, 240)], resize="stretch")["survival"]["rows"][1]["under"]
    # Stretching scales at least one axis more than fitting, so it never loses more faces.
    assert stretch <= fit
    with pytest.raises(FacedataError):
        compute_stats(val_sized, resize="crop")


def test_renderers(val_sized: Manifest) -> None:
    stats = compute_stats(val_sized)
    parsed = json.loads(render_json(stats))
    assert parsed["images"] == 3226 and parsed["faces"] == 39703
    text = render_text(stats, title="val")
    assert "320x240" in text and "heavy blur" in text and "Faces per image" in text
    md = render_markdown(stats, title="val")
    assert md.startswith("# val") and "| input | faces | under | share |" in md
    # Every Markdown table row has the header's number of cells.
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.count("|") for row in rows}) == 1, block


def test_landmark_coverage_and_unknown_attributes() -> None:
    builder = ManifestBuilder("cuhk_lfw_net", "train", "cuhk")
    builder.add_image("p1", "lfw_5590/p1.jpg", width=250, height=250)
    builder.add_faces("p1", np.array([[50, 50, 150, 150]]), scheme="mtcnn5", points=np.full((1, 5, 2), 100.0))
    builder.add_image("p2", "lfw_5590/p2.jpg", width=250, height=250)
    builder.add_faces(
        "p2",
        np.array([[40, 40, 140, 150]]),
        scheme="mtcnn5",
        points=np.full((1, 5, 2), 90.0),
        visible=np.array([[2, 2, 0, 2, 1]]),
    )
    builder.add_image("p3", "p3.jpg")
    builder.add_faces("p3", np.array([[0, 0, 20, 20]]))
    stats = compute_stats(builder.build({}))
    lm = stats["landmarks"]
    assert lm["schemes"] == {"mtcnn5": {
        "faces": 2, "points_per_face": 5, "points_with_coordinates": 9, "by_source": {"cuhk_lfw_net": 2},
        # the nose (point 2) is absent on p2; eyes and mouth corners are present on both faces
        "group_coverage": {"eyes": 1.0, "nose": 0.5, "mouth": 1.0}, "box_derived": 0}}
    assert lm["faces_with_landmarks"] == 2 and lm["faces_without_landmarks"] == 1
    assert stats["attributes"]["blur"]["unknown"] == 3
    assert stats["survival"]["faces_unknown_size"] == 1
    assert "blur" not in render_text(stats).split("Attributes")[1].split("Landmarks")[0].replace("(blur", "")
    json.dumps(stats)


def test_empty_manifest() -> None:
    stats = compute_stats(ManifestBuilder("x", "train", "r").build({}))
    assert stats["images"] == 0 and stats["faces"] == 0
    render_text(stats)
    render_markdown(stats)


def test_parse_inputs() -> None:
    assert parse_inputs("320x240, 640X480") == [(320, 240), (640, 480)]
    for bad in ("320", "320x", "0x10", "axb", ""):
        with pytest.raises(FacedataError, match="--inputs"):
            parse_inputs(bad)


def test_ignored_faces_are_counted_apart(val: Manifest, raw) -> None:
    """After `filter --min-size 10` (removed faces kept as ignore regions) every figure is about the faces
    left; the ignored ones are counted once, apart. Checked against the raw txt."""
    from facedata.filters import MinSize, apply_filters

    names, table, owners = raw
    w, h = table[:, COLUMNS.index("w")], table[:, COLUMNS.index("h")]
    big = (w >= 10) & (h >= 10)
    filtered, _ = apply_filters(val, [MinSize(10)])
    stats = compute_stats(filtered)
    assert stats["faces"] == int(big.sum()) and stats["ignored_faces"] == int((~big).sum())
    assert stats["images_without_faces"] == len(names) - len(np.unique(owners[big]))
    assert sum(stats["face_size"]["buckets"].values()) == int((big & (w > 0) & (h > 0)).sum())
    assert f"{int(big.sum()):,} faces (+{int((~big).sum()):,} ignored)" in render_text(stats)
    assert compute_stats(val)["ignored_faces"] == 0
