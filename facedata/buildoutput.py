"""A build's output directory: a complete dataset is never modified by a rerun, and replaced only with
`overwrite`, by a complete new one, through a staging directory swapped in at the end.

What a build whose (layout, provenance) fingerprint is F does with DIR:
- DIR holds a complete dataset (index.json) of F: nothing; "already complete" after a quick check
  (every listed shard present with its recorded size; `verify` re-hashes every shard instead).
- DIR holds a complete dataset of other inputs or options (or a damaged one): an error naming what
  differs, unless `overwrite`; then the new dataset is built in STAGING = `DIR/../.DIR.staging` (same
  filesystem; an interrupted staging build of F resumes there) and swapped in once complete.
- DIR holds an interrupted build (index.partial.json): of F it resumes; of other options the writer
  refuses it (naming the differences), unless `overwrite`, which discards it (no dataset to protect).
- otherwise the build writes into DIR.

The swap, after STAGING's index.json is written (atomically, last):
1. exchange DIR and STAGING in one atomic `renameat2(RENAME_EXCHANGE)` (Linux); where it is not
   available: rename DIR to TRASH = `DIR/../.DIR.old`, then STAGING to DIR;
2. rename STAGING (now the old dataset) to TRASH, then delete TRASH.
A SIGKILL at any instant leaves DIR holding the old or the new complete dataset, or (only in the
fallback, between its two renames) no DIR and the complete new dataset in STAGING. Every build first
recovers: DIR missing and STAGING complete -> STAGING becomes DIR; then TRASH is deleted. A leftover
STAGING (killed after the exchange: it holds the old dataset) is deleted by the next build that finds DIR
complete with its options, replaced by an `overwrite` build of other options, or swapped back in by an
`overwrite` build of its own options.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedata.errors import FacedataError
from facedata.storage.index import INDEX_NAME, PARTIAL_INDEX_NAME, differences, fingerprint, load_index, read_json

# What a build writes in its directory: shards, their temps, the partial index, plan/progress files, reports.
BUILD_FILE = re.compile(
    r"^(shard-\d{5,}\.[a-z0-9]+|index\.partial\.json|build-[\w.-]+|[\w-]+-report\.csv|\..+\.tmp-\d+)$"
)
# What only a running build needs: a complete dataset keeps index.json, its shards and its reports.
RUN_FILE = re.compile(r"^(index\.partial\.json|build-[\w.-]+|\..+\.tmp-\d+)$")


TEMP_FILE = re.compile(r"^\..+\.tmp-\d+$")  # facedata.paths.atomic_write's temps


def staging_dir(target: Path) -> Path:
    return target.with_name(f".{target.name}.staging")


def trash_dir(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


@dataclass
class Output:
    """Where a build writes (`directory`: DIR or its staging directory) and what it found there."""

    target: Path
    directory: Path
    existing: dict[str, Any] | None = None  # index of the complete dataset of these options at DIR
    fresh: bool = True  # `directory` held no earlier build of these options: its debris may go

    def commit(self) -> None:
        """Swap a complete staged dataset in at DIR (nothing to do when the build wrote into DIR)."""
        if self.directory != self.target:
            swap_in(self.target, self.directory)

    def discard(self) -> None:
        """After a failed fresh build: remove what it wrote, so that a corrected retry starts clean."""
        if not self.fresh or not self.directory.is_dir():
            return
        _remove_build_files(self.directory)
        if not any(self.directory.iterdir()):
            self.directory.rmdir()


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


@contextmanager
def output_lock(out_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on DIR for a build: a second build of the same DIR (another process, or the
    same one) stops at once with a clear error instead of interleaving its writes, swaps and deletions with
    the first. An flock on `.DIR.lock` beside DIR: the kernel releases it when the holder exits, even on
    SIGKILL, so a killed build never leaves a stale lock. The holder removes the file when it is done; a
    lock taken on a file that was removed meanwhile is dropped and taken again on the new file."""
    target = Path(out_dir).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(target)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FacedataError(
                f"{target}: another build is writing this directory (pid {holder}, lock {path}); wait for it "
                "to finish, or stop it and run again (an interrupted build resumes)"
            ) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the previous holder removed that file after we opened it
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding the lock
        os.close(fd)


