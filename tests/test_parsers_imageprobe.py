"""The header probe gives the same width/height as decoding with OpenCV, without decoding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facedata.imageprobe import probe_size


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
@pytest.mark.parametrize("shape", [(37, 53, 3), (200, 17, 3), (64, 64)])
def test_probe_matches_opencv_on_written_images(tmp_path: Path, ext: str, shape: tuple[int, ...]) -> None:
    path = tmp_path / f"img{ext}"
    pixels = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert probe_size(path) == (decoded.shape[1], decoded.shape[0]) == (shape[1], shape[0])


def test_probe_skips_exif_and_progressive_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "p.jpg"
    pixels = np.zeros((123, 321, 3), np.uint8)
    assert cv2.imwrite(str(path), pixels, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    data = path.read_bytes()
    app1 = b"\xff\xe1" + (2 + 5000).to_bytes(2, "big") + b"Exif\x00" + b"\x00" * 4995  # large APP1 segment
    (tmp_path / "exif.jpg").write_bytes(data[:2] + app1 + data[2:])
    assert probe_size(path) == (321, 123)
    assert probe_size(tmp_path / "exif.jpg") == (321, 123)


def test_probe_real_images(realdata: Path) -> None:
    files = sorted((realdata / "lfw_net_7876/net_7876").glob("*.jpg"))[:10]
    files += sorted((realdata / "wflw/WFLW_images").rglob("*.jpg"))
    files += sorted((realdata / "300w/mmpose").glob("*.png"))
    assert len(files) >= 12
    for path in files:
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        assert probe_size(path) == (decoded.shape[1], decoded.shape[0]), path


def test_probe_unreadable(tmp_path: Path) -> None:
    garbage = tmp_path / "x.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0\x00")  # truncated JPEG header, and OpenCV cannot decode it either
    assert probe_size(garbage) is None
    text = tmp_path / "y.png"
    text.write_text("not an image")
    assert probe_size(text) is None
    assert probe_size(tmp_path / "missing.jpg") is None
