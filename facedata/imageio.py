"""Decoding source photos: one function, so that build, detect and every other reader see the same pixels.

Orientation convention: annotations index the *stored* pixel array, as the WIDER Face and COCO tools
read them (and as `facedata.imageprobe` probes the size at ingest). EXIF orientation is therefore
ignored everywhere (`cv2.IMREAD_IGNORE_ORIENTATION`): a JPEG tagged "rotate 90" is decoded as stored,
so a box still covers the pixels it was drawn on.

Truncated files: libjpeg decodes a cut-off JPEG by filling the rest with grey and only prints
"Premature end of JPEG file" to stderr; a cut-off PNG may also decode partly. Before decoding, the
file's own structure is checked, cheaply, on the bytes already read: a JPEG must have an end-of-image
marker (FF D9) after the start of its image data (trailing bytes after it are allowed), a PNG must have
every chunk whole up to IEND. Other formats are left to the decoder.

Pixel formats: every image becomes 3-channel 8-bit BGR, what the samplers expect. Grey images are
repeated into the three channels, palette PNGs are expanded to their colours, an alpha channel is dropped
(the colour channels as stored, not composited), and 16-bit samples v are scaled to round(v * 255 / 65535)
(OpenCV's own 8-bit decode would drop the low byte: up to one level darker). Other sample types (float
TIFF/EXR) are refused as unreadable.

Size limit: the frame size declared in a JPEG, PNG or BMP header is checked against
`facedata.imageprobe.max_image_pixels()` before decoding (a decompression bomb is refused as TOO_LARGE,
without allocating anything); other formats are checked once decoded.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from facedata.errors import FacedataError
from facedata.imageprobe import header_size, too_large
from facedata.paths import atomic_write

# ANYDEPTH keeps 16-bit samples 16-bit, so that `_to_8bit` scales them with rounding.
DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION

MISSING, UNREADABLE, TRUNCATED, TOO_LARGE = "missing", "unreadable", "truncated", "too large"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # markers without a length field


class ImageError(FacedataError):
    """A source image that cannot be used: `kind` is MISSING, UNREADABLE, TRUNCATED or TOO_LARGE."""

    def __init__(self, path: str | os.PathLike[str], kind: str, detail: str) -> None:
        self.path, self.kind, self.detail = str(path), kind, detail
        super().__init__(f"{path}: {kind}: {detail}")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The stored pixel array of an image file as BGR uint8 (H, W, 3), EXIF orientation ignored.

    Raises ImageError for a missing, empty, truncated, too large or undecodable file.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ImageError(path, MISSING, "file not found") from None
    except OSError as exc:
        raise ImageError(path, UNREADABLE, f"cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(path, UNREADABLE, "empty file (0 bytes)")
    size = header_size(data)
    problem = None if size is None else too_large(size)
    if problem is not None:
        raise ImageError(path, TOO_LARGE, problem)
    problem = truncation(data)
    if problem is not None:
        raise ImageError(path, TRUNCATED, problem)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), DECODE_FLAGS)
    except cv2.error as exc:  # OpenCV raises for some inputs (e.g. above its own CV_IO_MAX_IMAGE_PIXELS)
        raise ImageError(path, UNREADABLE, f"OpenCV cannot decode it ({exc.err or exc})") from None
    if image is None:
        raise ImageError(path, UNREADABLE, "OpenCV cannot decode it (not an image, or corrupt)")
    problem = too_large((image.shape[1], image.shape[0])) if size is None else None
    if problem is not None:
        raise ImageError(path, TOO_LARGE, problem)
    return _to_8bit(path, image)


def _to_8bit(path: str | os.PathLike[str], image: np.ndarray) -> np.ndarray:
    """8-bit BGR from what IMREAD_COLOR | IMREAD_ANYDEPTH returns (3 channels, 8 or 16 bits, rarely float)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    raise ImageError(path, UNREADABLE, f"unsupported sample type {image.dtype} (8- or 16-bit images only)")


def truncation(data: bytes) -> str | None:
    """Why `data` (a whole image file) is cut off, or None if it looks complete or is not JPEG/PNG."""
    if data.startswith(b"\xff\xd8"):
        return _jpeg_truncation(data)
    if data.startswith(_PNG_SIGNATURE):
        return _png_truncation(data)
    return None


def _jpeg_truncation(data: bytes) -> str | None:
    """Walk the marker segments to the first start-of-scan (APPn payloads such as an EXIF thumbnail,
    which holds its own FF D9, are skipped by length), then look for the end-of-image marker."""
    pos = 2
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return "file ends before the image data (no start-of-scan marker)"
        code = data[pos + 1]
        if code == 0xFF:  # fill byte
            pos += 1
            continue
        if code in _JPEG_STANDALONE:
            pos += 2
            continue
        if code == 0xD9:
            return "end-of-image marker before any image data"
        if pos + 4 > len(data):
            return "file ends inside a marker segment"
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if code == 0xDA:
            break
        pos += 2 + length
    if data.rfind(b"\xff\xd9", pos + 2 + length) < 0:  # from the end: usually found at once
        return f"file ends inside the image data after {len(data):,} bytes (no end-of-image marker FF D9)"
    return None


def _png_truncation(data: bytes) -> str | None:
    """Every chunk (length, type, data, CRC) must be whole, up to IEND."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            name = kind.decode("latin-1")
            return f"file ends inside the {name} chunk after {len(data):,} bytes (needs {end:,})"
        if kind == b"IEND":
            return None
        pos = end
    return f"file ends after {len(data):,} bytes without an IEND chunk"


WRITE_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_image_suffix(path: str | os.PathLike[str]) -> Path:
    """`path` if write_image can write it (checked before any work is done), else one clear error."""
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise FacedataError(f"{path}: cannot write {path.suffix or 'files without a suffix'!r} images; "
                            f"use one of {', '.join(WRITE_SUFFIXES)}")
    return path


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Encode a BGR image by the file's suffix (.png, .jpg, .jpeg) and write it atomically, creating missing
    folders; an unknown suffix or a failed write (e.g. a full disk) is one clear error naming the file."""
    path = check_image_suffix(path)
    ok, data = cv2.imencode(path.suffix.lower(), image)
    if not ok:
        raise FacedataError(f"{path}: image encoding failed")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            fh.write(data.tobytes())
    except OSError as exc:
        raise FacedataError(f"{path}: cannot write it ({exc.strerror or exc})") from None
