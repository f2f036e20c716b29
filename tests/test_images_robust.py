"""Source images of every pixel format, and broken ones, through every command that reads images.

Good images become 3-channel 8-bit BGR with the right values (checked against arrays written here and
against Pillow, an independent decoder); broken ones (truncated, corrupt, empty, a decompression bomb) are
refused with their path and reason, never a crash, and leave the other images' samples as they are.

The corpus is real: 300W (AFW) photos with their .pts points, the real 300W palette PNG, and variants of
a real photo written here (grey, RGBA, 16-bit, palette, EXIF-rotated).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_imageio import with_exif

from facedata.errors import FacedataError
from facedata.imageio import TOO_LARGE, TRUNCATED, UNREADABLE, ImageError, read_image
from facedata.imageprobe import MAX_IMAGE_PIXELS, MAX_PIXELS_VARIABLE, probe_size, too_large
from facedata.storage import ShardedDataset

REPO = Path(__file__).resolve().parents[1]
AFW = ("134212_1", "134212_2")
PALETTE_300W = "indoor_020"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- independent helpers: PNG files written chunk by chunk ---------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, depth: int, colour: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG of filter-0 rows (each row must start with its filter byte 0)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", header) + extra + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def png_rows(samples: np.ndarray) -> bytes:
    """Raw rows (big-endian samples, filter byte 0) of an (H, W[, C]) uint8 or uint16 array."""
    data = samples.astype(samples.dtype.newbyteorder(">")) if samples.dtype == np.uint16 else samples
    flat = data.reshape(samples.shape[0], -1).view(np.uint8)
    return b"".join(b"\x00" + row.tobytes() for row in flat)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A complete, valid-looking 8-bit RGB PNG of a few hundred bytes declaring width x height."""
    return png_file(width, height, 8, 2, b"\x00" * 64)


def bomb_jpeg(real_jpeg: bytes, width: int = 60_000, height: int = 60_000) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    pos = real_jpeg.index(b"\xff\xc0")
    return real_jpeg[: pos + 5] + struct.pack(">HH", height, width) + real_jpeg[pos + 9 :]


def pillow_bgr(path: Path) -> np.ndarray:
    """Pillow's decode (an independent decoder) as BGR uint8."""
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(path) as im:
        return np.asarray(im.convert("RGB"))[:, :, ::-1].copy()


# --- read_image on every pixel format --------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(realdata: Path) -> np.ndarray:
    """A real AFW photo as Pillow decodes it (BGR)."""
    return pillow_bgr(realdata / "300w" / "spinkoo" / "afw" / "afw" / f"{AFW[0]}.jpg")


def test_grey_png_and_jpeg_repeat_the_grey_value(photo: np.ndarray, tmp_path: Path) -> None:
    grey = (photo.astype(np.uint32) @ np.array([29, 150, 77]) >> 8).astype(np.uint8)  # any grey image will do
    path = tmp_path / "grey.png"
    path.write_bytes(png_file(grey.shape[1], grey.shape[0], 8, 0, png_rows(grey)))
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(image, np.repeat(grey[:, :, None], 3, axis=2))
    ok, data = cv2.imencode(".jpg", grey)
    (tmp_path / "grey.jpg").write_bytes(data.tobytes())
    image = read_image(tmp_path / "grey.jpg")
    assert image.shape == (*grey.shape, 3) and (image[:, :, 0] == image[:, :, 2]).all()
    np.testing.assert_array_equal(image, pillow_bgr(tmp_path / "grey.jpg"))


def test_rgba_drops_alpha_and_keeps_the_colour_as_stored(photo: np.ndarray, tmp_path: Path) -> None:
    rgb = photo[:, :, ::-1]
    alpha = np.random.default_rng(1).integers(0, 256, photo.shape[:2], dtype=np.uint8)
    alpha[:100] = 0  # fully transparent rows keep their colour too (not composited on black or white)
    path = tmp_path / "rgba.png"
    path.write_bytes(png_file(rgb.shape[1], rgb.shape[0], 8, 6, png_rows(np.dstack([rgb, alpha]))))
    np.testing.assert_array_equal(read_image(path), photo)
    grey_alpha = np.dstack([rgb[:, :, 1], alpha])  # colour type 4: grey + alpha
    path = tmp_path / "la.png"
    path.write_bytes(png_file(rgb.shape[1], rgb.shape[0], 8, 4, png_rows(grey_alpha)))
    np.testing.assert_array_equal(read_image(path), np.repeat(rgb[:, :, 1:2], 3, axis=2))


