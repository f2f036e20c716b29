"""The ingest / formats / filter / stats commands, through click's runner and one real subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from wider_raw import read_raw_wider

from facedata.cli import main
from facedata.manifest import Manifest

BAD_WIDER = (
    "0--Parade/0_Parade_a.jpg\n2\n10 10 20 20 0 0 0 0 0 0 \n10 10 abc 20 0 0 0 0 0 0 \n"
    "1--Handshaking/1_Handshaking_b.jpg\n1\n5 5 30 30 0 0 0 0 0 0 \n"
)


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def val_file(realdata: Path) -> Path:
    return realdata / "wider_face" / "wider_face_val_bbx_gt.txt"


@pytest.fixture(scope="module")
def val_manifest(val_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "val.parquet"
    result = run("ingest", val_file, "-o", out)
    assert result.exit_code == 0, result.output
    assert "no --images" in result.stderr and "skipped 1 item(s) (1 duplicate face)" in result.stderr
    rows = list(csv.DictReader(out.with_name(out.name + ".rejects.csv").open()))
    assert [(row["line"], row["kind"]) for row in rows] == [("24001", "duplicate face")]
    return out


def test_formats_lists_every_registered_format() -> None:
    from facedata.parsers import FORMATS

    result = run("formats")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == len(FORMATS.names()) >= 5
    for (name, fmt), line in zip(FORMATS, lines, strict=True):
        assert line.split()[0] == name and fmt.description in line


def test_ingest_real_val_then_stats_json(val_manifest: Path) -> None:
    result = run("stats", val_manifest, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)  # stdout is nothing but the JSON
    assert stats["images"] == 3226 and stats["faces"] == 39703
    assert isinstance(stats["images"], int) and isinstance(stats["faces"], int)


def test_stats_text_and_markdown(val_manifest: Path) -> None:
    text = run("stats", val_manifest, "--inputs", "320x240,1280x960")
    assert text.exit_code == 0
    assert "1280x960" in text.stdout and "480x360" not in text.stdout
    assert "image size unknown for 39,703" in text.stdout
    md = run("stats", val_manifest, "--markdown")
    assert md.exit_code == 0 and "| input | faces | under | share |" in md.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--inputs", "320by240"], "--inputs"), (["--json", "--markdown"], "exclusive")],
)
def test_stats_bad_options(val_manifest: Path, args: list[str], needle: str) -> None:
    result = run("stats", val_manifest, *args)
    assert result.exit_code == 2 and needle in result.stderr


def test_filter_prints_per_rule_counts(val_manifest: Path, val_file: Path, tmp_path: Path) -> None:
    _, table, _ = read_raw_wider(val_file)
    small = int(((table[:, 2] < 10) | (table[:, 3] < 10)).sum())
    out = tmp_path / "min10.parquet"
    result = run(
        "filter", val_manifest, "-o", out, "--min-size", "10", "--where", "blur < 2", "--drop-empty-images"
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(
        line.startswith("min_size 10") and f"removed {small:,} faces, 0 images" in line for line in lines
    )
    assert any(line.startswith("where blur < 2") for line in lines)
    assert any(line.startswith("drop_empty_images") for line in lines)
    assert any("removed faces kept as ignore regions" in line for line in lines)
    assert any(line.startswith("min_size 10") and "3 images lost all their faces" in line for line in lines)
    filtered = Manifest.read(out)
    assert filtered.provenance["filters"][0]["steps"][0]["faces_removed"] == small
    kept = filtered.faces.loc[~filtered.faces["ignore"]]
    assert (kept["blur"] < 2).all() and filtered.faces["ignore"].any()
    dropped = tmp_path / "dropped.parquet"
    result = run("filter", val_manifest, "-o", dropped, "--min-size", "10", "--where", "blur < 2", "--removed", "drop")
    assert result.exit_code == 0, result.output
    assert Manifest.read(dropped).faces["ignore"].sum() == 0 and len(Manifest.read(dropped).faces) == len(kept)


def test_filter_quiet_prints_nothing(val_manifest: Path, tmp_path: Path) -> None:
    result = run("filter", val_manifest, "-o", tmp_path / "o.parquet", "--drop-invalid", "--quiet")
    assert result.exit_code == 0 and result.output == ""


def test_bad_where_is_one_line_exit_2(val_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "never.parquet"
    result = run("filter", val_manifest, "-o", out, "--where", "blurr < 2")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --where 'blurr < 2'") and "blurr" in result.stderr
    assert not out.exists()


def test_filter_without_rules_is_an_error(val_manifest: Path, tmp_path: Path) -> None:
    result = run("filter", val_manifest, "-o", tmp_path / "o.parquet")
    assert result.exit_code == 2 and "no filter rule" in result.stderr


def test_ingest_bad_line_writes_rejects_report(tmp_path: Path) -> None:
    source = tmp_path / "wider_face_train_bbx_gt.txt"
    source.write_text(BAD_WIDER)
    out = tmp_path / "m.parquet"
    result = run("ingest", source, "-o", out)
    assert result.exit_code == 0, result.output
    assert "skipped 1 item" in result.stderr
    report = out.with_name("m.parquet.rejects.csv")
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 1 and rows[0]["line"] == "4" and "abc" in rows[0]["reason"]
    manifest = Manifest.read(out)
    assert 5 <= len(manifest.faces) + 4 <= 6  # the good faces survive (the bad image may go whole)

    custom = tmp_path / "custom.csv"
    result = run("ingest", source, "-o", out, "--rejects", custom, "--quiet", "--overwrite")
    assert result.exit_code == 0 and custom.exists()
    assert "no --images" not in result.stderr


def test_ingest_strict_stops_with_one_line(tmp_path: Path) -> None:
    source = tmp_path / "wider_face_train_bbx_gt.txt"
    source.write_text(BAD_WIDER)
    out = tmp_path / "m.parquet"
    result = run("ingest", source, "-o", out, "--strict")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{source}:4: w:" in errors[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_ingest_with_images_probes_sizes_and_reports_missing(tmp_path: Path) -> None:
    source = tmp_path / "wider_face_val_bbx_gt.txt"
    source.write_text(BAD_WIDER.replace("abc", "25"))
    root = tmp_path / "images"
    (root / "0--Parade").mkdir(parents=True)
    cv2.imwrite(str(root / "0--Parade" / "0_Parade_a.jpg"), np.zeros((120, 200, 3), np.uint8))
    out = tmp_path / "m.parquet"
    result = run("ingest", source, "--images", root, "--split", "custom", "-o", out)
    assert result.exit_code == 0, result.output
    assert "no --images" not in result.stderr and "skipped 1 item" in result.stderr
    rows = list(csv.DictReader(out.with_name("m.parquet.rejects.csv").open()))
    assert "1_Handshaking_b.jpg" in rows[0]["reason"]
    manifest = Manifest.read(out)
    assert manifest.images[["width", "height", "split"]].values.tolist() == [[200, 120, "custom"]]


def test_unknown_format_is_a_clean_error(tmp_path: Path) -> None:
    source = tmp_path / "x.txt"
    source.write_text(BAD_WIDER)
    result = run("ingest", source, "--format", "no_such_format", "-o", tmp_path / "m.parquet")
    assert result.exit_code == 2 and "no_such_format" in result.stderr


def test_console_script_subprocess(val_manifest: Path) -> None:
    script = Path(sys.executable).with_name("facedata")
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    proc = subprocess.run(
        [str(script), "stats", str(val_manifest), "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert (stats["images"], stats["faces"]) == (3226, 39703)
    bad = subprocess.run(
        [str(script), "stats", str(val_manifest), "--inputs", "x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --inputs") and "Traceback" not in bad.stderr


# --- ingest: wrong root, summary, stale report, output paths, faces outside the image ---------------


def test_ingest_wrong_images_root_is_an_error(val_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    empty = tmp_path / "not_the_images"
    empty.mkdir()
    result = run("ingest", val_file, "--images", empty, "-o", out)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    first = empty.resolve() / "0--Parade/0_Parade_marchingband_1_465.jpg"
    assert result.stderr == (
        f"error: --images {empty}: none of the 3226 annotated images is under this root (wrong root?); "
        f"first: {val_file}:1: missing image file {first}\n"
    )
    assert not out.exists() and not out.with_name("m.parquet.rejects.csv").exists()


def test_ingest_summary_names_each_kind_with_a_count_and_first_example(tmp_path: Path) -> None:
    source = tmp_path / "wider_face_val_bbx_gt.txt"
    source.write_text(
        "a/1.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\n"  # count 1, two face lines
        "a/2.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 3 4 0 0 0 0 0 0\n"  # the same face twice
        "a/3.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
        "a/4.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
    )
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    for name in ("1", "2", "3"):
        cv2.imwrite(str(root / "a" / f"{name}.jpg"), np.zeros((20, 30, 3), np.uint8))
    out = tmp_path / "m.parquet"
    result = run("ingest", source, "--images", root, "-o", out)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    start = lines.index("skipped 3 item(s) (1 wrong face count, 1 duplicate face, 1 missing image)")
    assert lines[start + 1] == (
        f"  1 wrong face count, first {source}:2: count: wrong face count: 'a/1.jpg' declares 1 face line(s), "
        "found 2 before the next image path (line 5)"
    )
    assert lines[start + 2].startswith(f"  1 duplicate face, first {source}:8: face: duplicate face in 'a/2.jpg'")
    assert lines[start + 3] == (
        f"  1 missing image, first {source}:12: image: missing image file {root.resolve() / 'a/4.jpg'}"
    )
    rows = list(csv.DictReader(out.with_name("m.parquet.rejects.csv").open()))
    assert [row["kind"] for row in rows] == ["wrong face count", "duplicate face", "missing image"]
    assert list(Manifest.read(out).images["image_id"]) == ["a/2", "a/3"]


def test_ingest_replaces_or_removes_a_stale_rejects_report(tmp_path: Path) -> None:
    source = tmp_path / "wider_face_train_bbx_gt.txt"
    source.write_text(BAD_WIDER)
    out = tmp_path / "m.parquet"
    report = out.with_name("m.parquet.rejects.csv")
    assert run("ingest", source, "-o", out).exit_code == 0 and report.exists()
    source.write_text(BAD_WIDER.replace("abc", "25"))  # fixed: the next run skips nothing
    result = run("ingest", source, "-o", out, "--overwrite")
    assert result.exit_code == 0 and "no items skipped" in result.stderr
    assert not report.exists()  # the old report described the old manifest
    custom = tmp_path / "custom.csv"
    custom.write_text("stale\n")
    result = run("ingest", source, "-o", out, "--rejects", custom, "--overwrite")
    assert result.exit_code == 0 and custom.read_text().splitlines() == ["file,line,field,reason,kind"]


def test_ingest_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    source = tmp_path / "wider_face_train_bbx_gt.txt"
    source.write_text(BAD_WIDER)
    link = tmp_path / "link.parquet"
    link.symlink_to(source)
    for args, option in (
        (["-o", source], "-o/--output"),
        (["-o", tmp_path / "." / source.name], "-o/--output"),
        (["-o", link], "-o/--output"),
        (["-o", tmp_path / "m.parquet", "--rejects", source], "--rejects"),
        (["-o", tmp_path / "m.parquet", "--rejects", tmp_path / "m.parquet"], "--rejects"),
    ):
        result = run("ingest", source, *args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith(f"error: {option} ") and "is the same file as" in result.stderr
        assert result.stderr.count("\n") == 1
    assert source.read_text() == BAD_WIDER and not (tmp_path / "m.parquet").exists()


def test_filter_refuses_to_overwrite_its_input(val_manifest: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "val.parquet"
    manifest.write_bytes(val_manifest.read_bytes())
    link = tmp_path / "link.parquet"
    link.symlink_to(manifest)
    for target in (manifest, tmp_path / "." / manifest.name, link):
        result = run("filter", manifest, "--min-size", "10", "-o", target)
        assert result.exit_code == 2 and result.stderr.startswith("error: -o/--output ")
        assert "is the same file as" in result.stderr and result.stderr.count("\n") == 1
    assert manifest.read_bytes() == val_manifest.read_bytes()


def test_ingest_box_outside_the_image_console_script(tmp_path: Path) -> None:
    """A real subprocess: the default skips and reports the image, --strict stops with one line."""
    script = Path(sys.executable).with_name("facedata")
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    source = tmp_path / "wider_face_val_bbx_gt.txt"
    source.write_text("a/1.jpg\n1\n1000000000 2 3 4 0 0 0 0 0 0\na/2.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    for name in ("1", "2"):
        cv2.imwrite(str(root / "a" / f"{name}.jpg"), np.zeros((30, 40, 3), np.uint8))
    out = tmp_path / "m.parquet"
    base = [str(script), "ingest", str(source), "--images", str(root), "-o", str(out)]
    proc = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"  1 outside image, first {source}:3: x2: 1e+09 lies 1e+09 px outside the 40x30 image" in proc.stderr
    assert list(Manifest.read(out).images["image_id"]) == ["a/2"]
    strict = subprocess.run([*base, "--strict", "--overwrite"], capture_output=True, text=True, timeout=300)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.startswith(f"error: {source}:3: x2: 1e+09 lies") and strict.stderr.count("\n") == 1


def test_short_help_option_on_every_command() -> None:
    from facedata.cli import main as cli_main

    commands = [[]] + [[name] for name in cli_main.commands] + [["build", stage] for stage in ("pnet", "pfld")]
    for words in commands:
        result = CliRunner().invoke(cli_main, [*words, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, (words, result.output)


def test_image_outputs_make_their_folders_and_refuse_unknown_suffixes(tmp_path: Path) -> None:
    """preview (and detect, through the same writer) create missing folders; an unknown suffix is refused
    before any work with one line; verify on an interrupted build says how to resume it."""
    from facedata.imageio import write_image

    image = np.full((8, 8, 3), 200, np.uint8)
    write_image(tmp_path / "new" / "deeper" / "a.png", image)
    assert cv2.imread(str(tmp_path / "new" / "deeper" / "a.png")).shape == (8, 8, 3)
    out = tmp_path / "sheet.xyz"
    result = run("preview", tmp_path, "-o", out)
    assert result.exit_code == 2 and "cannot write '.xyz' images" in result.stderr and not out.exists()
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "index.partial.json").write_text("{}")
    result = run("verify", partial)
    assert result.exit_code != 0 and "run the same build command again to resume it" in result.output


@pytest.mark.parametrize(("flag", "value"), [("--per-label", "0"), ("--columns", "-1"), ("--cell", "0")])
def test_nonsense_preview_option_names_the_flag(tmp_path: Path, flag: str, value: str) -> None:
    out = tmp_path / "sheet.png"
    result = run("preview", tmp_path, "-o", out, flag, value)
    assert result.exit_code == 2 and flag in result.output and "Traceback" not in result.output, result.output
    assert not out.exists()



@pytest.mark.parametrize("command", ["preview", "report"])
def test_negative_seed_is_a_one_line_error(tmp_path: Path, command: str) -> None:
    from shard_fixtures import write_dataset

    write_dataset(tmp_path / "ds", "lmdb", 10)
    result = run(command, tmp_path / "ds", "-o", tmp_path / "out.png", "--seed", "-1")
    assert result.exit_code == 2 and "--seed" in result.output and not isinstance(result.exception, ValueError), \
        result.output
    assert not (tmp_path / "out.png").exists()


def test_stats_nan_survival_px_is_an_error(val_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    assert run("ingest", val_file, "-o", out, "-q").exit_code == 0
    result = run("stats", out, "--survival-px", "nan")
    assert result.exit_code == 2 and "--survival-px" in result.output, result.output


def test_topdown_bad_input_size_is_named_before_the_manifest_is_read(tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    result = run("build", "topdown", "--keypoints", junk, "--input", "0x-1", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--input '0x-1'" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_verify_negative_max_listed_is_an_error(tmp_path: Path) -> None:
    result = run("verify", tmp_path, "--max-listed", "-1")
    assert result.exit_code == 2 and "--max-listed" in result.output, result.output


def test_manifest_outputs_are_replaced_only_with_overwrite(val_manifest: Path, tmp_path: Path) -> None:
    """ingest, filter and fuse never replace an existing output silently (a finished output is sacred)."""
    out = tmp_path / "kept.parquet"
    out.write_bytes(b"an earlier result")
    source = tmp_path / "wider_face_train_bbx_gt.txt"
    source.write_text(BAD_WIDER)
    for args in (["ingest", source], ["filter", val_manifest, "--min-size", "10"]):
        result = run(*args, "-o", out)
        assert result.exit_code == 2 and "exists; pass --overwrite" in result.stderr, result.output
        assert out.read_bytes() == b"an earlier result"
        assert run(*args, "-o", out, "--overwrite").exit_code == 0
        out.write_bytes(b"an earlier result")


@pytest.mark.parametrize("stage, own", [("pnet", "--ratio"), ("rnet", "--pyramid-min-face"), ("onet", "--pos-iou"),
                                        ("pfld", "--size"), ("topdown", "--margin")])
def test_build_help_lists_the_common_options_first(stage: str, own: str) -> None:
    """Every build's --help: inputs, output, where and how it runs first; the stage's own options after."""
    text = CliRunner().invoke(main, ["build", stage, "-h"]).output
    common, _, stage_part = text.partition("\nStage options:\n")
    assert stage_part, text
    for option in ("-o, --output", "--format", "--workers", "--engine", "--seed", "--images", "--overwrite",
                   "-q, --quiet", "-h, --help"):
        assert option in common and option not in stage_part, option
    assert own in stage_part and own not in common
    first = common.split("Options:\n", 1)[1].split()[0]
    assert first in ("--detections", "--landmarks", "--keypoints"), first
