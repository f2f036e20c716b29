"""Build options: every value index.json records is the one that ran, and every bad value is a one-line error
naming the CLI flag, given before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from build_fixtures import demo_manifests
from click.testing import CliRunner
from onnx_models import mtcnn_pnet

from facedata.build import CascadeFactory, build_dataset
from facedata.cli import main
from facedata.detect import CascadeConfig
from facedata.manifest import Manifest
from facedata.samplers.mined import MiningRecipe
from facedata.samples import LABEL_PART, LABEL_POSITIVE, ORIGIN_DETECTIONS
from facedata.storage import ShardedDataset
from facedata.storage.index import load_index


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return demo_manifests(tmp_path_factory.mktemp("options"), seed=5, small=8)


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def face_sides(manifest: Manifest) -> np.ndarray:
    f = manifest.faces
    return np.minimum(f["x2"] - f["x1"], f["y2"] - f["y1"]).to_numpy()


def assert_no_face_under(path: Path, manifest: Manifest, ignore_under: float) -> int:
    """No positive or part sample was cut for a face whose shorter side is under `ignore_under`; returns how
    many were checked."""
    records = ShardedDataset(path).read(np.arange(len(ShardedDataset(path))))[1]
    rows = records[(records["origin"] == ORIGIN_DETECTIONS)
                   & np.isin(records["label"], [LABEL_POSITIVE, LABEL_PART])]
    sides = face_sides(manifest)[rows["face_index"]]
    assert (sides >= ignore_under).all(), f"{int((sides < ignore_under).sum())} samples of faces under {ignore_under}"
    return len(rows)


def cli_args(options: list[tuple]) -> list[str]:
    return [a for flag, value, _, _ in options for a in ((flag,) if value is None else (flag, value))]


def assert_recorded(provenance: dict, options: list[tuple]) -> None:
    for flag, _, path, expected in options:
        value = provenance
        for key in path:
            value = value[key]
        assert value == expected, flag


# every pnet option, a non-default value, and where index.json records it
PNET_OPTIONS = [
    ("--format", "parquet", ("backend",), "parquet"),
    ("--seed", "7", ("seed",), 7),
    ("--ratio", "2:1:1:1", ("ratio",), {"negative": 2.0, "positive": 1.0, "part": 1.0, "landmark": 1.0}),
    ("--allow-repeat", None, ("allow_repeat",), True),
    ("--interpolation", "area", ("crop_recipe", "interpolation"), "area"),
    ("--landmark-shifts", "4", ("landmark_recipe", "shifts_per_face"), 4),
    ("--landmark-ignore-under", "30", ("landmark_recipe", "ignore_under"), 30.0),
    ("--max-rotation", "3", ("landmark_recipe", "max_rotation"), 3.0),
    ("--no-mirror", None, ("landmark_recipe", "mirror"), False),
    ("--neg-iou", "0.25", ("crop_recipe", "negative_iou"), 0.25),
    ("--part-iou", "0.45", ("crop_recipe", "part_iou"), 0.45),
    ("--pos-iou", "0.7", ("crop_recipe", "positive_iou"), 0.7),
    ("--negatives-per-image", "12", ("crop_recipe", "negatives_per_image"), 12),
    ("--near-negatives", "2", ("crop_recipe", "near_negatives_per_face"), 2),
    ("--positive-tries", "9", ("crop_recipe", "positive_tries_per_face"), 9),
    ("--ignore-under", "30", ("crop_recipe", "ignore_under"), 30.0),
]


def test_every_pnet_option_is_recorded_as_it_ran(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "pnet"
    code, text = run("build", "pnet", *corpus["inputs"], "-o", out, "--workers", "1", "--shard-size", "64KB",
                     "--quiet", *cli_args(PNET_OPTIONS))
    assert code == 0, text
    index = load_index(out)
    prov = index["provenance"]
    assert_recorded(prov, PNET_OPTIONS)
    assert prov["landmark_recipe"]["interpolation"] == "area"
    # --shard-size: whole blocks of 1,024 samples, at least one
    assert index["samples_per_shard"] * index["bytes_per_sample"] <= max(64_000, 1024 * index["bytes_per_sample"])
    assert all(entry["samples"] == index["samples_per_shard"] for entry in index["shards"][:-1])
    # and what ran is what is recorded
    records = ShardedDataset(out).read(np.arange(index["samples"]))[1]
    assert not records["mirror"].any() and np.abs(records["angle"]).max() <= 3.0
    assert assert_no_face_under(out, corpus["det"], 30.0) > 0
    negatives = records[(records["origin"] == ORIGIN_DETECTIONS) & (records["label"] == 0)
                        & (records["face_index"] == -1)]
    assert np.bincount(negatives["image_index"]).max() <= 12


def test_mined_ignore_under_is_the_one_recorded_and_used(corpus: dict, tmp_path: Path) -> None:
    """A mining recipe with ignore_under 40 used to be recorded while the crop recipe's 20 ran."""
    pnet = mtcnn_pnet(tmp_path / "pnet.onnx", seed=1, prob_bias=0.8)
    factory = CascadeFactory(str(pnet), config=CascadeConfig(pyramid_min_face=20))
    out = tmp_path / "rnet"
    build_dataset(corpus["small"], None, out, stage="rnet", detector=factory, mix=False, workers=1,
                  progress=False, mining_recipe=MiningRecipe(size=24, ignore_under=40))
    prov = load_index(out)["provenance"]
    assert prov["mining_recipe"]["ignore_under"] == prov["crop_recipe"]["ignore_under"] == 40
    assert (face_sides(corpus["small"]) < 40).any()  # faces the rule must exclude exist
    assert_no_face_under(out, corpus["small"], 40.0)
    code, text = run("build", "rnet", "--detections", corpus["root"] / "det_small.parquet", "-o", tmp_path / "cli",
                     "--pnet", pnet, "--workers", "1", "--ignore-under", "40", "--quiet")
    assert code == 0, text
    prov = load_index(tmp_path / "cli")["provenance"]
    assert prov["mining_recipe"]["ignore_under"] == prov["crop_recipe"]["ignore_under"] == 40


