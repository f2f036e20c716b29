"""`facedata report`: stats.json checked against counts made here from the raw WIDER val file, and the page
loaded from file in a real headless Chromium (no console message, every image decoded at a non-zero size)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from shard_fixtures import write_dataset
from test_stats import read_labelv2_sizes
from wider_raw import COLUMNS, read_raw_wider

from facedata.cli import main
from facedata.manifest import Manifest

_CHECK = """<script>window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const bad = imgs.filter((i) => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).length;
  const d = document.createElement("div"); d.id = "facedata-check";
  d.textContent = `images=${imgs.length} bad=${bad}`; document.body.appendChild(d);
});</script>"""


def browser() -> str:
    """Debian's chromium; a missing browser fails under CI (CI set; .ci/run installs it), else skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium found but CI requires the browser test (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


def load_in_browser(index: Path) -> tuple[int, int, str]:
    """(images, images not decoded, browser log) for the page loaded from file with a checking script added."""
    page = index.with_name("check.html")
    page.write_text(index.read_text().replace("</body>", _CHECK + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
             "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'id="facedata-check">images=(\d+) bad=(\d+)<', run.stdout)
    assert match, f"the check script did not run (exit {run.returncode}): {run.stderr[-2000:]}"
    return int(match[1]), int(match[2]), run.stderr


def console_lines(log: str) -> list[str]:
    """Console messages and page errors the browser logged (dbus and GPU noise of a headless box is not one)."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def report(tmp_path: Path, manifest: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    result = CliRunner().invoke(main, ["report", str(manifest), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def val_path(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WIDER val with image sizes from libfacedetection's labelv2 (as `ingest --images` would probe them)."""
    from facedata.parsers import ingest

    manifest, _ = ingest(realdata / "wider_face" / "wider_face_val_bbx_gt.txt")
    sizes = read_labelv2_sizes(realdata / "wider_face_libfacedetection" / "labelv2" / "val" / "labelv2.txt")
    images = manifest.images.copy()
    images["width"] = images["rel_path"].map(lambda p: sizes[p][0]).astype("Int32")
    images["height"] = images["rel_path"].map(lambda p: sizes[p][1]).astype("Int32")
    path = tmp_path_factory.mktemp("val") / "val.parquet"
    Manifest(images, manifest.faces, manifest.provenance).write(path)
    return path


@pytest.fixture(scope="module")
def train_path(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WIDER train restricted to the two train images in realdata (mmpose's WFLW test images), sizes probed."""
    from facedata.parsers import ingest

    train, _ = ingest(realdata / "wider_face" / "wider_face_train.mat", images=realdata / "wflw" / "WFLW_images")
    path = tmp_path_factory.mktemp("train") / "train.parquet"
    train.write(path)
    return path


def test_stats_json_matches_raw_wider_val(val_path: Path, realdata: Path, tmp_path: Path) -> None:
    names, table, owners = read_raw_wider(realdata / "wider_face" / "wider_face_val_bbx_gt.txt")
    sizes = read_labelv2_sizes(realdata / "wider_face_libfacedetection" / "labelv2" / "val" / "labelv2.txt")
    stats = json.loads((report(tmp_path, val_path, "r") / "stats.json").read_text())
    assert stats["images"] == len(names) == 3226 and stats["faces"] == len(table) == 39703
    per_image = np.bincount(owners, minlength=len(names))
    assert stats["faces_per_image"]["buckets"]["11-50"] == int(((per_image >= 11) & (per_image <= 50)).sum())
    w, h = table[:, 2].astype(float), table[:, 3].astype(float)
    side = np.minimum(w, h)[(w > 0) & (h > 0)]  # face size: the shorter side
    assert stats["face_size"]["buckets"]["16-32"] == int(((side >= 16) & (side < 32)).sum())
    assert stats["attributes"]["blur"]["heavy blur"] == int((table[:, COLUMNS.index("blur")] == 2).sum())
    # Survival at the four common inputs, aspect kept: a face is lost when its shorter side falls under 10 px.
    img_w = np.array([sizes[names[k]][0] for k in owners], float)
    img_h = np.array([sizes[names[k]][1] for k in owners], float)
    rows = {r["input"]: r for r in stats["survival"]["rows"]}
    assert list(rows) == ["native", "320x240", "480x360", "640x480", "1024x768"]
    for tw, th in ((320, 240), (480, 360), (640, 480), (1024, 768)):
        scale = np.minimum(tw / img_w, th / img_h)
        assert rows[f"{tw}x{th}"]["under"] == int((np.minimum(w, h) * scale < 10).sum()), (tw, th)
    assert rows["320x240"]["under"] > rows["1024x768"]["under"] > 0


def test_page_renders_in_headless_chromium(val_path: Path, train_path: Path, realdata: Path, tmp_path: Path) -> None:
    """Three real reports: WIDER val (no images known), WFLW (landmark plots), two WIDER train images drawn."""
    from facedata.parsers import ingest

    wflw, _ = ingest(realdata / "wflw" / "WFLW_annotations" / "list_98pt_test" / "list_98pt_test_blur.txt")
    wflw.write(tmp_path / "wflw.parquet")
    pages = {
        "val": report(tmp_path, val_path, "val"),
        "wflw": report(tmp_path, tmp_path / "wflw.parquet", "wflw"),
        "train": report(tmp_path, train_path, "train"),
    }
    for name, out in pages.items():
        text = (out / "index.html").read_text()
        assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), name  # nothing fetched from elsewhere
        images, bad, log = load_in_browser(out / "index.html")
        assert images == text.count("<img ") >= 4 and bad == 0, name  # at least the count and attribute plots
        assert console_lines(log) == [], name
    assert len(re.findall(r'<img alt="[^"]+[.]jpg"', (pages["train"] / "index.html").read_text())) == 2
    assert "mean shape" in (pages["wflw"] / "index.html").read_text()
    # The check can fail: an undecodable image is counted.
    broken = pages["train"] / "index.html"
    broken.write_text(broken.read_text().replace("</body>", '<img src="data:image/png;base64,AAAA"></body>'))
    assert load_in_browser(broken)[:2] == (broken.read_text().count("<img "), 1)


def test_refuses_to_overwrite_and_shard_dirs(val_path: Path, tmp_path: Path) -> None:
    out = report(tmp_path, val_path, "r", "--grid", "0")
    before = (out / "index.html").read_bytes()
    result = CliRunner().invoke(main, ["report", str(val_path), "-o", str(out)])
    assert result.exit_code != 0 and "--overwrite" in result.output and "Traceback" not in result.output
    assert (out / "index.html").read_bytes() == before
    assert CliRunner().invoke(main, ["report", str(val_path), "-o", str(out), "--overwrite"]).exit_code == 0


def test_shard_report_counts_synthetic_shards(tmp_path: Path) -> None:
    """Three LMDB shards of known samples: labels per shard, achieved mix and landmark targets recomputed here."""
    n = 2500
    write_dataset(tmp_path / "ds", "lmdb", n, shard_samples=1024)
    stats = json.loads((report(tmp_path, tmp_path / "ds", "r", "--batch-size", "100") / "stats.json").read_text())
    labels = (np.arange(n) * 5) % 4 - 2  # shard_fixtures.synthetic's label rule, seed 0
    assert [row["samples"] for row in stats["per_shard"]] == [1024, 1024, 452]
    for k, row in enumerate(stats["per_shard"]):
        chunk = labels[k * 1024 : (k + 1) * 1024]
        assert row["labels"] == {"negative": int((chunk == 0).sum()), "positive": int((chunk == 1).sum()),
                                 "part": int((chunk == -1).sum()), "landmark": int((chunk == -2).sum())}
    assert stats["mix"]["part"]["achieved_share"] == round(float((labels == -1).mean()), 4)
    assert stats["mix"]["part"]["requested_share"] is None  # this set was not mixed
    index = np.flatnonzero(labels == -2)
    targets = ((index[:, None] + np.arange(10)) % 100 / 100.0).astype(np.float32).ravel()  # stored as float32
    # Per batch: batch_mix 3:1:1:2 of 100 is 43:14:14:29 (largest remainder) in every batch; the shuffle
    # varies around the dataset's shares.
    batches = stats["batches"]
    assert batches["mix_ratio"] == "3:1:1:2"
    for name, count in zip(("negative", "positive", "part", "landmark"), (43, 14, 14, 29), strict=True):
        assert batches["batch_mix"][name] == {"min": count / 100, "mean": count / 100, "max": count / 100}
        share = stats["mix"][name]["achieved_share"]
        assert batches["shuffle"][name]["min"] <= share <= batches["shuffle"][name]["max"]
    assert sum(batches["shuffle"][name]["mean"] for name in stats["mix"]) == pytest.approx(1.0, abs=1e-3)
    landmark = stats["landmark_targets"]
    assert landmark["counts"] == np.histogram(targets, bins=np.arange(-16, 49) / 32)[0].tolist()
    boxed = np.flatnonzero((labels == 1) | (labels == -1))
    x1 = stats["box_offsets"]["x1"]
    offsets = ((boxed % 9 - 4) / 10.0).astype(np.float32)
    assert x1["counts"] == np.histogram(offsets, bins=np.arange(-32, 33) / 32)[0].tolist()


def test_shard_report_of_a_real_build_renders(train_path: Path, tmp_path: Path) -> None:
    """A PNet build from two real WIDER images: the requested mix from the build, the page in Chromium."""
    result = CliRunner().invoke(main, ["build", "pnet", "--detections", str(train_path), "-o", str(tmp_path / "pnet"),
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    out = report(tmp_path, tmp_path / "pnet", "r")
    stats = json.loads((out / "stats.json").read_text())
    index = json.loads((tmp_path / "pnet" / "index.json").read_text())
    assert {k: v for k, v in stats["per_shard"][0]["labels"].items() if v} == {
        {"0": "negative", "1": "positive", "-1": "part", "-2": "landmark"}[k]: v
        for k, v in index["label_counts"].items()}
    assert stats["mix"]["negative"]["requested_share"] == round(3 / 7, 4)  # the default ratio 3:1:1:2
    assert stats["provenance"] == index["provenance"]
    text = (out / "index.html").read_text()
    assert "contact sheet" in text and html.escape(index["provenance"]["command_line"]) in text
    images, bad, log = load_in_browser(out / "index.html")
    assert images == text.count("<img ") >= 5 and bad == 0
    assert console_lines(log) == []


@pytest.mark.parametrize("removed", ["ignore", "drop"])
def test_compare_after_a_filter(val_path: Path, realdata: Path, tmp_path: Path, removed: str) -> None:
    """`filter --min-size 10` on WIDER val: faces removed and images left faceless, recounted from the raw file."""
    names, table, owners = read_raw_wider(realdata / "wider_face" / "wider_face_val_bbx_gt.txt")
    after = tmp_path / "after.parquet"
    result = CliRunner().invoke(main, ["filter", str(val_path), "--min-size", "10", "--removed", removed,
                                       "-o", str(after), "-q"])
    assert result.exit_code == 0, result.output
    out = report(tmp_path, after, "r", "--compare", str(val_path), "--grid", "0")
    compare = json.loads((out / "stats.json").read_text())["compare"]
    small = (table[:, 2] < 10) | (table[:, 3] < 10)
    assert compare["faces_removed"] == int(small.sum())
    assert compare[{"ignore": "faces_now_ignore", "drop": "faces_dropped"}[removed]] == int(small.sum())
    assert compare["faces_added"] == 0
    kept_per_image = np.bincount(owners[~small], minlength=len(names))
    had = np.bincount(owners, minlength=len(names)) > 0
    lost = sorted(names[k] for k in np.flatnonzero(had & (kept_per_image == 0)))
    assert compare["images_lost_all_faces_list"] == lost and len(lost) > 0
    assert compare["before"]["faces"] - compare["after"]["faces"] == int(small.sum())
    text = (out / "index.html").read_text()
    assert all(html.escape(name) in text for name in lost)
    images, bad, log = load_in_browser(out / "index.html")
    assert images == text.count("<img ") >= 2 and bad == 0 and console_lines(log) == []


def test_compare_refuses_shard_directories(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", "lmdb", 10)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "ds"), "-o", str(tmp_path / "r"),
                                       "--compare", str(tmp_path / "ds" / "index.json")])
    assert result.exit_code == 2 and "--compare" in result.output and not (tmp_path / "r").exists()


def test_empty_manifest_reports_without_warnings(val_path: Path, tmp_path: Path) -> None:
    """A filter that keeps nothing: the report still writes (zero counts, no log axis over no data)."""
    empty = tmp_path / "empty.parquet"
    result = CliRunner().invoke(main, ["filter", str(val_path), "--where", "blur > 5", "--removed", "drop",
                                       "--drop-empty-images", "-o", str(empty), "-q"])
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = report(tmp_path, empty, "r", "--compare", str(val_path))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images"] == 0 and stats["compare"]["images_lost_all_faces"] == 3226 - 4


def test_mean_shape_in_box_units() -> None:
    """Points in box units over the faces where each is present; ignore regions and masked points left out."""
    import pandas as pd

    from facedata.report import mean_shapes

    faces = pd.DataFrame({
        "scheme": ["s", "s", "s", None],
        "ignore": [False, False, True, False],
        "x1": [0.0, 10.0, 0.0, 0.0], "y1": [0.0, 10.0, 0.0, 0.0], "x2": [10.0, 30.0, 5.0, 5.0],
        "y2": [10.0, 30.0, 5.0, 5.0],
        "points": [[2.0, 3.0, 8.0, 3.0], [16.0, 14.0, np.nan, np.nan], [0.0, 0.0, 0.0, 0.0], None],
        "visible": [[2, 2], [2, 0], [2, 2], None],
    })
    shape = mean_shapes(faces)["s"]
    assert shape["mean"] == [[0.25, 0.25], [0.8, 0.3]]
    assert shape["std"] == [[0.05, 0.05], [0.0, 0.0]]


@pytest.mark.parametrize(("args", "flag"), [(["--grid", "-4"], "--grid"), (["--survival-px", "nan"], "--survival-px"),
                                            (["--survival-px", "-1"], "--survival-px")])
def test_nonsense_report_option_is_a_one_line_error(val_path: Path, tmp_path: Path, args: list[str],
                                                    flag: str) -> None:
    result = CliRunner().invoke(main, ["report", str(val_path), "-o", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and flag in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_image_grid_draws_on_the_stored_pixels_not_the_exif_rotated_ones(tmp_path: Path) -> None:
    """Boxes are in stored-pixel coordinates (EXIF orientation ignored, as every reader does): an 80x40 JPEG
    tagged 'rotate 90' must be drawn 80 wide, not 40."""
    import base64

    import cv2
    from PIL import Image

    from facedata.parsers import ingest
    from facedata.report import image_grid

    (tmp_path / "img").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    Image.new("RGB", (80, 40), (0, 0, 0)).save(tmp_path / "img" / "a.jpg", exif=exif.tobytes())
    (tmp_path / "gt.txt").write_text("a.jpg\n1\n10 10 20 20 0 0 0 0 0 0\n")
    manifest, _ = ingest(tmp_path / "gt.txt", images=tmp_path / "img")
    tags, note = image_grid(manifest, None, 1, 0)
    assert len(tags) == 1, note
    data = base64.b64decode(re.search(r'base64,([^"]+)"', tags[0]).group(1))
    cell = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert cell[-1, 0].min() == 255 and cell[0, -1].max() < 64  # a wide image: bottom white, top-right dark
