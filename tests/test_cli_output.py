"""One CLI, one behaviour: -q/--quiet on every command, --json for scripts, progress bars only on a terminal,
numbers written one way (2,641) and labels in class order (neg:pos:part:landmark) in every human output.

The outputs are those of the real commands on a small real build: WIDER train restricted to the two train
images in realdata, CUHK net_7876 landmarks, WIDER val for the manifest commands."""

from __future__ import annotations

import fcntl
import html
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from facedata import console
from facedata.cli import main
from facedata.console import labels_text, number

LABELS = ("negative", "positive", "part", "landmark")
FACEDATA = [sys.executable, "-c", "from facedata.cli import main; main()"]


def run(*args: object, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def leaf_commands(group: click.Group = main, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command a user can run (`build pnet`, not `build`), found by walking the click group."""
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


@pytest.fixture(scope="module")
def built(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PNet build (every planned sample: > 1,000) from two real WIDER train images and 100 CUHK faces, and
    WIDER val (39,708 faces) as a manifest; the ingest outputs are kept for the number check."""
    root = tmp_path_factory.mktemp("cli_output")
    out = {"root": root, "train": root / "train.parquet", "lmk": root / "lmk.parquet", "val": root / "val.parquet",
           "pnet": root / "pnet"}
    logs = [
        run("ingest", realdata / "wider_face" / "wider_face_train.mat", "--images", realdata / "wflw" / "WFLW_images",
            "-o", out["train"]),
        run("ingest", realdata / "lfw_net_7876" / "testImageList.txt", "--images", realdata / "lfw_net_7876",
            "-o", out["lmk"]),
        run("ingest", realdata / "wider_face" / "wider_face_val_bbx_gt.txt", "-o", out["val"]),
        run("build", "pnet", "--detections", out["train"], "--landmarks", out["lmk"], "--ratio", "all",
            "--workers", "1", "-o", out["pnet"]),
    ]
    out["logs"] = logs
    return out


def index_counts(directory: Path) -> dict[str, int]:
    """Samples per label by name, in class order, from index.json (codes 0, 1, -1, -2)."""
    codes = json.loads((directory / "index.json").read_text())["label_counts"]
    return {name: codes.get(code, 0) for name, code in zip(LABELS, ("0", "1", "-1", "-2"), strict=True)}


# --- numbers and class order ---------------------------------------------------------------------------


def unseparated(text: str) -> list[str]:
    """Numbers of four or more digits written without thousands separators, outside paths, file names,
    hashes, WxH sizes, line numbers and sample indices (identifiers to look up, not quantities)."""
    text = re.sub(r"\S*[/\\]\S*", " ", text)  # paths, with their line numbers (file:24001:)
    text = re.sub(r"\b(line|sample) \d+\b", " ", text)
    text = re.sub(r"[\w.-]+\.(lmdb|parquet|png|jpg|json|html|csv|txt|mat)\b", " ", text)
    text = re.sub(r"\b[0-9a-f]{16,}\b", " ", text)
    text = re.sub(r"\b\d+x\d+(x\d+)?\b", " ", text)
    return re.findall(r"(?<![\d,.])\d{4,}(?:\.\d+)?(?![\d,])", text)


def label_groups(text: str) -> list[list[str]]:
    """Label names in the order a line, or a run of table rows with one label each, shows them (a name counts
    when a number follows it, or when it is a whole table cell; a name seen again starts the next table)."""
    pattern = re.compile(r"\b(negative|positive|part|landmark)\b(?=:? +[\d(]|\s*\|)")
    groups, run_ = [], []
    for line in text.splitlines():
        names = pattern.findall(line)
        if len(names) == 1 and names[0] not in run_:
            run_.append(names[0])
            continue
        if run_:
            groups.append(run_)
            run_ = []
        if len(names) > 1:
            groups.append(names)
        elif names:
            run_ = names
    return [*groups, run_] if run_ else groups


def check_human(text: str, what: str) -> None:
    assert unseparated(text) == [], f"{what}: numbers without separators: {unseparated(text)}\n{text}"
    for group in label_groups(text):
        ranks = [LABELS.index(name) for name in group]
        assert ranks == sorted(ranks), f"{what}: labels not in class order: {group}\n{text}"


def page_text(index: Path) -> str:
    """The report page's table rows and text, one row per line, cells as `| cell`; the full provenance record
    (stored JSON, shown as it is) left out."""
    page = re.sub(r"<pre>.*?</pre>|<style>.*?</style>", " ", index.read_text(), flags=re.S)
    page = re.sub(r'src="data:[^"]*"', " ", page)
    page = re.sub(r"</tr>|<br>|</p>|</h\d>|</li>", "\n", page)
    page = re.sub(r"<t[dh][^>]*>", " | ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_one_number_format_and_class_order() -> None:
    assert [number(v) for v in (2641, np.int64(12880), 12.0, 0.020963472736897828, 1234.5678, 0.5, True, "n/a")] == [
        "2,641", "12,880", "12", "0.02096", "1,234.6", "0.5", "True", "n/a"]
    assert labels_text({"-2": 9445, "-1": 318, "0": 240, "1": 99}) == (
        "negative 240, positive 99, part 318, landmark 9,445")
    assert labels_text({"landmark": 3, "positive": 1}) == "negative 0, positive 1, part 0, landmark 3"


def test_plain_progress_lines_every_tenth_and_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "PROGRESS_GAP_SECONDS", 0.0)  # a slow pass: every tenth is worth a line
    stream = io.StringIO()
    bar = console.progress(2000, "render", "img", initial=400, stream=stream)  # a StringIO is no terminal
    for _ in range(16):
        bar.update(100)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.rsplit(", ", 1)[0] for line in lines] == [
        f"render: {n:,}/2,000 img ({n // 20}%)" for n in range(600, 2001, 200)]
    assert console.progress(10, "x", "img", enabled=False, stream=stream).disable


def test_plain_progress_of_a_fast_pass_is_one_line() -> None:
    """A pass of a second in a log: its final line only, not ten lines within a second."""
    stream = io.StringIO()
    bar = console.progress(40, "planned", "img", stream=stream)
    for _ in range(40):
        bar.update(1)
    bar.close()
    [line] = stream.getvalue().splitlines()
    assert line.startswith("planned: 40/40 img (100%), ")


def test_checkers_catch_what_they_look_for() -> None:
    text = "wrote 2641 faces, 12,880 images to /tmp/a-12345/x.parquet (/data/val.txt:24001: shard-00001.lmdb)"
    assert unseparated(text) == ["2641"]
    assert unseparated("1024x768 input, sha256 3c52da927cf09c03, 0.0078125 scale, 1,234.5678 px") == []
    assert label_groups("labels landmark 9,445, part 318\nnegative   240\npositive  99\n| negative | 1\nx") == [
        ["landmark", "part"], ["negative", "positive"], ["negative"]]
    with pytest.raises(AssertionError):
        check_human("checked 10,102 samples (landmark 9,445, part 318, negative 240, positive 99)", "old verify")


def test_human_outputs_of_the_main_commands(built: dict, tmp_path: Path) -> None:
    """ingest, build, inspect, verify, stats, filter, export, preview, report: every number of 1,000 or more
    has its separators, every label listing is in class order."""
    pnet, val = built["pnet"], built["val"]
    outputs = {f"ingest/build {k}": r.output for k, r in enumerate(built["logs"])}
    assert "skipped 12,880 item(s)" in outputs["ingest/build 0"]
    outputs["inspect"] = run("inspect", pnet).output
    outputs["verify"] = run("verify", pnet, "--labels", "--pixels", "5").output
    outputs["stats"] = run("stats", val).output
    outputs["stats --markdown"] = run("stats", val, "--markdown").output
    outputs["filter"] = run("filter", val, "--min-size", "10", "-o", tmp_path / "f.parquet").output
    outputs["export"] = run("export", "retinaface", val, "-o", tmp_path / "label.txt").output
    outputs["preview"] = run("preview", pnet, "-o", tmp_path / "p.png").output
    run("report", pnet, "-o", tmp_path / "report")
    outputs["report page"] = page_text(tmp_path / "report" / "index.html")
    for what, text in outputs.items():
        check_human(text, what)
    # the outputs do hold what is checked: large numbers and label listings
    counts = index_counts(pnet)
    assert counts["landmark"] >= 1000
    assert re.search(rf"^total +{sum(counts.values()):,}$", outputs["ingest/build 3"], re.M)
    listed = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    assert f"labels            {listed}" in outputs["inspect"] and f"({listed})" in outputs["verify"]
    assert "39,703 faces" in outputs["stats"]
    assert [line.split()[0] for line in built["logs"][3].stdout.splitlines()[3:7]] == list(LABELS)
    assert len(label_groups(outputs["report page"])) >= 3


# --- inspect ------------------------------------------------------------------------------------------------


def test_inspect_aligns_keys_and_names_labels(built: dict, tmp_path: Path) -> None:
    """Keys in one column per block, label names in class order, no dict reprs or raw codes, rounded floats
    (the mixed build's keep shares are 16-digit floats in index.json)."""
    run("build", "pnet", "--detections", built["train"], "--landmarks", built["lmk"], "--workers", "1",
        "-o", tmp_path / "mixed", "-q")
    for directory in (built["pnet"], tmp_path / "mixed"):
        text = run("inspect", directory).output
        top = [line for line in text.splitlines() if re.match(r"\S+( \S+)* {2,}\S", line)]
        assert len(top) >= 10 and len({re.match(r"\S+( \S+)* {2,}", line).end() for line in top}) == 1, text
        assert re.search(r"^facedata_version +0\.1\.0$", text, re.M)
        assert "'" not in text and "{" not in text and "}" not in text  # no codes as strings, no dict reprs
        assert re.search(r"\d\.\d{6,}", text) is None, text  # no 16-digit floats
        assert re.search(r"^labels +negative \d[\d,]*, positive \d+, part \d+, landmark \d[\d,]*$", text, re.M)
    assert re.search(r"^ +keep +negative 1, positive 1, part 0\.\d{1,4}, landmark 0\.0\d{1,4}$", text, re.M), text
    assert re.search(r"^ +anchor +positive$", text, re.M), text


def test_inspect_json_is_the_index(built: dict) -> None:
    result = run("inspect", built["pnet"], "--json")
    assert json.loads(result.stdout) == json.loads((built["pnet"] / "index.json").read_text())


# --- verify --json --------------------------------------------------------------------------------------------


def test_verify_json_gives_the_checks_and_keeps_the_exit_code(built: dict, tmp_path: Path) -> None:
    result = run("verify", built["pnet"], "--labels", "--pixels", "3", "--json")
    report = json.loads(result.stdout)  # stdout is nothing but the JSON
    assert report["ok"] is True and list(report["checks"]) == ["shards", "labels", "pixels"]
    assert report["checks"]["shards"] == {"ok": True, "problems": [], "findings": []}
    labels = report["checks"]["labels"]
    counts = index_counts(built["pnet"])
    assert labels["ok"] and labels["checked"] == sum(counts.values()) and labels["mismatches"] == 0
    assert labels["by_label"] == counts
    assert report["checks"]["pixels"]["checked"] == 3 and report["checks"]["pixels"]["failures"] == 0

    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(built["pnet"]), str(broken)], check=True)
    shard = next(broken.glob("shard-*"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    failed = run("verify", broken, "--labels", "--json", ok=False)
    assert failed.exit_code == 1
    report = json.loads(failed.stdout)
    assert report["ok"] is False and list(report["checks"]) == ["shards"]
    [problem] = report["checks"]["shards"]["problems"]
    assert problem.startswith(f"{shard.name}: sha256 mismatch: the bytes changed since the build (same size, "
                              f"{len(data):,} bytes)")
    assert report["checks"]["shards"]["findings"][0]["kind"] == "changed"
    assert report["checks"]["shards"]["findings"][0]["file"] == shard.name
    text = run("verify", broken, ok=False)
    assert text.exit_code == 1 and "sha256 mismatch" in text.stdout


# --- -q/--quiet ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in leaf_commands()])
def test_every_command_takes_quiet(path: str) -> None:
    command = dict(leaf_commands())[tuple(path.split())]
    flags = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
    assert {"-q", "--quiet"} <= flags, f"facedata {path} has no -q/--quiet"
    result = run(*path.split(), "-q", "--help")
    assert "--quiet" in result.output


def test_leaf_commands_cover_the_help_listing() -> None:
    listed = run("--help").output.split("Commands:")[1].split()
    top = {p[0] for p, _ in leaf_commands()}
    assert top == {word for word in listed if word in main.commands} and {"build", "verify", "inspect"} <= top
    assert ("build", "pnet") in dict(leaf_commands())


def test_quiet_keeps_errors_and_requested_output_only(built: dict, tmp_path: Path) -> None:
    pnet = built["pnet"]
    build = run("build", "pnet", "--detections", built["train"], "--landmarks", built["lmk"], "--ratio", "all",
                "--workers", "1", "-o", tmp_path / "pnet", "-q")
    assert build.output == ""  # no summary table, no progress, nothing short
    mixed = run("build", "pnet", "--detections", built["train"], "--landmarks", built["lmk"], "--workers", "1",
                "-o", tmp_path / "mixed", "-q")
    assert mixed.stdout == "" and len(mixed.stderr.splitlines()) == 1
    assert re.fullmatch(r"warning: shortage: negative: [\d,]+ available, [\d,]+ wanted \(writing all available\)\n",
                        mixed.stderr)
    assert run("verify", pnet, "--labels", "-q").output == ""
    assert run("preview", pnet, "-o", tmp_path / "p.png", "--quiet").output == ""
    assert run("report", pnet, "-o", tmp_path / "r", "-q").output == ""
    assert run("filter", built["val"], "--min-size", "10", "-o", tmp_path / "f.parquet", "-q").output == ""
    exported = run("export", "retinaface", built["val"], "-o", tmp_path / "l.txt", "-q")
    assert exported.stdout == "" and exported.stderr.startswith("warning: retinaface cannot hold 39,703 faces with")
    assert run("inspect", pnet, "-q").stdout == run("inspect", pnet).stdout  # the summary is what was asked for
    assert json.loads(run("stats", built["val"], "--json", "-q").stdout)["faces"] == 39703


# --- progress -------------------------------------------------------------------------------------------------


def _build_args(built: dict, out: Path) -> list[str]:
    return ["build", "pnet", "--detections", str(built["train"]), "--landmarks", str(built["lmk"]),
            "--workers", "1", "-o", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_progress_in_a_log_is_plain_lines(built: dict, tmp_path: Path) -> None:
    """stderr a pipe (a log): no carriage return, lines naming the pass, its count and share."""
    done = subprocess.run([*FACEDATA, *_build_args(built, tmp_path / "out")], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert "planned: 102/102 img (100%)" in "\n".join(lines) and "render: 102/102 img (100%)" in "\n".join(lines)
    assert all(re.fullmatch(r"(planned|render): \d+/102 img \(\d+%\), \d+\.\d s", line) for line in lines), lines


def test_progress_on_a_terminal_is_a_bar(built: dict, tmp_path: Path) -> None:
    """stderr a terminal (a pty): tqdm's bar, redrawn with carriage returns."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen([*FACEDATA, *_build_args(built, tmp_path / "out")], stdout=subprocess.DEVNULL,
                            stderr=follower, env=_env())
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0, seen
    text = seen.decode()
    assert "\r" in text and "planned: 100%|" in text and "| 102/102" in text
