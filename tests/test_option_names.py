"""One meaning per option name (issue 11): the face-size thresholds have one name each, the same on every
command, old names still work with a notice, and "face size" is the shorter side in filter, stats and build."""

from __future__ import annotations

import json
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
from click.core import ParameterSource
from click.testing import CliRunner

from facedata.cli import main
from facedata.optionnames import RENAMED
from facedata.oracle import DetectionRules, LandmarkRules
from facedata.samples import LABEL_NEGATIVE, LABEL_PART, LABEL_POSITIVE, ORIGIN_DETECTIONS
from facedata.storage import ShardedDataset
from facedata.storage.index import INDEX_NAME, load_index

OLD_NAMES = {"--min-face", "--gt-min-face", "--landmark-min-face"}
# each meaning, its one name, and the commands that have it
MEANINGS = {
    "--ignore-under": {"build pnet", "build rnet", "build onet"},  # detection faces not sampled: ignore regions
    "--landmark-ignore-under": {"build pnet", "build rnet", "build onet"},  # landmark faces not sampled
    "--pyramid-min-face": {"detect", "build rnet", "build onet"},  # smallest face the pyramid searches
    "--survival-px": {"stats", "report"},  # survival table threshold
    "--min-size": {"filter"},  # filter: faces under it are removed
}


def _commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            out.update(_commands(command, full + " "))
        else:
            out[full] = command
    return out


def _visible_flags(command: click.Command) -> set[str]:
    return {flag for p in command.params if isinstance(p, click.Option) and not p.hidden for flag in p.opts}


def test_each_size_meaning_has_one_name_on_every_command() -> None:
    """No command declares an old name; each new name is on exactly the commands of its meaning."""
    commands = _commands()
    for name, command in commands.items():
        assert not (_visible_flags(command) | {f for p in command.params for f in p.opts}) & OLD_NAMES, name
    for flag, where in MEANINGS.items():
        assert {name for name, c in commands.items() if flag in _visible_flags(c)} == where, flag
    # every old name of a command leads to a name of that command, and to the meaning it had there
    for command, renamed in RENAMED.items():
        for old, new in renamed.items():
            assert command in MEANINGS[new], (command, old, new)
    assert RENAMED["build pnet"]["--min-face"] == "--ignore-under"
    assert RENAMED["build rnet"]["--min-face"] == RENAMED["detect"]["--min-face"] == "--pyramid-min-face"
    assert RENAMED["build onet"]["--gt-min-face"] == "--ignore-under"
    assert RENAMED["stats"]["--min-face"] == RENAMED["report"]["--min-face"] == "--survival-px"


@pytest.mark.parametrize(("command", "old", "new"), [(c, o, n) for c, r in RENAMED.items() for o, n in r.items()])
def test_old_names_work_with_a_notice_naming_the_new_one(command: str, old: str, new: str, capsys) -> None:
    """An old name parses as the new one (given on the command line, so it overrides a preset), with one
    notice line on stderr naming both."""
    existing = __file__
    required = {"build pnet": ["--detections", existing, "-o", "out"],
                "build rnet": ["--detections", existing, "--pnet", existing, "-o", "out"],
                "build onet": ["--detections", existing, "--pnet", existing, "--rnet", existing, "-o", "out"],
                "detect": [existing, "--pnet", existing], "stats": [existing], "report": [existing, "-o", "out"]}
    ctx = click.Context(main, info_name="facedata")
    target: click.Command = main
    for name in command.split():
        target = target.commands[name]  # type: ignore[attr-defined]
        if isinstance(target, click.Group):
            ctx = click.Context(target, info_name=name, parent=ctx)
    sub = target.make_context(command.split()[-1], [*required[command], f"{old}=33"], parent=ctx)
    param = new.lstrip("-").replace("-", "_")
    assert sub.params[param] == 33 and sub.get_parameter_source(param) == ParameterSource.COMMANDLINE
    notices = capsys.readouterr().err.strip().splitlines()
    assert len(notices) == 1 and notices[0].startswith(f"notice: {old} is deprecated in '{command}': use {new} (")


# --- the side convention: a 12 x 8 px face is "under 10 px" for filter, stats and build alike ---------------

