"""`facedata build pfld`: crops, augmentation, targets (points, masks, Euler angles) and worker invariance, on
real AFLW2000-3D / 300W-LP images and on images with known coloured dots. The checks recompute from the
documented conventions (scipy's rotations for the angles, colour centroids for the points), not with the
sampler's helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from conftest import require_framework
from scipy.spatial.transform import Rotation

from facedata.cli import main
from facedata.errors import FacedataError
from facedata.fusion.schemes import SCHEMES, LandmarkScheme
from facedata.manifest import Manifest, ManifestBuilder
from facedata.preview import draw_sample
from facedata.samplers.pfld import PfldRecipe, pfld_dtype
from facedata.storage import ShardedDataset, verify_dataset

MTCNN5_FLIP = [1, 0, 2, 4, 3]  # spec 6.1
IBUG68_TO_WFLW98_MASKED = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 38, 39, 40, 41, 47, 48, 49, 50,
                           62, 66, 70, 74, 96, 97]  # spec 10: the 30 wflw98 slots ibug68 has no source for
WFLW98_FLIP = [32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,
               6, 5, 4, 3, 2, 1, 0, 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52,
               53, 54, 59, 58, 57, 56, 55, 72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65, 82, 81,
               80, 79, 78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96]
COLOURS = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0], [0, 255, 255], [255, 0, 255]], np.float64)  # BGR


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def records(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    data = ShardedDataset(directory)
    return data.read(np.arange(len(data)))


@pytest.fixture(scope="module")
def real(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pfld")
    for name in ("aflw2000_3d", "300w_lp"):
        assert run("ingest", realdata / name, "-o", out / f"{name}.parquet", "-q").exit_code == 0
    return {"aflw": out / "aflw2000_3d.parquet", "lp": out / "300w_lp.parquet", "dir": out}


@pytest.fixture(scope="module")
def dots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two images with mtcnn5 faces whose five points are discs of five colours, one face near a corner."""
    root = tmp_path_factory.mktemp("dots")
    builder = ManifestBuilder("dots", "train", "dots")
    faces = {"a": np.array([[150.0, 140], [230, 150], [190, 200], [160, 250], [225, 255]]),
             "b": np.array([[12.0, 20], [70, 14], [40, 50], [18, 80], [66, 78]])}  # near the top-left corner
    for name, pts in faces.items():
        image = np.full((360, 400, 3), 40, np.uint8)
        for xy, colour in zip(pts, COLOURS, strict=True):
            cv2.circle(image, (int(xy[0]), int(xy[1])), 5, colour.tolist(), -1, lineType=cv2.LINE_AA)
        cv2.imwrite(str(root / f"{name}.png"), image)
        builder.add_image(name, f"{name}.png", width=400, height=360)
        low, high = pts.min(axis=0), pts.max(axis=0)
        builder.add_faces(name, np.array([[*low, *high]]), scheme="mtcnn5", points=pts[None], derived_box=True)
    builder.build({"roots": {"dots": str(root)}}).write(root / "dots.parquet")
    return root / "dots.parquet"


def _centroid(crop: np.ndarray, colour: np.ndarray) -> np.ndarray | None:
    close = np.linalg.norm(crop.astype(np.float64) - colour, axis=2) < 90
    if close.sum() < 3:
        return None
    ys, xs = np.nonzero(close)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])  # continuous coordinates of the pixel centres


