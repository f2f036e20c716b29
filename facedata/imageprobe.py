"""Image width/height from the file header, without decoding pixels (ingest probes every image).

JPEG (SOFn marker), PNG (IHDR) and BMP (BITMAPINFOHEADER) are read directly; any other format
falls back to a full OpenCV decode. Sizes are the stored pixel grid, i.e. before any EXIF
orientation is applied (what `cv2.imread(..., cv2.IMREAD_IGNORE_ORIENTATION | ...)` returns), which
is the frame annotation files are written in.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG extension) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def probe_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) of an image file, or None if it cannot be read as an image."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            size = _from_header(fh, head)
    except OSError:
        return None
    if size is not None:
        return size
    return _probe_cv2(path)


def _from_header(fh: BinaryIO, head: bytes) -> tuple[int, int] | None:
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(fh)
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return (width, height) if width > 0 and height > 0 else None
    if head.startswith(b"BM") and len(head) >= 26:
        header_size = struct.unpack("<I", head[14:18])[0]
        if header_size >= 40:  # BITMAPINFOHEADER or later: signed 32-bit sizes, negative height = top-down
            width, height = struct.unpack("<ii", head[18:26])
            return (abs(width), abs(height)) if width and height else None
        if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
            width, height = struct.unpack("<HH", head[18:22])
            return (width, height) if width and height else None
    return None


def _jpeg_size(fh: BinaryIO) -> tuple[int, int] | None:
    """Walk the marker segments (skipping APPn/EXIF payloads by their length) up to the first SOFn."""
    fh.seek(2)
    while True:
        byte = fh.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue  # tolerate garbage between segments, as decoders do
        marker = fh.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fh.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        if code == 0xD9 or code == 0xDA:  # end of image / start of scan before any frame header
            return None
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            return None
        length = struct.unpack(">H", length_bytes)[0]
        if length < 2:
            return None
        if code in _JPEG_SOF:
            frame = fh.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return (width, height) if width > 0 and height > 0 else None
        fh.seek(length - 2, os.SEEK_CUR)


def _probe_cv2(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Unknown header: let OpenCV decode it (slow, but only for formats the probe does not know)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        return None
    return int(image.shape[1]), int(image.shape[0])
