"""Safe path handling: annotation paths never escape their dataset root; writes are temp + rename."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from facedata.errors import FacedataError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def normalise_rel_path(raw: str) -> str | None:
    """Annotation path -> POSIX relative path, or None if it is absolute or climbs out with `..`.

    Backslashes (CUHK lists, AITTSMD files) are treated as separators.
    """
    text = raw.strip().replace("\\", "/")
    if not text or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def resolve_under(root: str | os.PathLike[str], rel_path: str) -> Path | None:
    """Join root and a normalised relative path; None if the result (after symlinks) leaves root."""
    root_path = Path(root).resolve()
    candidate = (root_path / rel_path).resolve()
    if candidate != root_path and root_path not in candidate.parents:
        return None
    return candidate


LOCAL_PROTOCOLS = ("file", "local")  # fsspec's names of the local file system


def local_path(value: str | os.PathLike[str], option: str) -> Path:
    """A path, or the URL of a local fsspec file system (file://...), as a local path.

    Other file systems are refused: LMDB shards need a POSIX file system, and workers decode images by
    path. Shared storage is a mount every machine sees at one path (NFS; an object store mounted with
    s3fs/gcsfuse for the images).
    """
    text = os.fspath(value)
    if "://" not in text:
        return Path(text)
    if text.partition("://")[0].lower() not in LOCAL_PROTOCOLS:  # before fsspec: it would ask for s3fs etc.
        raise FacedataError(f"{option} {text}: not a local file system; shards (LMDB) and images need a POSIX "
                            "path every worker sees (NFS, or a bucket mounted with s3fs/gcsfuse)")
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise FacedataError(f"{option} {text}: URLs need fsspec (pip install 'facedata[dask]')") from None
    try:
        _, path = url_to_fs(text)
    except ValueError as exc:
        raise FacedataError(f"{option} {text}: {exc}") from None
    return Path(path)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True if two paths name one file (after links, or as hard links): writing one would overwrite the other."""
    a, b = Path(a), Path(b)
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in DISK_FULL:  # named by the output, not by the temp file or nothing
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def full_disk_error(output: str | os.PathLike[str], outcome: str) -> Iterator[None]:
    """A full disk or quota (ENOSPC, EDQUOT) met in the block becomes one clear line naming `output` and saying
    what is left (`outcome`), instead of a traceback; writes are atomic, so nothing half-written is visible."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise FacedataError(f"{output}: {os.strerror(exc.errno)} while writing it; {outcome}") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# the common form of a normalised relative path (no leading separator, drive, backslash, empty part or trailing space)
PLAIN_REL_PATH = re.compile(r"[^/\\:\s.][^/\\:]*(?:/[^/\\:]+)*(?<=[^\s/])")


def is_normal_rel_path(text: str) -> bool:
    """Whether `text` is already what `normalise_rel_path` makes of it (relative, `/`-separated, no `.` or `..`)."""
    if PLAIN_REL_PATH.fullmatch(text):
        return not {".", ".."} & set(text.split("/"))
    return normalise_rel_path(text) == text


def first_outside(root: str, rel_paths: Iterable[str]) -> str | None:
    """The first path that resolves (after symlinks) outside `root`, or None. Run where images are read (build,
    verify, report), not only at ingest: a link may be planted under the root later."""
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    for rel in rel_paths:
        if not os.path.realpath(os.path.join(real_root, rel)).startswith(prefix):
            return rel
    return None