def test_points_land_on_their_dots_after_every_warp(dots: Path, tmp_path: Path) -> None:
    result = run("build", "pfld", "--landmarks", dots, "-o", tmp_path / "out", "--workers", 1, "-q",
                 "--variants", 30, "--size", 96)
    assert result.exit_code == 0, result.output
    pixels, recs = records(tmp_path / "out")
    assert len(recs) == 60 and recs["mirror"].any() and (~recs["mirror"].astype(bool)).any()
    assert (np.abs(recs["angle"]) > 10).any() and (recs["angle"][::30] == 0).all()
    checked = 0
    for crop, rec in zip(pixels, recs, strict=True):
        targets = rec["landmarks"].reshape(-1, 2) * 96
        source = np.array(MTCNN5_FLIP) if rec["mirror"] else np.arange(5)  # slot j shows point source[j]
        for j in range(5):
            if not ((targets[j] > 6) & (targets[j] < 90)).all():  # the disc may be cut by the crop edge
                continue
            found = _centroid(crop, COLOURS[source[j]])
            assert found is not None, (rec["image_index"], rec["angle"], rec["mirror"], j)
            assert np.linalg.norm(found - targets[j]) < 1.5, (rec["image_index"], rec["angle"], rec["mirror"], j)
            checked += 1
    assert checked > 250


def test_one_and_two_workers_write_identical_shards(real: dict[str, Path], tmp_path: Path) -> None:
    for workers in (1, 2):
        result = run("build", "pfld", "--landmarks", real["aflw"], "--landmarks", real["lp"], "-o",
                     tmp_path / str(workers), "--workers", workers, "-q", "--variants", 5, "--seed", 7)
        assert result.exit_code == 0, result.output
    one, two = (json.loads((tmp_path / w / "index.json").read_text())["shards"] for w in "12")
    assert [s["sha256"] for s in one] == [s["sha256"] for s in two]
    assert verify_dataset(tmp_path / "1") == []


def _pose_para(realdata: Path, image_id: str) -> np.ndarray:
    """pitch, yaw, roll in degrees straight from the .mat Pose_Para (radians; spec 3.4)."""
    name = image_id.split("/")[-1]
    path = next(realdata.rglob(f"{name}.mat"))
    return np.degrees(np.asarray(scipy.io.loadmat(path)["Pose_Para"], np.float64).ravel()[:3])


def _augmented(pose: np.ndarray, angle: float, mirror: bool) -> np.ndarray:
    """Independent of the sampler: R = Rx(-pitch) Ry(yaw) Rz(roll) (scipy intrinsic XYZ), the crop rotated
    by `angle` counter-clockwise (y down) is the camera rotation Rz(-angle) applied first; mirror negates
    yaw and roll."""
    pitch, yaw, roll = pose
    rotated = Rotation.from_euler("z", -angle, degrees=True) * Rotation.from_euler("XYZ", [-pitch, yaw, roll],
                                                                                    degrees=True)
    p, y, r = rotated.as_euler("XYZ", degrees=True)
    out = np.array([-p, y, r])
    return out * np.array([1, -1, -1]) if mirror else out


def test_annotated_angles_are_stored_and_follow_the_augmentation(real: dict[str, Path], realdata: Path,
                                                                 tmp_path: Path) -> None:
    result = run("build", "pfld", "--landmarks", real["aflw"], "--landmarks", real["lp"], "-o", tmp_path / "o",
                 "-q", "--workers", 1, "--variants", 6)
    assert result.exit_code == 0, result.output
    _, recs = records(tmp_path / "o")
    images = pd_images(real)
    plain = recs[recs["angle"] == 0]
    assert len(plain) == 17 and (plain["mirror"] == 0).all() and (recs["pose_source"] == 1).all()
    for rec in plain:
        np.testing.assert_allclose(rec["euler"], _pose_para(realdata, images[rec["image_index"]]), atol=1e-3)
    augmented = recs[recs["angle"] != 0]
    assert augmented["mirror"].any()
    for rec in augmented:
        base = plain[plain["face_index"] == rec["face_index"]][0]["euler"].astype(np.float64)
        np.testing.assert_allclose(rec["euler"], _augmented(base, float(rec["angle"]), bool(rec["mirror"])),
                                   atol=1e-2)


def pd_images(real: dict[str, Path]) -> list[str]:
    """Image ids of the concatenated inputs (aflw then lp), i.e. what image_index refers to."""
    return [*Manifest.read(real["aflw"]).images["image_id"], *Manifest.read(real["lp"]).images["image_id"]]


