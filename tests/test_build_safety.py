"""A finished dataset is never lost: reruns leave it untouched, --overwrite replaces it only once the new one is
complete, and a SIGKILL (real, of a CLI build in a subprocess) at any point never leaves a broken DIR.
Failed builds validate first and leave nothing that blocks the corrected retry."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from build_fixtures import demo_manifests
from build_runs import REPO, cli, contents, kill_when, same_files, snapshot, start_cli

from facedata.buildoutput import output_lock, recover, staging_dir, swap_in, trash_dir
from facedata.errors import FacedataError
from facedata.storage import verify_dataset
from facedata.storage.index import load_index

OPTIONS = ["--workers", "1", "--shard-size", "100KB"]  # not --quiet: the summary says 'already complete'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    corpus = demo_manifests(tmp_path_factory.mktemp("safety"), seed=4, wider_images=40)
    root, inputs = corpus["root"], corpus["inputs"]
    references = {}
    for seed in ("0", "1"):  # uninterrupted builds to compare with
        out = root / f"reference{seed}"
        cli("build", "pnet", *inputs, "-o", out, "--seed", seed, *OPTIONS)
        references[seed] = snapshot(out)
    return {**corpus, "reference": references}


def start_build(corpus: dict, out: Path, *extra: str) -> subprocess.Popen:
    return start_cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, *extra)


def shards_in(directory: Path, n: int) -> Callable[[], bool]:
    return lambda: directory.is_dir() and len(list(directory.glob("shard-*"))) >= n


def after(seconds: float) -> Callable[[], bool]:
    at = time.monotonic() + seconds
    return lambda: time.monotonic() >= at


def test_rerun_of_a_complete_build_reports_it_and_modifies_nothing(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    before = snapshot(out)
    assert "already complete" in cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    assert "re-hashed" in cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--verify")
    assert snapshot(out) == before
    # a flipped byte keeps the size: the quick check passes, --verify finds it; nothing is rewritten
    shard = out / "shard-00001.lmdb"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    damaged = snapshot(out)
    assert "already complete" in cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    text = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--verify", code=2)
    assert "shard-00001.lmdb" in text and "--overwrite" in text
    with open(shard, "r+b") as fh:
        fh.truncate(1000)
    text = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, code=2)
    assert "shard-00001.lmdb: 1,000 bytes" in text and "damaged" in text
    assert {k: v for k, v in snapshot(out).items() if k != shard.name} == {
        k: v for k, v in damaged.items() if k != shard.name}
    cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--overwrite")  # mends it
    assert contents(out) == contents(corpus["root"] / "reference0") and verify_dataset(out) == []


def test_other_options_or_inputs_are_named_and_refused_without_overwrite(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    before = snapshot(out)
    text = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--seed", "1", "--ignore-under", "30",
               code=2)
    assert "seed: 0 -> 1" in text and "crop_recipe.ignore_under: 20.0 -> 30.0" in text and "--overwrite" in text
    other = corpus["root"] / "det_small.parquet"  # the first 10 images
    text = cli("build", "pnet", "--detections", other, *corpus["inputs"][2:], "-o", out, *OPTIONS, code=2)
    assert "inputs.detections.sha256 changed" in text and "inputs.detections.images: 40 -> 10" in text
    assert snapshot(out) == before
    text = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--seed", "1", "--overwrite")
    assert contents(out) == contents(corpus["root"] / "reference1")
    assert not staging_dir(out).exists() and not trash_dir(out).exists() and verify_dataset(out) == []


def test_sigkill_during_a_rerun_leaves_the_dataset_untouched(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    before = snapshot(out)
    for delay in (0.2, 0.6, 1.0, 1.5):
        proc = start_build(corpus, out, "--verify")
        kill_when(proc, after(delay))
        assert snapshot(out) == before
    proc = start_build(corpus, out, "--seed", "1")  # refused: must not touch anything either
    assert proc.wait() == 2 and b"seed: 0 -> 1" in proc.stderr.read()
    assert snapshot(out) == before and verify_dataset(out) == []


def test_sigkill_of_a_first_build_resumes_byte_identical(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert kill_when(start_build(corpus, out), shards_in(out, 2))
    assert not (out / "index.json").exists() and (out / "index.partial.json").exists()
    assert "resumed after" in cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    assert same_files(snapshot(out), corpus["reference"]["0"]) and verify_dataset(out) == []


def test_sigkill_at_any_point_of_an_overwrite_keeps_a_complete_dataset(corpus: dict, tmp_path: Path) -> None:
    """Killed before staging, while staging at several shard counts, and once the staged index is written (the
    swap): DIR always holds the old or the new complete dataset, verifying, and the rerun ends byte-identical."""
    import shutil

    old, new = corpus["reference"]["0"], corpus["reference"]["1"]
    seen = []
    for k, point in enumerate(["0.3 s", "staging", "1 shard", "3 shards", "staged index"]):
        out = tmp_path / f"out{k}"
        shutil.copytree(corpus["root"] / "reference0", out)
        staging = staging_dir(out)
        condition = {"0.3 s": after(0.3), "staging": staging.is_dir, "1 shard": shards_in(staging, 1),
                     "3 shards": shards_in(staging, 3), "staged index": (staging / "index.json").exists}[point]
        proc = start_build(corpus, out, "--seed", "1", "--overwrite")
        killed = kill_when(proc, condition)
        assert out.is_dir() or (staging / "index.json").exists()  # (the fallback's gap: the next run recovers)
        if out.is_dir():
            assert verify_dataset(out) == []
            assert same_files(snapshot(out), old) or same_files(snapshot(out), new)
        seen.append((point, killed, out.is_dir() and same_files(snapshot(out), old)))
        cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--seed", "1", "--overwrite")
        assert same_files(snapshot(out), new) and verify_dataset(out) == []
        assert not staging.exists() and not trash_dir(out).exists()
    # the kills while staging landed (later windows are short: a loaded machine may finish first) and left the old
    assert all(killed and kept_old for _, killed, kept_old in seen[:3]), seen


def test_an_interrupted_build_of_other_options_is_named_and_replaced_only_with_overwrite(
    corpus: dict, tmp_path: Path
) -> None:
    from facedata.build import build_dataset

    out = tmp_path / "out"
    paths = {"detections": corpus["root"] / "det.parquet", "landmarks": corpus["root"] / "lmk.parquet"}
    options = {"workers": 1, "progress": False, "shard_bytes": 100_000}

    def stop(position: int) -> None:
        if position > 2000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(paths["detections"], paths["landmarks"], out, on_write=stop, **options)
    assert (out / "index.partial.json").exists() and list(out.glob("shard-*"))
    with pytest.raises(FacedataError, match=r"interrupted build with other inputs or options \(seed: 0 -> 1\)"):
        build_dataset(paths["detections"], paths["landmarks"], out, seed=1, **options)
    build_dataset(paths["detections"], paths["landmarks"], out, seed=1, overwrite=True, **options)
    assert contents(out) == contents(corpus["root"] / "reference1")


def test_an_interrupted_build_resumes_only_under_the_same_opencv(corpus: dict, tmp_path: Path, monkeypatch) -> None:
    """OpenCV 5's warpAffine reads source points exactly where 4.x rounds them to 1/32 px, so rotated crops
    differ between the two (numpy < 2 environments, MindSpore's, get OpenCV 4.11): a build records the OpenCV
    version and a resume under another one is refused, naming it, instead of mixing both in one dataset."""
    import cv2

    from facedata.build import build_dataset

    out = tmp_path / "out"
    paths = (corpus["root"] / "det.parquet", corpus["root"] / "lmk.parquet")
    options = {"workers": 1, "progress": False, "shard_bytes": 100_000}

    def stop(position: int) -> None:
        if position > 2000:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(cv2, "__version__", "4.0.0-other")
        build_dataset(*paths, out, on_write=stop, **options)
    assert json.loads((out / "index.partial.json").read_text())["provenance"]["opencv_version"] == "4.0.0-other"
    with pytest.raises(FacedataError, match=rf'opencv_version: "4.0.0-other" -> "{re.escape(cv2.__version__)}"'):
        build_dataset(*paths, out, **options)
    build_dataset(*paths, out, overwrite=True, **options)
    assert load_index(out)["provenance"]["opencv_version"] == cv2.__version__


def test_interrupted_swaps_recover_deterministically(corpus: dict, tmp_path: Path, monkeypatch) -> None:
    """Each state a kill can leave between the swap's steps, made by hand, then recovered."""
    import shutil

    from facedata import buildoutput

    old_dir, new_dir = corpus["root"] / "reference0", corpus["root"] / "reference1"
    out, staging, trash = tmp_path / "out", staging_dir(tmp_path / "out"), trash_dir(tmp_path / "out")
    # fallback, killed between its renames: no DIR, the old in TRASH, the new complete in STAGING
    shutil.copytree(old_dir, trash)
    shutil.copytree(new_dir, staging)
    recover(out)
    assert contents(out) == contents(new_dir) and not trash.exists() and not staging.exists()
    # exchange done, killed before STAGING (the old) became TRASH: an overwrite back to the old options swaps
    # the staged copy in without building anything; a build of DIR's own options deletes the stale copy
    shutil.copytree(old_dir, staging)
    text = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--overwrite", "--seed", "0")
    assert "already complete" in text and contents(out) == contents(old_dir) and not staging.exists()
    shutil.copytree(new_dir, staging)
    assert "already complete" in cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    assert contents(out) == contents(old_dir) and not staging.exists() and not trash.exists()
    # without renameat2 the swap takes two renames and ends the same
    monkeypatch.setattr(buildoutput, "_exchange", lambda a, b: False)
    shutil.copytree(new_dir, staging)
    swap_in(out, staging)
    assert contents(out) == contents(new_dir) and not staging.exists() and not trash.exists()


@pytest.mark.parametrize("case", ["ratio", "missing images", "no positives", "unknown root"])
def test_failed_build_says_why_and_leaves_nothing_in_the_way(corpus: dict, tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    bad = {"ratio": ["--ratio", "0:0:0:0"], "missing images": ["--images", f"wider_train={tmp_path}"],
           "no positives": ["--ignore-under", "5000", "--ratio", "3:1:1:2"],
           "unknown root": ["--images", f"wider_trian={tmp_path}"]}[case]
    text = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, "--quiet", *bad, code=2)
    assert text.startswith("error: ") and len(text.strip().splitlines()) == 1 and "Traceback" not in text
    if case == "ratio":
        assert "--ratio" in text
    elif case == "missing images":
        assert "none of the 40 images" in text and str(tmp_path) in text
    elif case == "unknown root":  # a typo would silently leave the manifest's own root in use
        assert "--images" in text and "no image root named 'wider_trian'" in text and "wider_train" in text
    else:
        assert "no positive samples" in text
    assert not out.exists()
    cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    assert contents(out) == contents(corpus["root"] / "reference0")


def test_a_moved_or_renamed_manifest_is_the_same_input(corpus: dict, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS)
    moved = tmp_path / "elsewhere" / "renamed.parquet"
    moved.parent.mkdir()
    shutil.copy(corpus["root"] / "det.parquet", moved)
    text = cli("build", "pnet", "--detections", moved, *corpus["inputs"][2:], "-o", out, *OPTIONS)
    assert "already complete" in text


def test_overwrite_through_a_symlinked_output_keeps_the_link(corpus: dict, tmp_path: Path) -> None:
    real, link = tmp_path / "disk" / "pnet", tmp_path / "pnet"
    cli("build", "pnet", *corpus["inputs"], "-o", real, *OPTIONS)
    link.symlink_to(real, target_is_directory=True)
    cli("build", "pnet", *corpus["inputs"], "-o", link, *OPTIONS, "--seed", "1", "--overwrite")
    assert link.is_symlink() and contents(real) == contents(corpus["root"] / "reference1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "pnet"] and list(real.parent.iterdir()) == [real]



def test_a_second_build_of_the_same_directory_is_refused_while_the_first_runs(corpus: dict, tmp_path: Path) -> None:
    """Two builds never write one DIR at once (same process or another); the lock dies with its holder,
    even on SIGKILL, so a killed build never blocks the next one."""
    out = tmp_path / "locked"
    with output_lock(out):
        refused = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, code=2)
    assert "another build is writing this directory" in refused and "Traceback" not in refused
    assert not out.exists()  # nothing written
    code = f"from facedata.buildoutput import output_lock; import time; lock = output_lock({str(out)!r}); " \
           "lock.__enter__(); print('locked', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = cli("build", "pnet", *corpus["inputs"], "-o", out, *OPTIONS, code=2)
        assert f"pid {holder.pid}" in refused
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    cli("build", "pnet", *corpus["inputs"], "-o", out, "--seed", "0", *OPTIONS)
    assert contents(out) == {k: v[1] for k, v in corpus["reference"]["0"].items() if k.startswith("shard-")}