def test_16_bit_png_is_scaled_to_the_nearest_8_bit_level(photo: np.ndarray, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    wide = (photo.astype(np.uint16) * 257 + rng.integers(-128, 129, photo.shape)).clip(0, 65535).astype(np.uint16)
    wide[0, :4] = [[0, 128, 129], [32767, 32768, 65406], [65407, 65534, 65535], [257, 385, 386]]
    expected = np.floor(wide.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert expected[0, :4].tolist() == [[0, 0, 1], [127, 128, 254], [255, 255, 255], [1, 1, 2]]
    path = tmp_path / "rgb16.png"
    rgb16 = np.ascontiguousarray(wide[:, :, ::-1])
    path.write_bytes(png_file(photo.shape[1], photo.shape[0], 16, 2, png_rows(rgb16)))
    np.testing.assert_array_equal(read_image(path), expected)
    grey16 = np.ascontiguousarray(wide[:, :, 1])
    path = tmp_path / "grey16.png"
    path.write_bytes(png_file(photo.shape[1], photo.shape[0], 16, 0, png_rows(grey16)))
    np.testing.assert_array_equal(read_image(path), np.repeat(expected[:, :, 1:2], 3, axis=2))


def test_palette_png_gives_its_colours(realdata: Path, tmp_path: Path) -> None:
    real = realdata / "300w" / "mmpose" / f"{PALETTE_300W}.png"
    data = real.read_bytes()
    assert data[25] == 3  # IHDR colour type 3: the real 300W file is a palette PNG
    np.testing.assert_array_equal(read_image(real), pillow_bgr(real))
    # written here: 4-bit indices into a palette with a tRNS chunk (transparency is dropped like alpha)
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, (37, 50), dtype=np.uint8)
    packed = (index[:, 0::2] << 4) | index[:, 1::2]
    extra = png_chunk(b"PLTE", palette.tobytes()) + png_chunk(b"tRNS", bytes(range(0, 256, 16)))
    path = tmp_path / "p4.png"
    path.write_bytes(png_file(50, 37, 4, 3, png_rows(packed), extra))
    np.testing.assert_array_equal(read_image(path), palette[index][:, :, ::-1])


def test_exif_rotated_jpeg_is_read_as_stored(realdata: Path, tmp_path: Path) -> None:
    original = (realdata / "300w" / "spinkoo" / "afw" / "afw" / f"{AFW[0]}.jpg").read_bytes()
    path = tmp_path / "exif6.jpg"
    path.write_bytes(with_exif(original, 6))
    stored = pillow_bgr(realdata / "300w" / "spinkoo" / "afw" / "afw" / f"{AFW[0]}.jpg")
    assert cv2.imread(str(path)).shape[:2] == stored.shape[1::-1]  # OpenCV's default would turn it
    np.testing.assert_array_equal(read_image(path), stored)
    assert probe_size(path) == (stored.shape[1], stored.shape[0])


# --- broken files: one clear error each ----------------------------------------------------------------


def broken_files(realdata: Path) -> dict[str, tuple[bytes, str, str]]:
    """name -> (file bytes, ImageError kind, words of the reason) for every kind of broken source image."""
    jpeg = (realdata / "300w" / "spinkoo" / "afw" / "afw" / f"{AFW[1]}.jpg").read_bytes()
    png = (realdata / "300w" / "mmpose" / f"{PALETTE_300W}.png").read_bytes()
    idat = png.index(b"IDAT")
    corrupt_png = png[: idat + 200] + bytes([png[idat + 200] ^ 0xFF]) + png[idat + 201 :]
    sof = jpeg.index(b"\xff\xc0")
    corrupt_jpeg = jpeg[:sof] + b"\x13" * 40 + jpeg[sof + 40 :]  # frame and table headers overwritten
    return {  # distinct stems: in the corpus each is the image of the .pts file of the same stem
        "truncated-jpeg.jpg": (jpeg[: len(jpeg) // 2], TRUNCATED, "no end-of-image marker"),
        "truncated-png.png": (png[: len(png) * 2 // 3], TRUNCATED, "ends inside the IDAT chunk"),
        "corrupt-png.png": (corrupt_png, UNREADABLE, "OpenCV cannot decode it"),
        "corrupt-jpeg.jpg": (corrupt_jpeg, UNREADABLE, "OpenCV cannot decode it"),
        "empty.jpg": (b"", UNREADABLE, "empty file (0 bytes)"),
        "bomb-png.png": (bomb_png(), TOO_LARGE, "declared size 100,000x100,000 = 10,000,000,000 pixels exceeds"),
        "bomb-jpeg.jpg": (bomb_jpeg(jpeg), TOO_LARGE, "declared size 60,000x60,000 = 3,600,000,000 pixels exceeds"),
    }


def test_broken_files_are_one_line_errors_naming_the_file(realdata: Path, tmp_path: Path) -> None:
    for name, (data, kind, words) in broken_files(realdata).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError) as info:
            read_image(path)
        message = str(info.value)
        assert info.value.kind == kind and message.startswith(f"{path}: {kind}: ") and words in message, name
        assert "\n" not in message


def test_the_pixel_limit_is_checked_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header-only bomb is refused at once; a real image above a lowered limit too; the limit is documented."""
    assert MAX_IMAGE_PIXELS == 2**28
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(20_000, 20_000))  # below OpenCV's own limit (2^30): it would allocate 1.2 GB
    assert probe_size(path) == (20_000, 20_000)
    with pytest.raises(ImageError, match="too large: declared size 20,000x20,000"):
        read_image(path)
    small = tmp_path / "small.png"
    small.write_bytes(png_file(40, 30, 8, 2, png_rows(np.zeros((30, 40, 3), np.uint8))))
    assert read_image(small).shape == (30, 40, 3)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "1199")
    assert too_large((40, 30)) is not None and too_large((30, 30)) is None
    with pytest.raises(ImageError, match=f"1,200 pixels exceeds the limit of 1,199 \\({MAX_PIXELS_VARIABLE}"):
        read_image(small)
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(FacedataError, match=f"{MAX_PIXELS_VARIABLE}='lots': expected a whole number"):
        read_image(small)


# --- a corpus with broken images among good ones, through every command ---------------------------------


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `facedata` command in a fresh process (a crash would show as a signal or a traceback)."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", "from facedata.cli import main; main()", *map(str, args)],
                          capture_output=True, text=True, env=environ, timeout=600)


def ok(*args: object) -> str:
    done = cli(*args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.returncode, done.stderr[-3000:])
    return done.stdout + done.stderr


def pts_text(points: np.ndarray) -> str:
    """An iBUG .pts file (1-based coordinates) of 68 (x, y) points given 0-based."""
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points]
    return "version: 1\nn_points: 68\n{\n" + "\n".join(lines) + "\n}\n"


GOOD_VARIANTS = ("grey.png", "rgba.png", "rgb16.png", "palette.png", "exif.jpg")


@pytest.fixture(scope="module")
def corpus(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """clean/: real AFW photos and the real 300W palette PNG with their points, the variants of one photo
    (grey, RGBA, 16-bit, palette, EXIF-rotated), and one good image per broken name; bad/: the same files
    with the broken ones in place of those (as if damaged after ingest). lmk.parquet: `ingest clean/`."""
    root = tmp_path_factory.mktemp("robust")
    clean, bad = root / "clean", root / "bad"
    clean.mkdir()
    afw = realdata / "300w" / "spinkoo" / "afw" / "afw"
    for stem in AFW:
        shutil.copy(afw / f"{stem}.jpg", clean / f"{stem}.jpg")
        shutil.copy(afw / f"{stem}.pts", clean / f"{stem}.pts")
    mmpose = realdata / "300w" / "mmpose"
    shutil.copy(mmpose / f"{PALETTE_300W}.png", clean / f"{PALETTE_300W}.png")
    annotations = json.loads((mmpose / "test_300w.json").read_text())
    image_id = next(im["id"] for im in annotations["images"] if im["file_name"] == f"{PALETTE_300W}.png")
    keypoints = next(a["keypoints"] for a in annotations["annotations"] if a["image_id"] == image_id)
    palette_pts = pts_text(np.array(keypoints, np.float64).reshape(68, 3)[:, :2])
    (clean / f"{PALETTE_300W}.pts").write_text(palette_pts)
    photo = pillow_bgr(afw / f"{AFW[0]}.jpg")
    rgb, h, w = photo[:, :, ::-1], photo.shape[0], photo.shape[1]
    grey = (photo.astype(np.uint32) @ np.array([29, 150, 77]) >> 8).astype(np.uint8)
    alpha = np.random.default_rng(4).integers(0, 256, (h, w), dtype=np.uint8)
    levels = photo.astype(np.uint16) * 257 + np.random.default_rng(5).integers(0, 257, photo.shape).astype(np.uint16)
    quantised = (photo // 32) * 32 + 16  # 8 levels per channel: 512 colours at most, of which a palette of 256
    colours, index = np.unique(quantised.reshape(-1, 3), axis=0, return_inverse=True)
    assert len(colours) <= 256
    files = {
        "grey.png": png_file(w, h, 8, 0, png_rows(grey)),
        "rgba.png": png_file(w, h, 8, 6, png_rows(np.dstack([rgb, alpha]))),
        "rgb16.png": png_file(w, h, 16, 2, png_rows(np.ascontiguousarray(levels[:, :, ::-1]))),
        "palette.png": png_file(w, h, 8, 3, png_rows(index.reshape(h, w).astype(np.uint8)),
                                png_chunk(b"PLTE", colours[:, ::-1].astype(np.uint8).tobytes())),
        "exif.jpg": with_exif((afw / f"{AFW[0]}.jpg").read_bytes(), 6),
    }
    expected = {"grey.png": np.repeat(grey[:, :, None], 3, axis=2), "rgba.png": photo,
                "rgb16.png": np.floor(levels * (255 / 65535) + 0.5).astype(np.uint8), "palette.png": quantised,
                "exif.jpg": photo}
    for name, data in files.items():
        (clean / name).write_bytes(data)
        shutil.copy(afw / f"{AFW[0]}.pts", clean / f"{Path(name).stem}.pts")
    broken = broken_files(realdata)
    for name in broken:  # the good file each broken one replaces, with its points
        source = clean / f"{PALETTE_300W}.png" if name.endswith(".png") else afw / f"{AFW[1]}.jpg"
        shutil.copy(source, clean / name)
        shutil.copy(source.with_suffix(".pts") if name.endswith(".jpg") else clean / f"{PALETTE_300W}.pts",
                    clean / f"{Path(name).stem}.pts")
    shutil.copytree(clean, bad)
    for name, (data, _, _) in broken.items():
        (bad / name).write_bytes(data)
    ok("ingest", clean, "-o", root / "lmk.parquet")
    return {"root": root, "clean": clean, "bad": bad, "broken": broken, "expected": expected}


def test_good_variants_decode_to_their_values(corpus: dict) -> None:
    for name, expected in corpus["expected"].items():
        np.testing.assert_array_equal(read_image(corpus["clean"] / name), expected, err_msg=name)


def test_ingest_rejects_what_the_header_probe_sees(corpus: dict) -> None:
    """ingest reads headers only: an empty file, a bomb and a JPEG with a broken frame header are rejected
    with their reason; a truncated or corrupt body passes (the decoders find it: build, verify, report)."""
    out = corpus["root"] / "ingest_bad.parquet"
    ok("ingest", corpus["bad"], "-o", out)
    rows = (out.with_name(out.name + ".rejects.csv")).read_text().splitlines()
    rejected = {name: line for name in corpus["broken"] for line in rows if f"/{name}" in line}
    assert sorted(rejected) == ["bomb-jpeg.jpg", "bomb-png.png", "corrupt-jpeg.jpg", "empty.jpg"], rows
    assert "100,000x100,000 = 10,000,000,000 pixels exceeds the limit of 268,435,456" in rejected["bomb-png.png"]
    assert "image too large" in rejected["bomb-jpeg.jpg"] and "unreadable image" in rejected["empty.jpg"]
    from facedata.manifest import Manifest

    images = Manifest.read(out).images.set_index("rel_path")
    assert len(images) == len(list(corpus["clean"].glob("*.pts"))) - 4
    for name in GOOD_VARIANTS:
        assert (images.loc[name, "width"], images.loc[name, "height"]) == (1024, 768), name


BUILDS = {
    "pnet": ["build", "pnet", "--detections", "{lmk}"],  # mixed: plans from geometry, decodes when rendering
    "pfld": ["build", "pfld", "--landmarks", "{lmk}", "--variants", "2"],
    "topdown": ["build", "topdown", "--keypoints", "{lmk}"],
}


@pytest.mark.parametrize("stage", list(BUILDS))
def test_every_build_skips_broken_images_and_keeps_the_others(corpus: dict, stage: str) -> None:
    """The same manifest built from clean/ and from bad/ (--images): the build finishes, each broken image
    is in the skip report with its path and reason, and every other sample is byte-identical."""
    root = corpus["root"]
    args = [a.format(lmk=root / "lmk.parquet") for a in BUILDS[stage]]
    backend = "parquet" if stage == "pfld" else "lmdb"
    common = ["--workers", "2", "--seed", "3", "--format", backend, "-q"]
    ok(*args, "-o", root / f"{stage}_clean", *common)
    text = ok(*args, "-o", root / f"{stage}_bad", "--images", f"ibug={corpus['bad']}", *common)
    index = json.loads((root / f"{stage}_bad" / "index.json").read_text())
    skipped = {Path(item["path"]).name: item for item in index["summary"]["skipped"]}
    assert sorted(skipped) == sorted(corpus["broken"])
    for name, (_, kind, words) in corpus["broken"].items():
        assert skipped[name]["path"] == str(corpus["bad"] / name)
        reason = skipped[name]["reason"]
        assert words in reason, (name, reason)
        assert {"truncated": "truncated file", "unreadable": "cannot be decoded", "too large": "image too large"}[
            kind] in reason
        assert f"skipped {corpus['bad'] / name}: " in text or len(skipped) > 20
    clean, dirty = ShardedDataset(root / f"{stage}_clean"), ShardedDataset(root / f"{stage}_bad")
    pixels, records = clean.read(np.arange(len(clean)))
    bad_pixels, bad_records = dirty.read(np.arange(len(dirty)))
    from facedata.manifest import Manifest

    rel = Manifest.read(root / "lmk.parquet").images["rel_path"].tolist()
    victims = [k for k, name in enumerate(rel) if name in corpus["broken"]]
    keep = ~np.isin(records["image_index"], victims)
    assert 0 < keep.sum() < len(records) and not np.isin(bad_records["image_index"], victims).any()
    assert set(bad_records["image_index"].tolist()) == set(records["image_index"][keep].tolist())
    np.testing.assert_array_equal(bad_records, records[keep])
    np.testing.assert_array_equal(bad_pixels, pixels[keep])
    clean.close()
    dirty.close()
    # every sample (grey, RGBA, 16-bit, palette and EXIF sources included) re-cut by the independent oracle
    text = ok("verify", root / f"{stage}_bad", "--pixels", "100000", "--images", f"ibug={corpus['bad']}")
    assert f"re-cut {len(bad_records)} samples" in text and ": 0 outside tolerance" in text, text
    # the clean build checked against the broken images: each sample of one is a named failure, not a crash
    done = cli("verify", root / f"{stage}_clean", "--pixels", "100000", "--images", f"ibug={corpus['bad']}",
               "--max-listed", "100000")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"from {corpus['bad'] / 'bomb-png.png'}: source image declares 100,000x100,000 pixels" in done.stdout
    assert f"from {corpus['bad'] / 'empty.jpg'}: cannot read or decode" in done.stdout


def test_report_preview_and_export_with_broken_images(corpus: dict) -> None:
    """The manifest report draws the good images and names each broken one with its reason; preview and the
    exports (which read no source pixels) finish on a build and a manifest that include them."""
    root = corpus["root"]
    lmk, bad = root / "lmk.parquet", corpus["bad"]
    ok("report", lmk, "-o", root / "report", "--images", f"ibug={bad}", "--grid", "100")
    page = (root / "report" / "index.html").read_text()
    note = page[page.index(f"{len(corpus['broken'])} image(s) not shown: "):].split("</p>")[0]
    for name, (_, kind, _) in corpus["broken"].items():
        assert f"{bad / name}: {kind}: " in note, name
    if not (root / "pnet_bad").exists():
        ok("build", "pnet", "--detections", lmk, "-o", root / "pnet_bad", "--images", f"ibug={bad}", "--workers", "1",
           "-q")
    ok("preview", root / "pnet_bad", "-o", root / "sheet.png")
    assert read_image(root / "sheet.png").shape[2] == 3
    ok("export", "coco", lmk, "-o", root / "coco.json")
    names = {image["file_name"] for image in json.loads((root / "coco.json").read_text())["images"]}
    assert set(corpus["broken"]) <= names


@pytest.mark.parametrize("command", ["ingest", "build", "verify", "report"])
@pytest.mark.parametrize("what", ["missing", "a file"])
def test_a_missing_images_folder_is_refused_naming_the_flag(corpus: dict, command: str, what: str) -> None:
    root = corpus["root"]
    folder = root / "no-such-folder"
    if what == "a file":
        folder = root / "a-file"
        folder.write_text("not a folder")
    lmk = root / "lmk.parquet"
    shards = root / "pfld_bad" if (root / "pfld_bad").exists() else corpus["clean"]
    args = {"ingest": ["ingest", corpus["clean"], "-o", root / "never.parquet", "--images", folder],
            "build": ["build", "pfld", "--landmarks", lmk, "-o", root / "never", "--images", f"ibug={folder}"],
            "verify": ["verify", shards, "--pixels", "5", "--images", f"ibug={folder}"],
            "report": ["report", lmk, "-o", root / "never-report", "--images", folder]}[command]
    done = cli(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--images" in lines[0] and str(folder) in lines[0], lines[0]
    assert not any((root / name).exists() for name in ("never", "never.parquet", "never-report"))