# every option of build rnet that is not a pnet option, a non-default value, and where index.json records it
RNET_OPTIONS = [
    ("--ignore-under", "30", ("mining_recipe", "ignore_under"), 30.0),
    ("--max-neg-per-image", "7", ("mining_recipe", "max_negatives_per_image"), 7),
    ("--pad-border", None, ("mining_recipe", "pad_border"), True),
    ("--neg-iou", "0.25", ("mining_recipe", "negative_iou"), 0.25),
    ("--part-iou", "0.45", ("crop_recipe", "part_iou"), 0.45),
    ("--pos-iou", "0.7", ("mining_recipe", "positive_iou"), 0.7),
    ("--interpolation", "area", ("crop_recipe", "interpolation"), "area"),
    ("--pyramid-min-face", "40", ("detector", "config", "pyramid_min_face"), 40.0),
    ("--factor", "0.6", ("detector", "config", "factor"), 0.6),
    ("--thresholds", "0.5,0.6,0.7", ("detector", "config", "thresholds"), [0.5, 0.6, 0.7]),
    ("--mean", "127", ("detector", "contract", "mean"), 127.0),
    ("--scale", "0.01", ("detector", "contract", "scale"), 0.01),
    ("--channels", "rgb", ("detector", "contract", "channels"), "rgb"),
    ("--logits", None, ("detector", "contract", "logits"), True),
]


def test_every_rnet_option_is_recorded_as_it_ran(corpus: dict, tmp_path: Path) -> None:
    pnet = mtcnn_pnet(tmp_path / "pnet.onnx", seed=1, prob_bias=0.8)
    code, text = run("build", "rnet", "--detections", corpus["root"] / "det_small.parquet", "-o", tmp_path / "rnet",
                     "--pnet", pnet, "--workers", "1", "--quiet", "--ratio", "all", *cli_args(RNET_OPTIONS))
    assert code == 0, text
    prov = load_index(tmp_path / "rnet")["provenance"]
    assert_recorded(prov, RNET_OPTIONS)
    # the labels' crop recipe is the mining recipe's: the same thresholds and ignore_under
    for key in ("negative_iou", "part_iou", "positive_iou", "ignore_under"):
        assert prov["crop_recipe"][key] == prov["mining_recipe"][key], key
    assert prov["detector"]["pnet"]["sha256"] and prov["ratio"] is None


