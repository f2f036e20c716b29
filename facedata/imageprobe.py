"""Image width/height from the file header, without decoding pixels (ingest probes every image).

JPEG (SOFn marker), PNG (IHDR) and BMP (BITMAPINFOHEADER) are read directly; any other format
falls back to a full OpenCV decode. Sizes are the stored pixel grid, i.e. before any EXIF
orientation is applied (what `cv2.imread(..., cv2.IMREAD_IGNORE_ORIENTATION | ...)` returns), which
is the frame annotation files are written in.

Decompression bombs: a small file can declare a huge frame (a 1 KB PNG saying 100000x100000 would make
a decoder allocate 30 GB). `too_large` compares the declared size with MAX_IMAGE_PIXELS before anything
is decoded: ingest rejects such an image, and `facedata.imageio.read_image` refuses it.
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

from facedata.errors import FacedataError

# Largest image (width x height) facedata decodes: 2^28 = 268 megapixels (a 16384 x 16384 photo; 805 MB as
# BGR), as OpenCV's CV_IO_MAX_IMAGE_PIXELS and Pillow's MAX_IMAGE_PIXELS guard against the same thing.
# The environment variable MAX_PIXELS_VARIABLE overrides it (read at each check, so worker processes see it).
MAX_IMAGE_PIXELS = 2**28
MAX_PIXELS_VARIABLE = "FACEDATA_MAX_IMAGE_PIXELS"

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


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by the header of a JPEG, PNG or BMP held in memory, else None."""
    return _from_header(io.BytesIO(data), data[:32])


def max_image_pixels() -> int:
    """The pixel limit in force: MAX_IMAGE_PIXELS, or the FACEDATA_MAX_IMAGE_PIXELS environment variable."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None or not text.strip():
        return MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise FacedataError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a whole number of pixels >= 1")
    return value


def too_large(size: tuple[int, int]) -> str | None:
    """Why an image of `size` = (width, height) is refused before decoding, or None if it is within the limit."""
    width, height = size
    limit = max_image_pixels()
    if width * height <= limit:
        return None
    return (f"declared size {width:,}x{height:,} = {width * height:,} pixels exceeds the limit of {limit:,} "
            f"({MAX_PIXELS_VARIABLE} raises it)")


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

    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:  # e.g. above OpenCV's own pixel limit (CV_IO_MAX_IMAGE_PIXELS)
        return None
    if image is None:
        return None
    return int(image.shape[1]), int(image.shape[0])