def test_estimated_angles_are_close_to_the_annotated_ones(real: dict[str, Path], tmp_path: Path) -> None:
    """The same faces without their annotation get solvePnP angles (fusion.derived); the error is reported."""
    manifest = Manifest.read(real["aflw"])
    manifest.faces["pose_source"] = None
    manifest.write(tmp_path / "unposed.parquet")
    for name, path in (("a", real["aflw"]), ("e", tmp_path / "unposed.parquet")):
        assert run("build", "pfld", "--landmarks", path, "-o", tmp_path / name, "-q", "--variants", 1).exit_code == 0
    annotated, estimated = records(tmp_path / "a")[1], records(tmp_path / "e")[1]
    assert (estimated["pose_source"] == 2).all()
    error = np.abs(estimated["euler"] - annotated["euler"])
    median = np.median(error, axis=0)  # pitch, yaw, roll
    assert median[1] < 5 and median[2] < 5 and median[0] < 15, median


def test_masks_survive_mirroring(real: dict[str, Path], tmp_path: Path) -> None:
    """A 300W-LP face fused 68 -> 98 keeps its 30 masked points masked, at their mirrored slots."""
    assert run("fuse", real["lp"], "--to", "wflw98", "-o", tmp_path / "f.parquet").exit_code == 0
    result = run("build", "pfld", "--landmarks", tmp_path / "f.parquet", "-o", tmp_path / "o", "-q",
                 "--variants", 12, "--workers", 1)
    assert result.exit_code == 0, result.output
    _, recs = records(tmp_path / "o")
    masked = np.zeros(98, bool)
    masked[IBUG68_TO_WFLW98_MASKED] = True
    assert recs["mirror"].any() and (~recs["mirror"].astype(bool)).any()
    for rec in recs:
        expected = ~masked[WFLW98_FLIP] if rec["mirror"] else ~masked
        assert (rec["mask"].astype(bool) == expected).all()
        points = rec["landmarks"].reshape(98, 2)
        assert np.isnan(points[~expected]).all() and ((points[expected] >= 0) & (points[expected] <= 1)).all()
        assert points[60, 0] < points[72, 0] and points[0, 0] < points[32, 0]  # image-left stays left
    result = run("preview", tmp_path / "o", "-o", tmp_path / "sheet.png")  # masked (NaN) points are not drawn
    assert result.exit_code == 0 and "landmark 12" in result.output, result.output


def test_mixed_schemes_are_refused(real: dict[str, Path], dots: Path, tmp_path: Path) -> None:
    result = run("build", "pfld", "--landmarks", real["aflw"], "--landmarks", dots, "-o", tmp_path / "o")
    assert result.exit_code != 0 and "fuse first" in result.output and "mtcnn5 (dots.parquet)" in result.output
    assert "Traceback" not in result.output
    manifest = Manifest.read(dots)
    manifest.faces["points"] = None
    manifest.write(tmp_path / "none.parquet")
    result = run("build", "pfld", "--landmarks", tmp_path / "none.parquet", "-o", tmp_path / "o")
    assert result.exit_code != 0 and "no face of none.parquet has landmark points" in result.output


def test_a_scheme_without_flip_permutation_needs_no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEMES._items, "line3", LandmarkScheme(  # registered for this test only
        "line3", "test", ("a", "b", "c"), {"all": (0, 1, 2)}, (0, 1, 2), (0, 2), "image", "test"))
    with pytest.raises(FacedataError, match="no flip permutation: pass --no-mirror"):
        PfldRecipe(scheme="line3")
    assert not PfldRecipe(scheme="line3", mirror=False).mirror


