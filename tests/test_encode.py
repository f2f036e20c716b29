"""Encoded sample images (`--encode png|jpeg`): real LMDB/Parquet shards holding one PNG/JPEG per sample come
out of every reader as the raw build's arrays (PNG bit-exact, JPEG within the documented tolerance), verify
still passes, and a damaged encoded image is a clear error naming its block and sample. Pixels are real
AFLW2000-3D photos; the expected arrays are the raw build's (or the crops themselves), not the codec's."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_framework

from facedata.cli import main
from facedata.errors import FacedataError
from facedata.storage import ShardedDataset, verify_dataset
from facedata.storage.codec import JPEG_MEAN_TOLERANCE
from facedata.storage.index import load_index
from facedata.storage.lmdb_store import block_key, value_extents
from facedata.storage.writer import DatasetWriter

RECORD = np.dtype([("label", "i1"), ("image_index", "<i4")])


def run(*args: object) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def everything(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All samples in the reader's shuffled epoch order (the same for equal label streams)."""
    batches = list(ShardedDataset(path).iter_batches(16, seed=3))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def per_sample_mean_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b).reshape(len(a), -1).mean(axis=1)


@pytest.fixture(scope="module")
def pfld_builds(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("encode")
    run("ingest", realdata / "aflw2000_3d", "-o", out / "aflw.parquet", "-q")
    builds = {}
    for backend in ("lmdb", "parquet"):
        for encode in ("raw", "png", "jpeg"):
            target = out / f"{backend}-{encode}"
            run("build", "pfld", "--landmarks", out / "aflw.parquet", "-o", target, "--variants", 3,
                "--format", backend, "--encode", encode, "--workers", 1, "-q")
            builds[backend, encode] = target
    return builds


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
def test_pfld_png_is_bit_exact_and_jpeg_close(pfld_builds: dict[tuple[str, str], Path], backend: str) -> None:
    raw_pixels, raw_records = everything(pfld_builds[backend, "raw"])
    assert len(raw_records) == 48
    for encode in ("png", "jpeg"):
        path = pfld_builds[backend, encode]
        index = load_index(path)
        assert index["image_encoding"] == encode and verify_dataset(path) == []
        assert index["bytes"] < load_index(pfld_builds[backend, "raw"])["bytes"]
        pixels, records = everything(path)
        assert records.tobytes() == raw_records.tobytes()
        if encode == "png":
            assert np.array_equal(pixels, raw_pixels)
        else:
            diff = per_sample_mean_diff(pixels, raw_pixels)
            assert 0 < diff.min() and diff.max() <= JPEG_MEAN_TOLERANCE  # really lossy, and close


def test_the_torch_reader_decodes_like_the_numpy_reader(pfld_builds: dict[tuple[str, str], Path]) -> None:
    torch = require_framework("torch")
    from facedata.readers.torch import ShardIterableDataset

    raw = pfld_builds["parquet", "raw"]
    for path in (raw, pfld_builds["lmdb", "png"]):
        loader = torch.utils.data.DataLoader(ShardIterableDataset(path, batch_size=48, seed=5, shuffle=False),
                                             batch_size=None, num_workers=0)
        batch = next(iter(loader))
        batch = batch.unpack() if hasattr(batch, "unpack") else batch
        if path == raw:
            expected = batch["image"].numpy()
        else:
            assert np.array_equal(batch["image"].numpy(), expected)


def face_crops(realdata: Path, n: int) -> np.ndarray:
    """n 64 x 48 crops of the real AFLW2000-3D photos at varying offsets."""
    files = sorted((realdata / "aflw2000_3d" / "AFLW2000").glob("*.jpg"))
    crops = []
    for k in range(n):
        image = cv2.imread(str(files[k % len(files)]))
        x, y = 100 + (k * 37) % 200, 120 + (k * 53) % 200
        crops.append(cv2.resize(image[y : y + 128, x : x + 96], (48, 64)))
    return np.stack(crops)


@pytest.mark.parametrize("backend", ["lmdb", "parquet"])
@pytest.mark.parametrize("encode", ["png", "jpeg"])
def test_writer_round_trip_over_blocks_and_shards(realdata: Path, tmp_path: Path, backend: str, encode: str) -> None:
    pixels = face_crops(realdata, 150)
    records = np.zeros(150, RECORD)
    records["image_index"] = np.arange(150)
    with DatasetWriter(tmp_path / "d", backend=backend, image_shape=(64, 48, 3), record_dtype=RECORD,
                       provenance={}, shard_bytes=64 * 9300, block_samples=16, encoding=encode) as writer:
        for lo in range(0, 150, 37):  # adds that straddle blocks
            writer.add(pixels[lo : lo + 37], records[lo : lo + 37])
    index = load_index(tmp_path / "d")
    assert len(index["shards"]) == 3 and verify_dataset(tmp_path / "d") == []
    got, got_records = ShardedDataset(tmp_path / "d").read(np.arange(150))
    assert np.array_equal(got_records["image_index"], np.arange(150))
    if encode == "png":
        assert np.array_equal(got, pixels)
    else:
        assert per_sample_mean_diff(got, pixels).max() <= JPEG_MEAN_TOLERANCE


def test_unknown_encoding_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FacedataError, match="image encoding 'webp'"):
        DatasetWriter(tmp_path / "d", backend="lmdb", image_shape=(8, 8, 3), record_dtype=RECORD, provenance={},
                      encoding="webp")