def prepare_output(
    out_dir: str | os.PathLike[str], layout: dict, provenance: dict, *, overwrite: bool, verify: bool
) -> Output:
    """Decide where a build of (layout, provenance) writes; see the module docstring. A symlinked DIR is
    followed: its staging directory sits beside the real one (same filesystem) and the link stays."""
    target = Path(out_dir).resolve()
    recover(target)
    wanted = fingerprint(layout, provenance)
    if not (target / INDEX_NAME).is_file():
        if overwrite and _partial_fingerprint(target) not in (None, wanted):
            _remove_build_files(target)
        _remove_temps(target)
        return Output(target, target, fresh=_partial_fingerprint(target) is None)
    index = load_index(target)
    if index.get("fingerprint") == wanted:
        problems = damage(target, index, verify)
        if not problems:
            _remove_tree(staging_dir(target), trash_dir(target))  # stale: e.g. the old dataset after an exchange
            _remove_run_files(target)
            return Output(target, target, existing=index, fresh=False)
        if not overwrite:
            raise FacedataError(f"{target}: the complete dataset of these options is damaged ({problems[0]}); "
                                "rebuild it with --overwrite")
    elif not overwrite:
        changes = "; ".join(differences(index, layout, provenance)) or "fingerprint"
        raise FacedataError(
            f"{target} holds a complete dataset built with other inputs or options ({changes}); it is left as "
            "it is: use a new output directory, or --overwrite to replace it once the new one is complete"
        )
    staging = staging_dir(target)
    if (staging / INDEX_NAME).is_file():
        staged = load_index(staging)
        if staged.get("fingerprint") == wanted and not damage(staging, staged, verify):
            swap_in(target, staging)  # built by an earlier run that stopped before its swap
            return Output(target, target, existing=staged, fresh=False)
        _remove_tree(staging, trash_dir(target))
    elif _partial_fingerprint(staging) not in (None, wanted):
        _remove_tree(staging, trash_dir(target))
    _remove_temps(staging)
    return Output(target, staging, fresh=_partial_fingerprint(staging) is None)


def damage(directory: Path, index: dict, verify: bool) -> list[str]:
    """Problems of a complete dataset: missing shards or sizes that differ from the index; `verify`
    re-hashes and re-counts every shard."""
    if verify:
        from facedata.storage import verify_dataset

        return [str(finding) for finding in verify_dataset(directory)]
    problems = []
    for entry in index["shards"]:
        path = directory / entry["file"]
        size = path.stat().st_size if path.is_file() else None
        if size != entry.get("bytes"):
            found = "missing" if size is None else f"{size:,} bytes"
            problems.append(f"{entry['file']}: {found}, index.json says {entry.get('bytes'):,}")
    return problems


def recover(target: Path) -> None:
    """Finish or clean up after a swap that was killed (see the module docstring)."""
    staging, trash = staging_dir(target), trash_dir(target)
    if not target.exists() and (staging / INDEX_NAME).is_file() and not damage(staging, load_index(staging), False):
        _remove_run_files(staging)
        os.rename(staging, target)
        _sync_dir(target.parent)
    if trash.exists():
        shutil.rmtree(trash)


def swap_in(target: Path, staging: Path) -> None:
    """Put the complete dataset in `staging` at `target`; the old one is deleted once it is replaced."""
    trash = trash_dir(target)
    _remove_run_files(staging)
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        _sync_dir(target.parent)
        os.rename(staging, trash)
    else:
        os.rename(target, trash)
        os.rename(staging, target)
    _sync_dir(target.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_tree(path: Path, trash: Path) -> None:
    """Delete a directory beside DIR: renamed to TRASH first, so a kill mid-way leaves only TRASH."""
    if path.exists():
        os.rename(path, trash)
        shutil.rmtree(trash)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if function(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _sync_dir(path: Path) -> None:
    """Make renames in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _partial_fingerprint(directory: Path) -> str | None:
    """Fingerprint of an interrupted build in `directory`, or None if there is none."""
    path = directory / PARTIAL_INDEX_NAME
    return str(read_json(path).get("fingerprint")) if path.is_file() else None


def _remove_files(directory: Path, pattern: re.Pattern[str]) -> None:
    """Delete the files of `directory` whose name matches `pattern` (callers hold the output lock)."""
    if directory.is_dir():
        for path in directory.iterdir():
            if pattern.match(path.name) and path.is_file():
                path.unlink()


def _remove_temps(directory: Path) -> None:
    """Temp files of a build killed mid-write (atomic_write's cleanup never ran): under the output lock no
    other build writes here, so every one is stale, and would stay in the finished dataset."""
    _remove_files(directory, TEMP_FILE)


def _remove_run_files(directory: Path) -> None:
    """Plan, progress and temp files beside a complete index.json: a build killed after writing index.json
    and before removing them left them (verify would report them as unexpected files)."""
    _remove_files(directory, RUN_FILE)


def _remove_build_files(directory: Path) -> None:
    _remove_files(directory, BUILD_FILE)
