"""MATLAB v5 `.mat` files (WIDER, AFLW2000-3D, 300W-LP), read with scipy.io.loadmat after a structural check.

scipy trusts the byte counts inside a file: a sub-element declaring more bytes than its variable holds makes its
reader run past its buffer (a segmentation fault: tests/test_fuzz_parsers.py found one with two flipped bytes), a
file cut between variables ends the variable list quietly (a truncated file then looks like one with missing
variables), and a compressed variable inflates without bound. So every element is walked first: each declared
size must fit in its parent, array dimensions must fit in the bytes that hold them, compressed data must inflate
completely to at most MAX_INFLATED bytes, and nesting stops at MAX_DEPTH. Only v5 files are read (never v4 or the
v7.3 HDF5 form); loadmat builds numeric and char arrays and cells of them, and runs no code from the file.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import scipy.io

from facedata.errors import InputError

MAT_MAGIC = b"MATLAB 5.0 MAT-file"
MAT_HEADER = 128  # text, subsystem offset, version, endian indicator ("IM" little-endian, "MI" big-endian)
MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 5, 6, 14, 15
# the data types of the v5 format (8, 10 and 11 are reserved): scipy indexes a table with the type, so an unknown one
# reads outside it (the segmentation fault above)
MI_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18})
MX_SPARSE = 5  # a sparse array's dimensions need not fit in its bytes
MAX_INFLATED = 1 << 30  # bytes one compressed variable may inflate to
MAX_DEPTH = 32  # cells in cells
# scipy raises whatever its decoding step meets in a file that passes the walk but is still wrong (ValueError,
# TypeError, UnicodeDecodeError, IndexError...): each is an unreadable file, never a crash
MAT_ERRORS = Exception


class _Damage(Exception):
    """Why the walk refused the file (the InputError reason)."""


def mat_damage(data: bytes) -> tuple[str, str] | None:
    """(what, detail) for a damaged MATLAB v5 file: what is "truncated" (cut short) or "damaged"; None if every
    element fits. `data` starts with MAT_MAGIC."""
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if len(data) < MAT_HEADER or endian is None:
        return "truncated", f"{len(data)} bytes, the 128-byte header is cut" if len(data) < MAT_HEADER else \
            "no endian indicator (IM or MI) at byte 126"
    position = MAT_HEADER
    try:
        while position < len(data):
            kind, count, body, following = _tag(data, endian, position, len(data))
            if following > len(data):
                return "truncated", (f"the variable at byte {position} needs {following - position} bytes, "
                                     f"the file ends at byte {len(data)}")
            if kind not in (MI_MATRIX, MI_COMPRESSED):
                raise _Damage(f"expected an array (type {MI_MATRIX} or {MI_COMPRESSED}), got data type {kind}")
            _element(data, endian, kind, body, body + count, 0)
            position = following
    except _Damage as exc:
        return "damaged", f"variable at byte {position}: {exc}"
    return None


def _tag(buf: bytes, endian: str, position: int, end: int) -> tuple[int, int, int, int]:
    """(type, byte count, where the data starts, where the next element starts, unpadded) of the element at
    `position`; a small element keeps its up to 4 bytes of data in the 8-byte tag."""
    if end - position < 8:
        raise _Damage(f"element tag at byte {position} is cut")
    kind, count = struct.unpack_from(endian + "II", buf, position)
    size, kind = kind >> 16, kind & 0xFFFF
    if kind not in MI_TYPES:
        raise _Damage(f"element at byte {position} has unknown data type {kind}")
    if size:
        if size > 4:
            raise _Damage(f"small element at byte {position} declares {size} bytes (at most 4)")
        return kind, size, position + 4, position + 8
    return kind, count, position + 8, position + 8 + count


def _element(buf: bytes, endian: str, kind: int, start: int, end: int, depth: int) -> None:
    if kind == MI_COMPRESSED:
        inflater = zlib.decompressobj()
        try:
            inflated = inflater.decompress(buf[start:end], MAX_INFLATED + 1)
        except zlib.error as exc:
            raise _Damage(f"corrupt compressed data ({exc})") from None
        if len(inflated) > MAX_INFLATED:
            raise _Damage(f"compressed data inflates beyond {MAX_INFLATED >> 20} MiB")
        if not inflater.eof:
            raise _Damage("compressed data is cut")
        kind, count, body, following = _tag(inflated, endian, 0, len(inflated))
        if following > len(inflated):
            raise _Damage(f"compressed element declares {count} bytes, holds {len(inflated) - body}")
        _element(inflated, endian, kind, body, body + count, depth)
    elif kind == MI_MATRIX:
        _matrix(buf, endian, start, end, depth + 1)


def _matrix(buf: bytes, endian: str, start: int, end: int, depth: int) -> None:
    """An array's sub-elements (flags, dimensions, name, data; cells and fields nest arrays) must fit in it. Inlined
    tag reading: WIDER train holds some 500,000 elements."""
    if depth > MAX_DEPTH:
        raise _Damage(f"arrays nested deeper than {MAX_DEPTH}")
    unpack = _TAGS[endian].unpack_from
    position, index, array_class = start, 0, 0
    while position < end:
        if end - position < 8:
            raise _Damage(f"element tag at byte {position} is cut")
        word, count = unpack(buf, position)
        size, kind = word >> 16, word & 0xFFFF
        if kind not in MI_TYPES:
            raise _Damage(f"element at byte {position} has unknown data type {kind}")
        if size:  # a small element: up to 4 bytes of data in the tag
            if size > 4:
                raise _Damage(f"small element at byte {position} declares {size} bytes (at most 4)")
            body, count, following = position + 4, size, position + 8
        else:
            body = position + 8
            following = body + count + (-(body + count) % 8)  # sub-elements are padded to 8 bytes
            if following > end:
                raise _Damage(f"element at byte {position} declares {count} bytes, its array has {end - body} left")
        if index == 0:
            if kind == MI_UINT32 and count >= 4:
                array_class = struct.unpack_from(endian + "I", buf, body)[0] & 0xFF
        elif index == 1:
            if kind != MI_INT32 or count < 8 or count % 4:
                raise _Damage(f"array dimensions at byte {position} are not 2 or more int32")
            dims = struct.unpack_from(f"{endian}{count // 4}i", buf, body)
            if min(dims) < 0 or (array_class != MX_SPARSE and math.prod(dims) > end - start):
                # every element takes a byte at least (a sparse array's size is its nonzeros)
                raise _Damage(f"array of {'x'.join(map(str, dims))} elements stored in {end - start} bytes")
        elif kind == MI_MATRIX:
            _matrix(buf, endian, body, body + count, depth + 1)
        position, index = following, index + 1


_TAGS = {endian: struct.Struct(endian + "II") for endian in "<>"}


def _read(path: Path) -> bytes:
    """The bytes of a MATLAB v5 file that passes the walk; InputError otherwise."""
    data = path.read_bytes()
    if not data:
        raise InputError(path, None, "file", "empty file; expected a MATLAB v5 .mat file")
    if not data.startswith(MAT_MAGIC):
        what = "a MATLAB v7.3 (HDF5) file; save it with -v7" if data.startswith(b"MATLAB 7.3") else \
            f"not a MATLAB v5 .mat file (no {MAT_MAGIC.decode()!r} header)"
        raise InputError(path, None, "file", what)
    damage = mat_damage(data)
    if damage is not None:
        raise InputError(path, None, "file", f"{damage[0]} MATLAB v5 .mat file: {damage[1]}")
    return data


def mat_variables(path: Path, head: bytes) -> set[str]:
    """Variable names of a MATLAB v5 file (empty set if it is not one, or is damaged)."""
    if not head.startswith(MAT_MAGIC):
        return set()
    stat = path.stat()
    return set(_variables(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _variables(path: str, _mtime_ns: int, _size: int) -> frozenset[str]:
    """Cached by file version: every .mat format's sniff asks (the walk of WIDER train takes 0.2 s)."""
    try:
        return frozenset(name for name, _, _ in scipy.io.whosmat(io.BytesIO(_read(Path(path)))))
    except MAT_ERRORS:  # InputError included
        return frozenset()


def load_mat(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """Load the named variables; an empty, truncated, damaged or unreadable file or a missing key is an InputError."""
    data = _read(path)
    try:
        loaded = scipy.io.loadmat(io.BytesIO(data), variable_names=keys)
    except MAT_ERRORS as exc:
        raise InputError(path, None, "file", f"not a readable MATLAB v5 .mat file ({type(exc).__name__}: {exc})"
                         ) from None
    missing = [k for k in keys if k not in loaded]
    if missing:
        raise InputError(path, None, "file", f"missing variable(s) {missing}; expected {keys}")
    return loaded