def test_repeat_by_weight_repeats_and_counts(dots: Path, tmp_path: Path) -> None:
    manifest = Manifest.read(dots)
    manifest.faces["weight"] = np.array([3.0, 0.4], np.float32)
    manifest.write(tmp_path / "w.parquet")
    result = run("build", "pfld", "--landmarks", tmp_path / "w.parquet", "-o", tmp_path / "o", "-q",
                 "--variants", 4, "--repeat-by", "weight")
    assert result.exit_code == 0, result.output
    _, recs = records(tmp_path / "o")
    assert np.bincount(recs["image_index"]).tolist() == [12, 4]  # 3 x 4, and a weight below 1 never drops
    assert (recs["weight"][recs["image_index"] == 0] == 3).all() and (recs["angle"] == 0).sum() == 2
    summary = json.loads((tmp_path / "o" / "index.json").read_text())["summary"]
    assert summary["pfld"]["repeats"] == 2


def test_attributes_flags_and_corpus(real: dict[str, Path], dots: Path, tmp_path: Path) -> None:
    manifest = Manifest.read(dots)
    manifest.faces.loc[0, ["pose", "expression", "illumination", "make_up", "occlusion", "blur"]] = [0, 1, 0, 0, 1, 0]
    manifest.write(tmp_path / "a.parquet")
    assert run("build", "pfld", "--landmarks", tmp_path / "a.parquet", "-o", tmp_path / "o", "-q",
               "--variants", 2).exit_code == 0
    _, recs = records(tmp_path / "o")
    first, second = recs[recs["image_index"] == 0], recs[recs["image_index"] == 1]
    assert (first["attributes"] == [0, 1, 0, 0, 1, 0]).all() and (first["has_attributes"] == 1).all()
    assert (second["attributes"] == 0).all() and (second["has_attributes"] == 0).all()
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["provenance"]["pfld_corpora"][int(recs["corpus"][0])] == "dots"


@pytest.mark.parametrize("box", ["landmarks", "annotated"])
def test_unaugmented_crop_is_the_expanded_square(dots: Path, tmp_path: Path, box: str) -> None:
    """Spec 8.1: square around the centre of the points' extent (or the annotated box), 1.2 x its larger side;
    the corner face's crop leaves the image and is zero-padded."""
    manifest = Manifest.read(dots)
    manifest.faces.loc[0, ["x1", "y1", "x2", "y2"]] = [120.0, 100.0, 260.0, 300.0]
    manifest.faces["box_source"] = "annotated"
    manifest.write(tmp_path / "m.parquet")
    assert run("build", "pfld", "--landmarks", tmp_path / "m.parquet", "-o", tmp_path / "o", "-q", "--variants", 1,
               "--box", box, "--expand", 1.5).exit_code == 0
    pixels, recs = records(tmp_path / "o")
    for rec, face in zip(recs, manifest.faces.itertuples(), strict=True):
        if box == "annotated":
            low, high = np.array([face.x1, face.y1]), np.array([face.x2, face.y2])
        else:
            pts = np.asarray(face.points, np.float64).reshape(-1, 2)
            low, high = pts.min(axis=0), pts.max(axis=0)
        side = 1.5 * (high - low).max()
        expected = np.concatenate([(low + high) / 2 - side / 2, (low + high) / 2 + side / 2])
        np.testing.assert_allclose(rec["crop"], expected, atol=1.0)
    corner = pixels[1]
    assert rec["crop"][0] < 0 and (corner[:3, :3] == 0).all()  # outside the image: black padding


