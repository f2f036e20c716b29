"""A full disk (a real tmpfs of a few MB, filled with a ballast file) never leaves a half-written output: a build
stops with one line naming the output and "No space left on device", no file under a shard's name that is not a
finished shard, no temp file, no index.json; once there is space again the same command resumes and ends
byte-identical to a clean build. ingest, filter, fuse and export stop the same way and leave an existing
output as it was. Needs root (mount); skipped without it, except under CI (CI=true), where it fails."""

from __future__ import annotations

import gc
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from build_fixtures import demo_manifests
from build_runs import check_interrupted, cli, output_digest

DISK_BYTES = 4 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs to fill ({mounted.stderr.strip()}): the full-disk tests need root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield disk
    finally:
        gc.collect()  # the in-process CLI runs' objects
        if subprocess.run(["umount", str(disk)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(disk)], check=True)
            pytest.fail(f"{disk}: a file is still open on the full disk (an unclosed handle)")


def fill(disk: Path, leave: int) -> Path:
    """A ballast file leaving about `leave` bytes free on `disk` (0: as full as it gets)."""
    ballast = disk / "ballast"
    stat = os.statvfs(disk)
    size = max(0, stat.f_bavail * stat.f_frsize - leave)
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while size > 0 or not leave:
            size -= os.write(fd, b"\0" * (min(size, 1 << 20) if size > 0 else 4096))
    except OSError:  # full
        pass
    finally:
        os.close(fd)
    return ballast


def one_line_error(text: str, output: Path) -> None:
    assert text.startswith("error: ") and len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
    assert str(output) in text and "No space left on device" in text, text


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if ".tmp" in p.name or p.name.endswith((".work", ".work-lock"))]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    corpus = demo_manifests(tmp_path_factory.mktemp("full"), seed=5, wider_images=24, cuhk_images=40)
    references = {}
    for backend in ("lmdb", "parquet"):
        out = corpus["root"] / f"reference-{backend}"
        cli(*build(corpus, out, backend))
        references[backend] = output_digest(out)
    return {**corpus, "references": references}


def build(corpus: dict, out: Path, backend: str) -> list[object]:
    return ["build", "pnet", *corpus["inputs"], "-o", out, "--format", backend, "--shard-size", "1KB", "--quiet"]


ENGINES = {"local": [], "dask-local": ["--engine", "dask-local", "--workers", "2", "--scheduler-timeout", "60"]}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("free", [200_000, 1_300_000], ids=["while planning", "while writing shards"])
@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_a_build_on_a_full_disk_stops_cleanly_and_resumes_byte_identical(
    corpus: dict, small_disk: Path, backend: str, free: int, engine: str
) -> None:
    """On Dask the workers write the shards: their ENOSPC reaches the build process, which says it in one line."""
    out = small_disk / "pnet"
    ballast = fill(small_disk, free)
    one_line_error(cli(*build(corpus, out, backend), *ENGINES[engine], code=2), out)
    shards = check_interrupted(out)
    assert temp_files(small_disk) == []
    assert "holds an interrupted build" in cli("verify", out, code=1)  # not a dataset: no index.json
    ballast.unlink()
    text = cli(*build(corpus, out, backend)[:-1])
    assert ("resumed after" in text) == bool(shards), text
    assert output_digest(out) == corpus["references"][backend]


OUTPUT_COMMANDS = {
    "ingest": lambda c, out: ["ingest", c["corpus"].cuhk_annotations, "--images", c["corpus"].cuhk_images, "-o", out,
                              "-q"],
    "filter": lambda c, out: ["filter", c["root"] / "det.parquet", "--min-size", "10", "-o", out, "-q"],
    "fuse": lambda c, out: ["fuse", c["root"] / "lmk.parquet", "--to", "mtcnn5", "-o", out, "-q"],
    "export coco": lambda c, out: ["export", "coco", c["root"] / "det.parquet", "-o", out, "-q"],
    "export voc": lambda c, out: ["export", "voc", c["root"] / "det.parquet", "-o", out, "-q"],
    "report": lambda c, out: ["report", c["root"] / "det.parquet", "-o", out, "--grid", "2"],  # the CLI's catch-all
}


def tree(path: Path) -> dict[str, bytes]:
    """Every file at or under `path` with its bytes (none if it does not exist)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): p.read_bytes() for p in files}


@pytest.mark.parametrize("name", list(OUTPUT_COMMANDS))
def test_a_full_disk_leaves_the_old_output_as_it_was(corpus: dict, small_disk: Path, name: str) -> None:
    suffix = {"export voc": "", "report": "", "export coco": ".json"}.get(name, ".parquet")
    out = small_disk / f"out{suffix}"
    command = OUTPUT_COMMANDS[name](corpus, out)
    cli(*command)
    before = tree(out)
    fill(small_disk, 0)
    one_line_error(cli(*command, "--overwrite", code=2), out)
    assert tree(out) == before and temp_files(small_disk) == []
    fresh = small_disk / f"new{suffix}"
    one_line_error(cli(*OUTPUT_COMMANDS[name](corpus, fresh), code=2), fresh)
    assert not tree(fresh) and temp_files(small_disk) == []
