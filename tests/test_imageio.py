"""Source-image decoding (facedata.imageio) on real photos: EXIF orientation ignored, truncation detected.

No photo in realdata carries an EXIF orientation tag (scanned: none has an Exif APP1 segment), so the
tests insert a genuine one, written here byte by byte per EXIF 2.32 / TIFF 6.0 (APP1 "Exif\\0\\0", a
big-endian TIFF header, IFD0 with Orientation 0x0112 SHORT, IFD1 with an embedded JPEG thumbnail), into
real JPEGs, and read it back with a small independent parser (and PIL when installed). The entropy-coded
data is untouched, so the stored pixel array is exactly the original file's.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_samplers import WIDER_IMAGES, wider_manifest

from facedata.build import build_dataset
from facedata.errors import FacedataError
from facedata.imageio import TRUNCATED, ImageError, read_image
from facedata.imageprobe import probe_size
from facedata.manifest import Manifest
from facedata.samples import ORIGIN_DETECTIONS
from facedata.storage import ShardedDataset

ORIENTATION_TAG = 0x0112
# Orientation 3 = rotated 180°, 6 = rotate 90° clockwise to display (the camera was held upright).
ORIENTATIONS = {WIDER_IMAGES[0]: 3, WIDER_IMAGES[1]: 6}


def exif_segment(orientation: int, thumbnail: bytes | None = None) -> bytes:
    """An APP1 Exif segment: TIFF header (MM), IFD0 {Orientation}, and IFD1 {JPEG thumbnail} if given."""
    tiff = bytearray(b"MM\x00\x2a" + struct.pack(">I", 8))
    ifd0_next = 8 + 2 + 12 + 4
    tiff += struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", ORIENTATION_TAG, 3, 1, orientation, 0)  # SHORT value, left-justified
    tiff += struct.pack(">I", ifd0_next if thumbnail else 0)
    if thumbnail:
        data_at = ifd0_next + 2 + 2 * 12 + 4
        tiff += struct.pack(">H", 2)
        tiff += struct.pack(">HHII", 0x0201, 4, 1, data_at)  # JPEGInterchangeFormat (LONG offset)
        tiff += struct.pack(">HHII", 0x0202, 4, 1, len(thumbnail))  # JPEGInterchangeFormatLength
        tiff += struct.pack(">I", 0)
        tiff += thumbnail
    payload = b"Exif\x00\x00" + bytes(tiff)
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_exif(jpeg: bytes, orientation: int, thumbnail: bytes | None = None) -> bytes:
    """The JPEG with an Exif APP1 segment inserted right after SOI (where EXIF puts it)."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + exif_segment(orientation, thumbnail) + jpeg[2:]


def read_orientation(jpeg: bytes) -> int | None:
    """Independent reader: walk the segments to APP1 Exif, then IFD0's Orientation entry."""
    pos = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF and jpeg[pos + 1] != 0xDA:
        length = struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
        body = jpeg[pos + 4 : pos + 2 + length]
        if jpeg[pos + 1] == 0xE1 and body[:6] == b"Exif\x00\x00":
            tiff = body[6:]
            end = "<" if tiff[:2] == b"II" else ">"
            ifd = struct.unpack(end + "I", tiff[4:8])[0]
            for k in range(struct.unpack(end + "H", tiff[ifd : ifd + 2])[0]):
                tag, _, _, value = struct.unpack(end + "HHIH", tiff[ifd + 2 + 12 * k : ifd + 12 + 12 * k])
                if tag == ORIENTATION_TAG:
                    return value
        pos += 2 + length
    return None