def test_a_missing_image_is_skipped_and_named(dots: Path, tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes((dots.parent / "a.png").read_bytes())
    result = run("build", "pfld", "--landmarks", dots, "--images", f"dots={tmp_path / 'imgs'}", "-o", tmp_path / "o",
                 "--variants", 3)
    assert result.exit_code == 0 and "skipped" in result.output and "b.png: file not found" in result.output
    assert len(ShardedDataset(tmp_path / "o")) == 3
    result = run("build", "pfld", "--landmarks", dots, "--images", f"dots={tmp_path / 'imgs'}", "-o", tmp_path / "s",
                 "--strict")
    assert result.exit_code != 0 and "b.png" in result.output and "Traceback" not in result.output


def assert_reader_fields(columns: dict, pixels: np.ndarray, recs: np.ndarray) -> None:
    """The reader's columns are the image and the record's fields, in its order, with the numpy reader's values
    and stored dtypes (the label's aside: each framework's loss type)."""
    assert list(columns) == ["image", *recs.dtype.names]
    assert np.array_equal(columns["image"], pixels)
    for name in recs.dtype.names:
        assert np.array_equal(columns[name], recs[name], equal_nan=recs[name].dtype.kind == "f"), name
        assert name == "label" or columns[name].dtype == recs[name].dtype, name


@pytest.fixture()
def pfld_dots(dots: Path, tmp_path: Path) -> Path:
    assert run("build", "pfld", "--landmarks", dots, "-o", tmp_path / "o", "-q", "--variants", 6).exit_code == 0
    fields = set(ShardedDataset(tmp_path / "o").record_dtype.names)
    assert {"landmarks", "mask", "euler", "attributes", "has_attributes", "ear", "weight", "corpus"} <= fields
    return tmp_path / "o"


def test_the_torch_reader_returns_every_pfld_field_in_one_order(pfld_dots: Path) -> None:
    """PyTorch gives the numpy reader's fields, in the record's order, for the same seed; its label is int64."""
    torch = require_framework("torch")
    from facedata.readers.torch import ShardIterableDataset

    pixels, recs = next(ShardedDataset(pfld_dots).iter_batches(8, seed=3))
    batch = next(iter(torch.utils.data.DataLoader(ShardIterableDataset(pfld_dots, batch_size=8, seed=3),
                                                  batch_size=None, num_workers=0)))
    assert_reader_fields({name: value.numpy() for name, value in batch.items()}, pixels, recs)
    assert batch["label"].dtype == torch.int64
    assert batch["mask"].dtype == torch.uint8 and batch["landmarks"].shape == (8, 10)


@pytest.mark.mindspore
def test_the_mindspore_reader_returns_every_pfld_field_in_one_order(pfld_dots: Path) -> None:
    """MindSpore gives the numpy reader's fields, in the record's order, for the same seed; its label is int32."""
    from facedata.readers.mindspore import MindSporeBatchSource

    pixels, recs = next(ShardedDataset(pfld_dots).iter_batches(8, seed=3))
    source = MindSporeBatchSource(pfld_dots, 8, seed=3)
    columns = dict(zip(source.column_names, source[0], strict=True))
    assert_reader_fields(columns, pixels, recs)
    assert columns["label"].dtype == np.int32


def test_batch_mix_is_refused_on_pfld_shards(dots: Path, tmp_path: Path) -> None:
    """Every pfld record is a landmark sample: a class mix does not apply, and every reader says so."""
    require_framework("torch")
    from facedata.readers.torch import ShardIterableDataset

    assert run("build", "pfld", "--landmarks", dots, "-o", tmp_path / "o", "-q", "--variants", 2).exit_code == 0
    message = "batch_mix '0:0:0:1' does not apply: every sample of the dataset is landmark (label -2)"
    with pytest.raises(FacedataError, match=re.escape(message)):
        next(ShardedDataset(tmp_path / "o").iter_batches(4, batch_mix="0:0:0:1"))
    with pytest.raises(FacedataError, match="does not apply"):
        ShardIterableDataset(tmp_path / "o", 4, batch_mix="3:1:1:2")


def _pfld_record(yaw: float, mask: list[int], masked_xy: tuple[float, float] = (np.nan, np.nan)) -> np.ndarray:
    """One mtcnn5 pfld record: a frontal five-point layout centred in the crop, point 4 at `masked_xy`."""
    rec = np.zeros(1, pfld_dtype(5))
    points = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.5], [0.38, 0.65], [0.62, 0.65]])
    points[4] = masked_xy if not mask[4] else points[4]
    rec["label"], rec["landmarks"], rec["mask"], rec["euler"] = -2, points.reshape(-1), mask, (0.0, yaw, 0.0)
    return rec


