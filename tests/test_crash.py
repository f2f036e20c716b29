"""Crash safety: every stage, on both backends, with 1 and 2 workers, SIGKILLed at a random write step (a plan
chunk appended or a shard block written, drawn from a seeded RNG within the step count of an uninterrupted
build) and run again with the same command, ends byte-identical to the uninterrupted build: every file of the
output directory, index.json included (minus how and where it ran). The kill is real (a CLI build in a
subprocess, killed by the FACEDATA_KILL_AT_STEP hook of facedata.killpoint, no cleanup) and lands mid-build:
no index.json, every visible shard a finished one. Kills at arbitrary instants (by time) of reruns and
--overwrite runs: tests/test_build_safety.py.

The engines are the local pool with 1 and 2 workers and a 2-process Dask LocalCluster (`--engine dask-local`):
the kill hook fires in the build process, which writes every shard on the local engine and, on Dask, lists the
shards the workers wrote (a step per block, as the local writer counts: kills land before and after a listing)."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from build_fixtures import demo_manifests
from build_runs import check_interrupted, cli, output_digest, start_cli, stop
from onnx_models import mtcnn_pnet, mtcnn_rnet

from facedata import killpoint
from facedata.errors import FacedataError
from facedata.storage import ShardedDataset

SEED = int(os.environ.get("FACEDATA_CRASH_SEED", "12"))  # every kill point derives from it: set it to explore others
ENGINES = {"local-1": ["--workers", "1"], "local-2": ["--workers", "2"],
           "dask-local-2": ["--engine", "dask-local", "--workers", "2", "--scheduler-timeout", "60"]}
# Each stage's build on the small corpus, chosen so that most cases span several shards (the CLI's smallest shard
# is one block: 1,024 cascade crops, 222 PFLD crops, 36 top-down crops); pnet and onet mix (two passes: the plan
# file, then rendering), rnet keeps every sample (one pass), onet runs the detector while planning.
STAGES: dict[str, Callable[[dict], list[object]]] = {
    "pnet": lambda c: ["pnet", *c["inputs"]],
    "rnet": lambda c: ["rnet", "--detections", c["root"] / "det_small.parquet", "--landmarks",
                       c["root"] / "lmk.parquet", "--pnet", c["pnet"], "--pyramid-min-face", "40", "--ratio", "all"],
    "onet": lambda c: ["onet", "--detections", c["root"] / "det_small.parquet", "--landmarks",
                       c["root"] / "lmk.parquet", "--pnet", c["pnet"], "--rnet", c["rnet"], "--pyramid-min-face", "40"],
    "pfld": lambda c: ["pfld", "--landmarks", c["root"] / "lmk.parquet", "--variants", "6"],
    "topdown": lambda c: ["topdown", "--keypoints", c["root"] / "lmk.parquet"],
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    corpus = demo_manifests(tmp_path_factory.mktemp("crash"), seed=5, wider_images=24, cuhk_images=40, small=5)
    root = corpus["root"]
    return {**corpus, "pnet": mtcnn_pnet(root / "pnet.onnx", seed=1, prob_bias=0.8),
            "rnet": mtcnn_rnet(root / "rnet.onnx", seed=2, prob_bias=3.0), "references": {}}


def command(corpus: dict, stage: str, backend: str, out: Path, engine: str) -> list[object]:
    return ["build", *STAGES[stage](corpus), "-o", out, "--format", backend, "--shard-size", "1KB", "--quiet",
            *ENGINES[engine]]


def reference(corpus: dict, stage: str, backend: str) -> tuple[dict[str, str], int]:
    """(output digest, write steps) of the uninterrupted one-worker build, built once per module."""
    key = (stage, backend)
    if key not in corpus["references"]:
        out = corpus["root"] / f"reference-{stage}-{backend}"
        before = killpoint.steps()
        cli(*command(corpus, stage, backend, out, "local-1"))
        corpus["references"][key] = (output_digest(out), killpoint.steps() - before)
    return corpus["references"][key]


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_build_killed_at_a_random_step_reruns_byte_identical(
    corpus: dict, tmp_path: Path, stage: str, backend: str, engine: str
) -> None:
    digest, steps = reference(corpus, stage, backend)
    at = random.Random(f"{SEED}:{stage}:{backend}:{engine}").randint(1, steps)
    out = tmp_path / "out"
    args = command(corpus, stage, backend, out, engine)
    proc = start_cli(*args, env={"FACEDATA_KILL_AT_STEP": str(at)})
    where = f"killed at write step {at} of {steps} (SEED {SEED})"
    assert stop(proc) == -signal.SIGKILL, f"{where}: {proc.stderr.read().decode()}"
    check_interrupted(out)
    with pytest.raises(FacedataError):  # a reader refuses it: not a dataset yet
        ShardedDataset(out)
    cli(*args)
    assert output_digest(out) == digest, where