FACES = {"wide": (20, 20, 12, 8), "tall": (60, 40, 8, 12), "big": (90, 50, 40, 40)}  # x y w h


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """One real 160 x 120 PNG with a 12 x 8, an 8 x 12 and a 40 x 40 face, ingested from a WIDER bbx_gt file."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "images" / "0--Test").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert cv2.imwrite(str(root / "images" / "0--Test" / "a.png"), pixels)
    lines = ["0--Test/a.png", str(len(FACES))] + [f"{x} {y} {w} {h} 0 0 0 0 0 0" for x, y, w, h in FACES.values()]
    (root / "gt.txt").write_text("\n".join(lines) + "\n")
    manifest = root / "det.parquet"
    result = CliRunner().invoke(main, ["ingest", str(root / "gt.txt"), "--format", "wider_bbx_gt", "--images",
                                       str(root / "images"), "-o", str(manifest), "-q"])
    assert result.exit_code == 0, result.output
    return {"root": root, "manifest": manifest}


def _run(*args: object) -> click.testing.Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _sampled_faces(out: Path) -> set[int]:
    records = ShardedDataset(out).read(np.arange(len(ShardedDataset(out))))[1]
    faced = records[(records["origin"] == ORIGIN_DETECTIONS) & np.isin(records["label"], [LABEL_POSITIVE, LABEL_PART])]
    return set(faced["face_index"].tolist())


def test_a_12x8_face_is_under_10_px_in_filter_stats_and_build(tiny: dict[str, Path]) -> None:
    from facedata.manifest import Manifest

    root, manifest = tiny["root"], tiny["manifest"]
    faces = Manifest.read(manifest).faces
    index_of = {name: int(np.flatnonzero((faces["x1"] == x) & (faces["y1"] == y))[0])  # face_index: manifest row
                for name, (x, y, _, _) in FACES.items()}
    small = {index_of["wide"], index_of["tall"]}
    # filter --min-size 10 removes both (kept as ignore regions), keeps the 40 px face
    _run("filter", manifest, "--min-size", "10", "-o", root / "filtered.parquet", "-q")
    kept = Manifest.read(root / "filtered.parquet").faces
    assert sorted(kept.loc[kept["ignore"], "x1"].tolist()) == [20.0, 60.0] and int((~kept["ignore"]).sum()) == 1
    # stats --survival-px 10: both are under 10 px at native size
    stats = json.loads(_run("stats", manifest, "--json", "--survival-px", "10").stdout)
    native = stats["survival"]["rows"][0]
    assert native["input"] == "native" and native["under"] == 2 and native["faces"] == 3
    # build pnet --ignore-under 10: neither is sampled, both are ignore regions (verify --labels agrees)
    common = ["build", "pnet", "--detections", manifest, "--workers", "1", "--ratio", "all", "-q"]
    _run(*common, "-o", root / "b10", "--ignore-under", "10")
    assert _sampled_faces(root / "b10") == {index_of["big"]}
    assert " 0 mismatches" in _run("verify", root / "b10", "--labels").stdout
    # ... while at 8 both are large enough, so the rule (not the sampler's luck) excluded them above
    _run(*common, "-o", root / "b8", "--ignore-under", "8")
    assert small <= _sampled_faces(root / "b8")
    records = ShardedDataset(root / "b10").read(np.arange(len(ShardedDataset(root / "b10"))))[1]
    assert (records["label"] == LABEL_NEGATIVE).any()


def test_old_name_builds_the_same_dataset_as_the_new_one(tiny: dict[str, Path]) -> None:
    """`build pnet --min-face 30` (old name) is `--ignore-under 30`: the second build finds it complete."""
    out = tiny["root"] / "alias"
    common = ["build", "pnet", "--detections", tiny["manifest"], "--workers", "1", "--ratio", "all", "-o", out]
    old = _run(*common, "--min-face", "30")
    assert "notice: --min-face is deprecated in 'build pnet': use --ignore-under" in old.output
    assert load_index(out)["provenance"]["crop_recipe"]["ignore_under"] == 30
    again = _run(*common, "--ignore-under", "30")
    assert "already complete" in again.output and "notice" not in again.output


def test_a_dataset_recorded_with_the_old_rule_is_refused_not_reused(tiny: dict[str, Path]) -> None:
    """A complete dataset from before the rename (crop_recipe.min_face, the larger side) is another build: a
    rerun refuses it, naming the changed keys, and leaves it as it is."""
    out = tiny["root"] / "legacy"
    common = ["build", "pnet", "--detections", tiny["manifest"], "--workers", "1", "--ratio", "all", "-o", out, "-q"]
    _run(*common)
    index = json.loads((out / INDEX_NAME).read_text())
    for key in ("crop_recipe", "landmark_recipe"):
        recipe = index["provenance"][key]
        recipe["min_face"] = recipe.pop("ignore_under")
        del recipe["face_side"]
    index["fingerprint"] = "0" * 64  # what an older facedata recorded: the hash of those keys
    (out / INDEX_NAME).write_text(json.dumps(index))
    before = (out / INDEX_NAME).read_bytes()
    result = CliRunner().invoke(main, [str(a) for a in common])
    assert result.exit_code == 2 and "crop_recipe.min_face: 20.0 -> (absent)" in result.output, result.output
    assert "crop_recipe.face_side: (absent) -> \"shorter\"" in result.output and "--overwrite" in result.output
    assert (out / INDEX_NAME).read_bytes() == before
    # verify --labels reads such a recipe with the rule it ran with: the larger side
    rules = DetectionRules.from_recipes(index["provenance"]["crop_recipe"])
    assert (rules.ignore_under, rules.face_side) == (20.0, "larger")
    assert LandmarkRules.from_recipe(index["provenance"]["landmark_recipe"]).face_side == "larger"
