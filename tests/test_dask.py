"""`--engine dask|dask-local`: every build on a real Dask LocalCluster of 2 worker processes writes the same
bytes as the local engine; a worker killed mid-run has its tasks rerun; a stopped Dask build resumes; the
engine options fail on one line naming the flag; output and image roots may be file:// URLs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from build_fixtures import demo_manifests
from click.testing import CliRunner
from conftest import require_framework
from onnx_models import mtcnn_pnet, mtcnn_rnet

from facedata.build import CascadeFactory, build_dataset
from facedata.cli import main
from facedata.detect import CascadeConfig
from facedata.engines import Engine
from facedata.errors import FacedataError
from facedata.samplers.mined import MiningRecipe
from facedata.storage import verify_dataset

distributed = require_framework("distributed")

SMALL = {"shard_bytes": 256 * 552, "block_samples": 128}  # several shards from the demo corpus
RUN_FIELDS = ("seconds", "resumed_from_sample", "resumed_from_image", "resumed_plan_from_image")


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


@pytest.fixture
def dask(cluster) -> Engine:
    with distributed.Client(cluster) as client:  # a test may have killed a worker: its nanny restarts it
        client.wait_for_workers(2, timeout=60)
    return Engine("dask", scheduler=cluster.scheduler_address)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dask_corpus")
    corpus = demo_manifests(root, seed=5, wider_images=12, small=4)
    corpus["pnet"] = mtcnn_pnet(root / "pnet.onnx", seed=1, prob_bias=0.8)
    corpus["rnet"] = mtcnn_rnet(root / "rnet.onnx", seed=2, prob_bias=3.0)
    return corpus


def snapshot(out: Path) -> dict[str, str]:
    """sha256 of every file in a dataset directory; index.json without what records the run itself."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "index.json":
            index = json.loads(data)
            del index["provenance"]["command_line"]
            for key in RUN_FIELDS:
                del index["summary"][key]
            data = json.dumps(index, sort_keys=True).encode()
        files[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    assert any(name.endswith((".lmdb", ".parquet")) or "shard" in name for name in files), files
    return files


def cli(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _stage_args(corpus: dict, stage: str) -> list[object]:
    root = corpus["root"]
    det, lmk, small = root / "det.parquet", root / "lmk.parquet", root / "det_small.parquet"
    mining = ["--pyramid-min-face", 40, "--landmarks", lmk, "--detections", small, "--pnet", corpus["pnet"]]
    return {
        "pnet": ["pnet", "--detections", det, "--landmarks", lmk, "--shard-size", "150KB"],  # two passes (mixed)
        "pnet-all": ["pnet", "--detections", det, "--landmarks", lmk, "--ratio", "all"],  # one pass
        "rnet": ["rnet", *mining, "--ratio", "40:1:1:1"],  # mined (ONNX PNet), two passes
        "onet": ["onet", *mining, "--rnet", corpus["rnet"], "--ratio", "all"],  # mined (PNet + RNet), one pass
        "topdown": ["topdown", "--keypoints", lmk],
        "pfld": ["pfld", "--landmarks", lmk, "--variants", 3],
    }[stage]


@pytest.mark.parametrize("stage", ["pnet", "pnet-all", "rnet", "onet", "topdown", "pfld"])
def test_every_build_on_dask_is_byte_identical_to_the_local_engine(
    corpus: dict, dask: Engine, tmp_path: Path, stage: str
) -> None:
    args = ["build", *_stage_args(corpus, stage)]
    cli(*args, "-q", "-o", tmp_path / "local", "--workers", 1)
    cli(*args, "-q", "-o", tmp_path / "dask", "--engine", "dask", "--scheduler", dask.scheduler,
        "--images-per-task", 2)
    local = snapshot(tmp_path / "local")
    assert snapshot(tmp_path / "dask") == local
    assert verify_dataset(tmp_path / "dask") == []
    # the engine is not part of the dataset: a local rerun finds the Dask build complete
    assert "already complete" in cli(*args, "-o", tmp_path / "dask", "--workers", 1)


@dataclass(frozen=True)
class LoggedFactory(CascadeFactory):
    """A CascadeFactory that logs the pid of every process that builds the models."""

    log: str = ""

    def __call__(self):
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        return super().__call__()


def test_mining_models_are_loaded_once_per_worker(corpus: dict, dask: Engine, tmp_path: Path) -> None:
    log = tmp_path / "loads.txt"
    factory = LoggedFactory(str(corpus["pnet"]), config=CascadeConfig(pyramid_min_face=40), log=str(log))
    summary = build_dataset(
        corpus["small"], corpus["lmk"], tmp_path / "rnet", stage="rnet", detector=factory, progress=False,
        mining_recipe=MiningRecipe(size=24), chunk_images=1, engine=dask, ratio={0: 40, 1: 1, -1: 1, -2: 1},
    )
    loads = log.read_text().split()
    assert str(os.getpid()) not in loads
    assert summary["mining"]["images"] == 4 and summary["workers"] == 2
    assert len(loads) == len(set(loads)) <= 2  # 4 mining tasks and the render tasks: one load per worker


def test_workers_running_other_facedata_code_are_refused(
    corpus: dict, dask: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facedata.daskrunner

    monkeypatch.setattr(facedata.daskrunner, "code_digest", lambda: "the build's code differs")  # this side only
    with pytest.raises(FacedataError, match="runs another facedata .* install the same versions on every worker"):
        _pnet(corpus, tmp_path / "out", engine=dask)
    assert not (tmp_path / "out" / "index.json").exists()


def _pnet(corpus: dict, out: Path, **options) -> dict:
    return build_dataset(corpus["det"], corpus["lmk"], out, progress=False, **SMALL, **options)


def _rerun_keys(dask_scheduler) -> list[str]:
    """Keys of tasks the scheduler sent to a worker more than once."""
    from collections import Counter

    sent = Counter(entry[0] for entry in dask_scheduler.transition_log if entry[2] == "processing")
    return sorted(str(key) for key, n in sent.items() if n > 1)


@pytest.mark.parametrize("phase", ["plan", "write"])
def test_a_killed_worker_s_tasks_are_rerun_without_duplicates_or_gaps(
    corpus: dict, dask: Engine, tmp_path: Path, phase: str
) -> None:
    """Killed while planning (its plan chunks are lost), or while the workers write shards (its running
    shard and the finished ones it still holds are rendered again): the same bytes, no stray temp file."""
    _pnet(corpus, tmp_path / "reference", workers=1)
    with distributed.Client(dask.scheduler) as client:
        victim = next(iter(client.run(os.getpid).values()))
        killed: list[int] = []

        def kill(count: int) -> None:  # tasks of the window are queued, running or held on both workers
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(count)

        summary = _pnet(corpus, tmp_path / "dask", engine=dask, chunk_images=1, **{f"on_{phase}": kill})
        client.wait_for_workers(2, timeout=60)
        assert killed and victim not in client.run(os.getpid).values()
        tasks = {"plan": ("plan_chunk-",), "write": ("render_piece-", "write_shard-")}[phase]
        assert any(key.startswith(tasks) for key in client.run_on_scheduler(_rerun_keys))  # retried
    assert summary["samples"] == _pnet(corpus, tmp_path / "reference", workers=1)["samples"]
    assert snapshot(tmp_path / "dask") == snapshot(tmp_path / "reference")


def test_on_dask_the_workers_write_the_shards(
    corpus: dict, dask: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build process only lists the shards: it cannot write one here, and the run still succeeds."""
    import facedata.storage.writer

    def refuse(*args, **kwargs):
        raise AssertionError("the build process wrote a shard")

    monkeypatch.setattr(facedata.storage.writer.ShardBuilder, "__init__", refuse)  # this process only
    for options in ({}, {"mix": False}):  # two passes, and the one-pass build (planned, then rendered on Dask)
        out = tmp_path / f"dask-{len(options)}"
        summary = _pnet(corpus, out, engine=dask, **options)
        assert summary["shards"] >= 3 and verify_dataset(out) == []
    with pytest.raises(AssertionError, match="the build process wrote a shard"):
        _pnet(corpus, tmp_path / "local", workers=1)


def _broken_images(corpus: dict, root: Path, names: list[str]) -> Path:
    """A copy of the demo WIDER images with `names` truncated (they plan from geometry: only rendering fails)."""
    bad = root / "bad-images"
    if not bad.exists():
        shutil.copytree(corpus["corpus"].wider_images, bad)
        for name in names:
            path = next(bad.rglob(name))
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return bad


def test_images_failing_only_at_render_move_the_shards_on_dask_as_locally(
    corpus: dict, dask: Engine, tmp_path: Path
) -> None:
    """Truncated images early, in the middle and at the end of the stream: each task that meets one writes
    nothing and the shards from there are placed again; the result is the local engine's, skip report too."""
    names = sorted(p.name for p in Path(corpus["corpus"].wider_images).rglob("*.jpg"))
    victims = [names[1], names[len(names) // 2], names[-1]]
    bad = _broken_images(corpus, tmp_path, victims)
    roots = {"wider_train": str(bad)}
    local = _pnet(corpus, tmp_path / "local", workers=1, roots=roots)
    summary = _pnet(corpus, tmp_path / "dask", engine=dask, chunk_images=1, roots=roots)
    assert summary["shards"] == local["shards"] >= 4
    assert snapshot(tmp_path / "dask") == snapshot(tmp_path / "local")
    skipped = summary["skipped"]
    assert sorted(Path(item["path"]).name for item in skipped) == sorted(victims)
    assert all("truncated file" in item["reason"] for item in skipped)
    assert not [p.name for p in (tmp_path / "dask").iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(("phase", "first", "then"), [
    ("plan", "dask", "dask"), ("write", "dask", "dask"), ("write", "dask", "local"), ("write", "local", "dask"),
    ("write", "dask", "dask, progress table lost"), ("write", "local", "dask, progress table lost"),
])
def test_a_stopped_dask_build_resumes_its_completed_tasks(
    corpus: dict, dask: Engine, tmp_path: Path, phase: str, first: str, then: str
) -> None:
    """Stopped on one engine and rerun on either: the listed shards are kept. Without the progress table
    (where the shards' images are), the Dask rerun renders the listed shards again and checks their hashes."""
    total = _pnet(corpus, tmp_path / "reference", workers=1)["samples"]

    def stop(count: int) -> None:
        if count >= (6 if phase == "plan" else total // 2):
            raise Interrupt

    out = tmp_path / "resumed"
    engines = {"dask": {"engine": dask}, "local": {"workers": 2}}
    with pytest.raises(Interrupt):
        _pnet(corpus, out, chunk_images=2, **engines[first], **{f"on_{phase}": stop})
    if then.endswith("lost"):
        (out / "build-progress.npy").unlink()
    summary = _pnet(corpus, out, **engines[then.split(",")[0]])
    if phase == "plan":
        assert summary["resumed_plan_from_image"] == 6
    else:
        assert summary["resumed_from_sample"] > 0
    assert snapshot(out) == snapshot(tmp_path / "reference")


def test_a_build_killed_on_dask_resumes_byte_identical(corpus: dict, dask: Engine, tmp_path: Path) -> None:
    """SIGKILL of the build process itself (its cluster keeps running) while it lists the shards the workers
    wrote, then a rerun on Dask: the listed shards are kept, the rest rendered again, no stray file stays."""
    args = ["build", "pnet", "--detections", corpus["root"] / "det.parquet", "--landmarks",
            corpus["root"] / "lmk.parquet", "--shard-size", "60KB", "-q"]
    cli(*args, "-o", tmp_path / "reference", "--workers", 1)
    reference = json.loads((tmp_path / "reference" / "index.json").read_text())
    images = reference["summary"]["images"]
    assert len(reference["shards"]) >= 2
    # one write step per planned image (one image per task), then one per shard listed (a shard is one block)
    kill_at = images["detections"] + images["landmarks"] + 2
    out = tmp_path / "killed"
    command = [sys.executable, "-c", "from facedata.cli import main; main()", *map(str, args), "-o", str(out),
               "--engine", "dask", "--scheduler", dask.scheduler, "--images-per-task", "1"]
    build = subprocess.run(command, env={**os.environ, "FACEDATA_KILL_AT_STEP": str(kill_at)}, timeout=300)
    assert build.returncode == -signal.SIGKILL
    assert not (out / "index.json").exists() and _shards_done(out) == 1
    cli(*args, "-o", out, "--engine", "dask", "--scheduler", dask.scheduler)
    assert json.loads((out / "index.json").read_text())["summary"]["resumed_from_sample"] > 0
    assert snapshot(out) == snapshot(tmp_path / "reference")


def test_a_rerun_removes_the_temp_files_of_a_killed_build(corpus: dict, dask: Engine, tmp_path: Path) -> None:
    """A build killed inside atomic_write leaves `.NAME.tmp-PID` behind (its cleanup never ran); the finished
    dataset must not keep it."""
    out = tmp_path / "out"

    def stop(position: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        _pnet(corpus, out, workers=1, on_write=stop)
    stale = [out / ".build-progress.json.tmp-4242", out / ".index.partial.json.tmp-4243"]
    for path in stale:
        path.write_text("{")
    _pnet(corpus, out, engine=dask)
    assert not any(path.exists() for path in stale)
    _pnet(corpus, tmp_path / "reference", workers=1)
    assert snapshot(out) == snapshot(tmp_path / "reference")


def _shards_done(out: Path) -> int:
    try:
        return len(json.loads((out / "index.partial.json").read_text())["shards"])
    except (OSError, ValueError):
        return 0


def test_output_and_image_roots_may_be_local_fsspec_urls(corpus: dict, dask: Engine, tmp_path: Path) -> None:
    from fsspec.implementations.local import LocalFileSystem

    fs = LocalFileSystem()
    images = corpus["corpus"].wider_images
    args = ["build", "pnet", "--detections", corpus["root"] / "det.parquet", "-q"]
    cli(*args, "-o", tmp_path / "plain", "--images", images, "--workers", 1)
    url = fs.unstrip_protocol(str(tmp_path / "url"))
    assert url.startswith("file://")
    cli(*args, "-o", url, "--images", fs.unstrip_protocol(str(images)), "--engine", "dask", "--scheduler",
        dask.scheduler)
    assert snapshot(tmp_path / "url") == snapshot(tmp_path / "plain")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler tcp://127.0.0.1:9: only with --engine dask"),
        (["--engine", "dask"], "--engine dask needs --scheduler ADDRESS"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--workers", 2], "--workers: a running cluster"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", 0.5],
         "--scheduler tcp://127.0.0.1:9: no Dask scheduler answered within 0.5 s"),
        (["--engine", "dask", "--scheduler", "nonsense"], "--scheduler nonsense: not a Dask address"),
        (["-o", "memory://bucket/out"], "--output memory://bucket/out: not a local file system"),
        (["-o", "s3://bucket/out"], "--output s3://bucket/out: not a local file system"),  # not "install s3fs"
        (["--images", "memory://bucket/images"], "--images memory://bucket/images: not a local file system"),
    ],
)
def test_engine_and_storage_errors_are_one_line_naming_the_flag(
    corpus: dict, tmp_path: Path, options: list, message: str
) -> None:
    args = ["build", "pnet", "--detections", corpus["root"] / "det.parquet", "-o", tmp_path / "out", *options]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "index.json").exists()


def test_without_dask_installed_the_error_names_the_extra(
    corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what an environment without the extra finds
    args = ["build", "pnet", "--detections", corpus["root"] / "det.parquet", "-o", tmp_path / "out", "--engine",
            "dask-local"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert "--engine dask-local needs Dask distributed: pip install 'facedata[dask]'" in result.output


def test_dask_local_starts_its_own_cluster_and_prints_the_dashboard(corpus: dict, tmp_path: Path) -> None:
    args = ["build", "pnet", "--detections", corpus["root"] / "det.parquet", "--ratio", "all"]
    cli(*args, "-o", tmp_path / "local", "--workers", 1, "-q")
    result = CliRunner().invoke(main, [str(a) for a in [*args, "-o", tmp_path / "dask", "--engine", "dask-local",
                                                         "--workers", 2]])
    assert result.exit_code == 0, result.output
    assert "dask: 2 workers, 2 threads" in result.output and "dashboard http" in result.output
    assert "with 2 worker(s) on dask-local" in result.output
    assert snapshot(tmp_path / "dask") == snapshot(tmp_path / "local")


def test_the_render_bar_advances_as_pieces_finish_not_per_shard(
    corpus: dict, dask: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """One shard holds the whole set, yet the log shows the render pass at several steps before it ends."""
    from facedata import console

    monkeypatch.setattr(console, "PROGRESS_GAP_SECONDS", 0.0)
    summary = build_dataset(corpus["det"], corpus["lmk"], tmp_path / "out", engine=dask, chunk_images=1)
    assert summary["shards"] == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("render: ")]
    done = [int(line.split()[1].split("/")[0].replace(",", "")) for line in lines]
    assert len(done) >= 4 and done == sorted(done) and lines[-1].split()[2:4] == ["img", "(100%),"], lines
    assert done[-1] == summary["images"]["detections"] + summary["images"]["landmarks"]