def _colour_pixels(image: np.ndarray, bgr: tuple[int, int, int]) -> np.ndarray:
    """(n, 2) x, y of pixels within 60 of the colour (anti-aliasing blends the edges)."""
    ys, xs = np.nonzero(np.abs(image.astype(int) - bgr).max(axis=2) < 60)
    return np.column_stack([xs, ys])


def test_preview_draws_the_euler_axes_towards_the_yaw(tmp_path: Path) -> None:
    """Schema convention: positive yaw = the face turned towards image-left, so the facing axis (blue) leaves
    the face centre to the left for yaw +40 and to the right for -40; without a pose no axis is drawn."""
    crop = np.zeros((112, 112, 3), np.uint8)
    centre_x = 0.5 * 224
    facing = {}
    for yaw in (40.0, -40.0):
        sheet = draw_sample(crop, _pfld_record(yaw, [1, 1, 1, 1, 1])[0], 224)
        facing[yaw] = _colour_pixels(sheet, (255, 0, 0))[:, 0].mean() - centre_x
        assert len(_colour_pixels(sheet, (0, 255, 0))) > 20  # the up axis
    assert facing[40.0] < -10 and facing[-40.0] > 10, facing
    frontal = draw_sample(crop, _pfld_record(0.0, [1, 1, 1, 1, 1])[0], 224)
    assert abs(_colour_pixels(frontal, (0, 255, 0))[:, 0].mean() - centre_x) < 3  # up axis straight up
    unknown = _pfld_record(0.0, [1, 1, 1, 1, 1])
    unknown["euler"] = np.nan
    assert len(_colour_pixels(draw_sample(crop, unknown[0], 224), (255, 0, 0))) == 0


def test_preview_draws_masked_points_apart_from_present_ones() -> None:
    """A present point is a filled dot; a masked point with coordinates a hollow ring; masked points without
    coordinates (pfld's NaN) are counted in the cell's caption."""
    crop = np.zeros((112, 112, 3), np.uint8)
    hollow = draw_sample(crop, _pfld_record(0.0, [1, 1, 1, 1, 0], (0.62, 0.65))[0], 224)
    red = (0, 0, 255)
    for (x, y), filled in (((0.35, 0.4), True), ((0.62, 0.65), False)):
        cx, cy = round(x * 224), round(y * 224)
        assert (np.abs(hollow[cy, cx].astype(int) - red).max() < 60) == filled
        ring = hollow[cy - 8 : cy + 9, cx - 8 : cx + 9]
        assert len(_colour_pixels(ring, red)) > 8  # the dot or its ring
    full = draw_sample(crop, _pfld_record(0.0, [1, 1, 1, 1, 1])[0], 224)
    nan = draw_sample(crop, _pfld_record(0.0, [1, 1, 1, 1, 0])[0], 224)
    caption = np.s_[200:, :100]
    assert (full[caption] == 0).all() and (nan[caption] > 150).sum() > 30


def test_preview_sheet_of_real_pfld_shards_is_a_png_with_axes(real: dict[str, Path], tmp_path: Path) -> None:
    assert run("build", "pfld", "--landmarks", real["aflw"], "-o", tmp_path / "o", "-q", "--variants", 2).exit_code == 0
    result = run("preview", tmp_path / "o", "-o", tmp_path / "sheet.png", "--cell", 160)
    assert result.exit_code == 0, result.output
    sheet = cv2.imread(str(tmp_path / "sheet.png"))
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sheet.shape[1] > 160
    for colour in ((255, 255, 0), (0, 255, 0), (255, 0, 0)):  # the three axes of the annotated poses
        assert len(_colour_pixels(sheet, colour)) > 100, colour