BAD = [
    ("--ignore-under", "nan", "must be a finite number >= 0, got nan"),
    ("--ignore-under", "inf", "must be a finite number >= 0, got inf"),
    ("--ignore-under", "-1", "must be a finite number >= 0, got -1"),
    ("--landmark-ignore-under", "nan", "must be a finite number >= 0"),
    ("--max-rotation", "200", "must be a finite number from 0 to 180"),
    ("--max-rotation", "-inf", "must be a finite number from 0 to 180"),
    ("--neg-iou", "1.5", "must be a finite number from 0 to 1"),
    ("--part-iou", "nan", "must be a finite number from 0 to 1"),
    ("--pos-iou", "-0.1", "must be a finite number from 0 to 1"),
    ("--negatives-per-image", "1e9", "must be an integer from 0 to 100000"),
    ("--negatives-per-image", "-5", "must be an integer from 0 to 100000"),
    ("--near-negatives", "2.5", "must be an integer from 0 to 10000"),
    ("--positive-tries", "1000000000", "must be an integer from 0 to 10000"),
    ("--landmark-shifts", "nan", "must be an integer from 0 to 1000"),
    ("--workers", "0", "must be an integer from 1 to 1024"),
    ("--workers", "-2", "must be an integer from 1 to 1024"),
    ("--seed", "-1", "must be an integer from 0 to 4294967295"),
    ("--seed", "4294967296", "must be an integer from 0 to 4294967295"),
    ("--shard-size", "nan", "must be a size from 1 byte to 1TiB"),
    ("--shard-size", "inf", "must be a size from 1 byte to 1TiB"),
    ("--shard-size", "-5MB", "must be a size from 1 byte to 1TiB"),
    ("--shard-size", "0", "must be a size from 1 byte to 1TiB"),
    ("--shard-size", "12 parsecs", "must be a size from 1 byte to 1TiB"),
    ("--ratio", "0:0:0:0", "the positive share must be > 0"),
    ("--ratio", "3:1:1", "expected neg:pos:part:landmark"),
    ("--ratio", "3:nan:1:2", "expected neg:pos:part:landmark"),
    ("--ratio", "3:inf:1:2", "expected neg:pos:part:landmark"),
    ("--ratio", "-3:1:1:2", "expected neg:pos:part:landmark"),
]


@pytest.mark.parametrize(("flag", "value", "message"), BAD)
def test_bad_option_values_name_the_flag_before_anything_is_written(
    corpus: dict, tmp_path: Path, flag: str, value: str, message: str
) -> None:
    out = tmp_path / "out"
    code, text = run("build", "pnet", *corpus["inputs"], "-o", out, "--quiet", flag, value)
    assert code == 2
    assert text == f"error: Invalid value for '{flag}': {text.split(': ', 2)[2]}"
    assert message in text and len(text.strip().splitlines()) == 1
    assert not out.exists()


def test_iou_thresholds_out_of_order_name_the_three_flags(corpus: dict, tmp_path: Path) -> None:
    code, text = run("build", "pnet", *corpus["inputs"], "-o", tmp_path / "out", "--neg-iou", "0.5",
                     "--part-iou", "0.4")
    assert code == 2 and "'--neg-iou', '--part-iou', '--pos-iou'" in text and "0.5, 0.4, 0.65" in text
    assert not (tmp_path / "out").exists()


MINING_BAD = [
    ("--ignore-under", "nan", "must be a finite number >= 0, got nan"),
    ("--max-neg-per-image", "-1", "must be an integer from 0 to 100000, got -1"),
    ("--max-neg-per-image", "1e9", "'1e9' is not a valid integer"),
    ("--pyramid-min-face", "inf", "must be a finite number >= 1, got inf"),
    ("--factor", "1.5", "must be a finite number from 0.01 to 0.99, got 1.5"),
    ("--factor", "nan", "must be a finite number from 0.01 to 0.99, got nan"),
    ("--thresholds", "0.3,nan,0.7", "must be a finite number from 0 to 1, got nan"),
    ("--thresholds", "0.3,2,0.7", "must be a finite number from 0 to 1, got 2.0"),
    ("--mean", "inf", "must be a finite number, got inf"),
    ("--scale", "nan", "must be a finite number, got nan"),
    ("--threads", "0", "must be an integer from 1 to 256, got 0"),
    ("--threads", "x", "'x' is not a valid integer"),
]


@pytest.mark.parametrize(("flag", "value", "message"), MINING_BAD)
def test_bad_mining_option_values_name_the_flag(corpus: dict, tmp_path: Path, flag: str, value: str,
                                                message: str) -> None:
    pnet = mtcnn_pnet(tmp_path / "pnet.onnx", seed=1)
    out = tmp_path / "out"
    code, text = run("build", "rnet", "--detections", corpus["root"] / "det_small.parquet", "-o", out, "--pnet", pnet,
                     "--quiet", flag, value)
    assert code == 2 and text.startswith(f"error: Invalid value for '{flag}'") and message in text, text
    assert len(text.strip().splitlines()) == 1 and not out.exists()