def thumbnail_of(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA))
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def tagged(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two real WIDER train photos with an orientation tag (3 and 6) and a thumbnail, same rel paths."""
    root = tmp_path_factory.mktemp("exif")
    for image_id, orientation in ORIENTATIONS.items():
        original = (realdata / "wflw" / "WFLW_images" / f"{image_id}.jpg").read_bytes()
        thumb = thumbnail_of(cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR))
        target = root / f"{image_id}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(with_exif(original, orientation, thumb))
    return {"root": root, "originals": realdata / "wflw" / "WFLW_images"}


def test_the_inserted_tags_are_genuine(tagged: dict[str, Path]) -> None:
    """Our parser, PIL, and OpenCV's own default decode (which applies orientation) all see the tag."""
    for image_id, orientation in ORIENTATIONS.items():
        data = (tagged["root"] / f"{image_id}.jpg").read_bytes()
        assert read_orientation(data) == orientation
        stored = cv2.imread(str(tagged["originals"] / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        applied = cv2.imread(str(tagged["root"] / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        turned = cv2.rotate(stored, cv2.ROTATE_180 if orientation == 3 else cv2.ROTATE_90_CLOCKWISE)
        np.testing.assert_array_equal(applied, turned)
    pil = pytest.importorskip("PIL.Image")
    for image_id, orientation in ORIENTATIONS.items():
        with pil.open(tagged["root"] / f"{image_id}.jpg") as im:
            assert im.getexif().get(ORIENTATION_TAG) == orientation


def test_read_image_ignores_orientation_and_agrees_with_the_probe(tagged: dict[str, Path]) -> None:
    for image_id in ORIENTATIONS:
        image = read_image(tagged["root"] / f"{image_id}.jpg")
        stored = cv2.imread(str(tagged["originals"] / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        assert image.dtype == np.uint8 and image.shape == stored.shape
        np.testing.assert_array_equal(image, stored)
        assert probe_size(tagged["root"] / f"{image_id}.jpg") == (image.shape[1], image.shape[0])


def test_build_crops_are_the_stored_pixels(realdata: Path, tagged: dict[str, Path], tmp_path: Path) -> None:
    """A pnet build from tagged photos: every plain crop equals the crop of the stored array (no rotation)."""
    base = wider_manifest(realdata)
    manifest = Manifest(base.images, base.faces, {**base.provenance, "roots": {"wider": str(tagged["root"])}})
    summary = build_dataset(manifest, None, tmp_path / "out", mix=False, workers=1, progress=False, seed=2)
    assert summary["skipped"] == []
    pixels, records = ShardedDataset(tmp_path / "out").read(np.arange(summary["samples"]))
    checked = 0
    for image_index, image_id in enumerate(manifest.images["image_id"]):
        stored = cv2.imread(str(tagged["originals"] / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
        rows = np.flatnonzero((records["image_index"] == image_index) & (records["origin"] == ORIGIN_DETECTIONS)
                              & (records["angle"] == 0) & ~records["mirror"].astype(bool))
        for row in rows:
            x1, y1, x2, y2 = (int(v) for v in records["crop"][row])
            if x1 < 0 or y1 < 0 or x2 > stored.shape[1] or y2 > stored.shape[0]:
                continue
            expected = cv2.resize(stored[y1:y2, x1:x2], (12, 12), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(pixels[row], expected)
            checked += 1
    assert checked > 100


def test_detect_reads_the_stored_array(tagged: dict[str, Path]) -> None:
    from facedata.detect.draw import detect_file

    class Recorder:
        def detect(self, image: np.ndarray):
            self.image = image
            return None

    recorder = Recorder()
    image_id = WIDER_IMAGES[1]
    detect_file(tagged["root"] / f"{image_id}.jpg", None, recorder)  # type: ignore[arg-type]
    stored = cv2.imread(str(tagged["originals"] / f"{image_id}.jpg"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(recorder.image, stored)


# --- truncated files -----------------------------------------------------------------------------------


def real_files(realdata: Path) -> list[Path]:
    return [
        realdata / "wflw" / "WFLW_images" / f"{WIDER_IMAGES[0]}.jpg",
        realdata / "lfw_net_7876" / "lfw_5590" / "Anthony_Hopkins_0001.jpg",
        realdata / "300w" / "mmpose" / "indoor_020.png",  # 8-bit palette PNG
        realdata / "300w" / "mmpose" / "indoor_029.png",
    ]


@pytest.mark.parametrize("keep", [0.3, 0.9, -2])
def test_truncated_jpeg_and_png_are_refused(realdata: Path, tmp_path: Path, keep: float) -> None:
    for source in real_files(realdata):
        data = source.read_bytes()
        cut = len(data) + keep if keep < 0 else int(len(data) * keep)
        target = tmp_path / source.name
        target.write_bytes(data[: int(cut)])
        with pytest.raises(ImageError) as info:
            read_image(target)
        assert info.value.kind == TRUNCATED and str(target) in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_with_an_exif_thumbnail_is_refused(tagged: dict[str, Path], tmp_path: Path) -> None:
    """The thumbnail inside APP1 holds its own start-of-scan and end-of-image markers: not mistaken for the
    main image's."""
    data = (tagged["root"] / f"{WIDER_IMAGES[0]}.jpg").read_bytes()
    target = tmp_path / "cut.jpg"
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(target)


def test_complete_files_with_trailing_bytes_decode(realdata: Path, tmp_path: Path) -> None:
    for source in real_files(realdata):
        target = tmp_path / source.name
        target.write_bytes(source.read_bytes() + b"\x00" * 37)
        np.testing.assert_array_equal(read_image(target), cv2.imread(str(source), cv2.IMREAD_COLOR))


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="missing"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "text.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="unreadable"):
        read_image(tmp_path / "text.jpg")


def test_build_skips_a_truncated_image_with_a_reason(realdata: Path, tmp_path: Path) -> None:
    base = wider_manifest(realdata)
    root = tmp_path / "images"
    for image_id in WIDER_IMAGES:
        data = (realdata / "wflw" / "WFLW_images" / f"{image_id}.jpg").read_bytes()
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{image_id}.jpg").write_bytes(data[: len(data) * 2 // 3] if image_id == WIDER_IMAGES[1] else data)
    manifest = Manifest(base.images, base.faces, {**base.provenance, "roots": {"wider": str(root)}})
    for mix in (False, True):
        summary = build_dataset(manifest, None, tmp_path / f"out{mix}", mix=mix, workers=1, progress=False)
        assert [item["image_id"] for item in summary["skipped"]] == [WIDER_IMAGES[1]]
        assert "truncated" in summary["skipped"][0]["reason"]
        _, records = ShardedDataset(tmp_path / f"out{mix}").read(np.arange(summary["samples"]))
        assert summary["samples"] > 0 and set(records["image_index"].tolist()) == {0}
    with pytest.raises(FacedataError, match=r"7_Cheering_Cheering_7_16\.jpg: truncated"):
        build_dataset(manifest, None, tmp_path / "strict", mix=False, workers=1, progress=False, strict=True)
