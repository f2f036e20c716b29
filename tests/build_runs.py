"""Running CLI builds for the safety and crash tests: in-process, or as a real subprocess that a test kills
(SIGKILL, no cleanup), and comparing what they leave in their output directory."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from facedata.cli import main
from facedata.storage.index import INDEX_NAME, PARTIAL_INDEX_NAME, SHARD_NAME, load_index, read_json

REPO = Path(__file__).resolve().parents[1]
# index.json fields that differ between an uninterrupted build and a resumed one (or one of another DIR)
VOLATILE = {"provenance": ("command_line",), "summary": ("seconds", "resumed_from_sample", "resumed_from_image",
                                                         "resumed_plan_from_image")}


def cli(*args: object, code: int = 0) -> str:
    """Run `facedata ARGS` in this process; its output (stdout and stderr), after checking the exit code."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def start_cli(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`facedata ARGS` in a subprocess of its own session (its workers too: `stop` ends them all)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    code = "from facedata.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def stop(proc: subprocess.Popen) -> int:
    """Wait for the build; then SIGKILL what is left of its session (workers of a killed parent). Its exit code."""
    code = proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return code


def kill_when(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> bool:
    """SIGKILL the build as soon as `condition` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            os.kill(proc.pid, signal.SIGKILL)
            stop(proc)
            return True
        time.sleep(0.002)
    stop(proc)
    return False


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file of a dataset directory: (mtime_ns, sha256) — any modification shows."""
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(directory.iterdir())}


def same_files(a: dict, b: dict) -> bool:
    return {k: v[1] for k, v in a.items() if k.startswith("shard-")} == {
        k: v[1] for k, v in b.items() if k.startswith("shard-")}


def contents(directory: Path) -> dict[str, str]:
    """The dataset's shard hashes as index.json lists them."""
    return {entry["file"]: entry["sha256"] for entry in load_index(directory)["shards"]}


def output_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file in a build's output directory; index.json without the fields that only say how
    and where the build ran (VOLATILE): equal digests are byte-identical outputs."""
    digest = {}
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        if path.name == INDEX_NAME:
            index = json.loads(data)
            for section, keys in VOLATILE.items():
                for key in keys:
                    index[section].pop(key, None)
            data = json.dumps(index, sort_keys=True).encode()
        digest[path.name] = hashlib.sha256(data).hexdigest()
    return digest


def check_interrupted(directory: Path) -> list[str]:
    """What a killed build left is not a dataset, and every visible shard is a finished one: no index.json, and
    each shard-* file is listed in index.partial.json with its size and sha256. Returns the shard names."""
    assert not (directory / INDEX_NAME).exists(), "a killed build left a complete index"
    shards = sorted(p.name for p in directory.iterdir() if SHARD_NAME.match(p.name))
    partial = directory / PARTIAL_INDEX_NAME
    listed = {e["file"]: e for e in read_json(partial)["shards"]} if partial.exists() else {}
    for name in shards:
        assert name in listed, f"{name} is visible but not listed as finished"
        data = (directory / name).read_bytes()
        assert len(data) == listed[name]["bytes"] and hashlib.sha256(data).hexdigest() == listed[name]["sha256"]
    return shards