def test_a_damaged_encoded_image_names_its_block_and_sample(realdata: Path, tmp_path: Path) -> None:
    pixels = face_crops(realdata, 20)
    records = np.zeros(20, RECORD)
    with DatasetWriter(tmp_path / "d", backend="lmdb", image_shape=(64, 48, 3), record_dtype=RECORD,
                       provenance={}, block_samples=16, encoding="png") as writer:
        writer.add(pixels, records)
    shard = tmp_path / "d" / load_index(tmp_path / "d")["shards"][0]["file"]
    fd = os.open(shard, os.O_RDWR)
    try:
        offset, _ = value_extents(fd, b"blocks")[block_key(1)]
        os.pwrite(fd, b"\0" * 16, offset + 4 + 4 * 4)  # the first image's PNG signature in block 1 (4 samples)
    finally:
        os.close(fd)
    with pytest.raises(FacedataError, match=r"block 1: sample 0 does not decode to a 64x48x3 image"):
        ShardedDataset(tmp_path / "d").read(np.arange(20))


def test_encoded_shards_are_worker_invariant_and_described(pfld_builds: dict[tuple[str, str], Path],
                                                           tmp_path: Path) -> None:
    from facedata.storage.index import describe

    source = pfld_builds["lmdb", "jpeg"]
    aflw = source.parent / "aflw.parquet"
    run("build", "pfld", "--landmarks", aflw, "-o", tmp_path / "two", "--variants", 3, "--encode", "jpeg",
        "--workers", 2, "-q")
    shas = [[s["sha256"] for s in load_index(p)["shards"]] for p in (source, tmp_path / "two")]
    assert shas[0] == shas[1]
    assert "stored jpeg" in describe(load_index(source))


def test_topdown_png_round_trips(pfld_builds: dict[tuple[str, str], Path], tmp_path: Path) -> None:
    aflw = pfld_builds["lmdb", "raw"].parent / "aflw.parquet"
    for encode in ("raw", "png"):
        run("build", "topdown", "--keypoints", aflw, "-o", tmp_path / encode, "--encode", encode, "-q")
    raw, png = everything(tmp_path / "raw"), everything(tmp_path / "png")
    assert png[0].shape == (16, 320, 240, 3)
    assert np.array_equal(png[0], raw[0]) and png[1].tobytes() == raw[1].tobytes()


@pytest.mark.mindspore
def test_mindspore_reader_decodes_like_the_numpy_reader(pfld_builds: dict[tuple[str, str], Path]) -> None:
    from facedata.readers.mindspore import MindSporeBatchSource

    path = pfld_builds["parquet", "jpeg"]
    source = MindSporeBatchSource(path, 16, seed=3)
    dataset = source.dataset(num_parallel_workers=1, python_multiprocessing=False)
    images = np.concatenate([b["image"] for b in dataset.create_dict_iterator(num_epochs=1, output_numpy=True)])
    assert np.array_equal(images, everything(path)[0])


@pytest.mark.parametrize("encode", ["raw", "png", "jpeg"])
def test_verify_pixels_passes_on_every_encoding(pfld_builds: dict[tuple[str, str], Path], encode: str) -> None:
    """verify --pixels re-cuts from the source photos: PNG within the raw tolerance, JPEG within the lossy one
    (oracle.pixels.LOSSY_TOLERANCE: a mean bound far below the tens of levels of a wrong crop)."""
    from facedata.oracle.pixels import LOSSY_TOLERANCE, TOLERANCE

    result = CliRunner().invoke(main, ["verify", str(pfld_builds["lmdb", encode]), "--pixels", "24"])
    assert result.exit_code == 0 and "0 outside tolerance" in result.output, result.output
    assert LOSSY_TOLERANCE.mean < 10 and TOLERANCE.mean <= LOSSY_TOLERANCE.mean
