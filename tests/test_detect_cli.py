"""The `detect` command and the cascade options of the mining builds, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from onnx_models import crop_net, designed_pnet, draw_faces, mtcnn_pnet

from facedata.build import CascadeFactory
from facedata.cli import main
from facedata.detect import Cascade, CascadeConfig, ModelContract
from facedata.detect.settings import DETECTION_THRESHOLDS, MINING_THRESHOLDS
from facedata.manifest import ManifestBuilder
from facedata.storage.index import load_index

FACES = [[50, 60, 110, 120], [300, 200, 340, 240], [500, 100, 590, 190], [150, 250, 270, 370]]
# Five points in the box, no two with the same x or y: reading one layout as the other moves every point.
POINTS = np.array([[0.31, 0.33], [0.69, 0.35], [0.52, 0.55], [0.36, 0.72], [0.66, 0.74]])
LAYOUT = {"xyxy": POINTS.reshape(-1), "xxyy": POINTS.T.reshape(-1)}


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _default(help_text: str, option: str) -> str:
    """The `[default: ...]` click shows after an option's help (help lines re-joined)."""
    text = " ".join(help_text.split())
    start = text.index(option)
    return re.search(r"\[default: ([^\]]+)\]", text[start:]).group(1).replace(" ", "")


@pytest.fixture(scope="module")
def faces_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "faces.png"
    cv2.imwrite(str(path), draw_faces(420, 700, FACES))
    return path


# -- thresholds: detection defaults for detect, mining defaults for the builds ---------------------------
def test_threshold_defaults_help_and_provenance(tmp_path):
    code, text, _ = _invoke(["detect", "--help"])
    assert code == 0 and _default(text, "--thresholds") == "0.6,0.7,0.7"
    assert tuple(map(float, _default(text, "--thresholds").split(","))) == DETECTION_THRESHOLDS
    for stage in ("rnet", "onet"):
        code, text, _ = _invoke(["build", stage, "--help"])
        assert code == 0 and tuple(map(float, _default(text, "--thresholds").split(","))) == MINING_THRESHOLDS
        assert "recall" in " ".join(text.split())  # says why
    assert MINING_THRESHOLDS == (0.3, 0.1, 0.7)

    # A build with the default thresholds records them, and they are what ran: re-running the recorded
    # PNet configuration on each image gives the detection counts of the mining report.
    root = tmp_path / "images"
    root.mkdir()
    builder = ManifestBuilder("test", "train", "images")
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 256, (160, 200, 3), np.uint8)
        cv2.imwrite(str(root / f"img{i}.jpg"), image)
        builder.add_image(f"img{i}", f"img{i}.jpg", width=200, height=160)
        builder.add_faces(f"img{i}", np.array([[40, 30, 100, 90]], np.float32))
    det = tmp_path / "det.parquet"
    builder.build({"roots": {"images": str(root)}}).write(det)
    pnet = mtcnn_pnet(tmp_path / "pnet.onnx", seed=1, prob_bias=0.5)
    out = tmp_path / "rnet"
    code, text, err = _invoke(["build", "rnet", "--detections", det, "--pnet", pnet, "-o", out, "--workers", "1",
                               "--pyramid-min-face", "40", "--quiet"])
    assert code == 0, text + err
    detector = load_index(out)["provenance"]["detector"]
    config = detector["config"]
    assert tuple(config["thresholds"]) == MINING_THRESHOLDS and config["pyramid_min_face"] == 40
    assert detector["thresholds_used"] == [MINING_THRESHOLDS[0]]  # build rnet runs PNet alone
    # the library's default is the mining setting too, not the detection one
    library = CascadeFactory(str(pnet)).describe()
    assert tuple(library["config"]["thresholds"]) == MINING_THRESHOLDS and library["thresholds_used"] == [0.3]
    report = pd.read_csv(out / "mining-report.csv")
    recorded = Cascade(pnet, config=CascadeConfig(pyramid_min_face=config["pyramid_min_face"], factor=config["factor"],
                                                  thresholds=tuple(config["thresholds"])))
    stricter = Cascade(pnet, config=CascadeConfig(pyramid_min_face=40, thresholds=DETECTION_THRESHOLDS))
    for _, row in report.iterrows():
        image = cv2.imread(str(root / Path(row["path"]).name))
        assert row["detections"] == len(recorded.pnet_boxes(image))
        assert row["detections"] > len(stricter.pnet_boxes(image))  # the defaults are not the detection ones


# -- landmark layout ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def layout_models(tmp_path_factory) -> dict[str, Path]:
    """A designed cascade whose ONet emits the constant POINTS in each layout."""
    d = tmp_path_factory.mktemp("layout")
    models = {"pnet": designed_pnet(d / "pnet.onnx"), "rnet": crop_net(d / "rnet.onnx", 24, score="ring",
                                                                         threshold=1.0)}
    for layout, values in LAYOUT.items():
        models[layout] = crop_net(d / f"onet-{layout}.onnx", 48, score="ring", threshold=1.0, landmarks=values)
    return models


def _detect_json(image: Path, models: dict[str, Path], onet: str, *extra: str) -> dict:
    code, out, err = _invoke(["detect", image, "--pnet", models["pnet"], "--rnet", models["rnet"],
                              "--onet", models[onet], "--json", *extra])
    assert code == 0, out + err
    return json.loads(out)  # stdout holds the JSON document and nothing else


def _expected_points(doc: dict) -> np.ndarray:
    """POINTS placed in each face's square: the box the ONet scored is the squared PNet/RNet box, and the
    designed nets have zero regression there, so it is the face's reported box."""
    boxes = np.array([f["box"] for f in doc["faces"]])
    side = boxes[:, 2] - boxes[:, 0]
    return boxes[:, None, :2] + POINTS[None] * side[:, None, None]


@pytest.mark.parametrize("layout", ["xyxy", "xxyy"])
def test_landmark_layout_option(faces_png, layout_models, layout):
    doc = _detect_json(faces_png, layout_models, layout, "--landmark-layout", layout)
    assert len(doc["faces"]) == len(FACES)
    points = np.array([f["landmarks"] for f in doc["faces"]])
    np.testing.assert_allclose(points, _expected_points(doc), atol=1e-3)
    other = "xxyy" if layout == "xyxy" else "xyxy"
    wrong = _detect_json(faces_png, layout_models, layout, "--landmark-layout", other)
    assert np.abs(np.array([f["landmarks"] for f in wrong["faces"]]) - _expected_points(wrong)).max() > 3


def test_default_landmark_layout_is_xyxy(faces_png, layout_models):
    doc = _detect_json(faces_png, layout_models, "xyxy")
    np.testing.assert_allclose(np.array([f["landmarks"] for f in doc["faces"]]), _expected_points(doc), atol=1e-3)
    assert ModelContract().landmark_layout == "xyxy"
    code, out, err = _invoke(["detect", faces_png, "--pnet", layout_models["pnet"], "--landmark-layout", "yx"])
    assert code == 2 and "--landmark-layout" in out + err


# -- detect --json ---------------------------------------------------------------------------------------
def test_detect_json_matches_the_library(faces_png, layout_models, tmp_path):
    drawn = tmp_path / "drawn.jpg"
    doc = _detect_json(faces_png, layout_models, "xxyy", "--landmark-layout", "xxyy", "-o", drawn)
    assert drawn.is_file()  # "wrote ..." went to stderr: stdout parsed as JSON above
    contract = ModelContract(landmark_layout="xxyy")
    dets = Cascade(layout_models["pnet"], layout_models["rnet"], layout_models["xxyy"], contract=contract).detect(
        cv2.imread(str(faces_png))
    )
    assert doc["image"] == str(faces_png) and doc["boxes_after_each_stage"] == list(dets.proposals)
    assert [set(f) for f in doc["faces"]] == [{"box", "score", "landmarks"}] * len(dets)
    np.testing.assert_allclose([f["box"] for f in doc["faces"]], dets.boxes, atol=1e-4)
    np.testing.assert_allclose([f["score"] for f in doc["faces"]], dets.scores, atol=1e-6)
    np.testing.assert_allclose([f["landmarks"] for f in doc["faces"]], dets.landmarks, atol=1e-4)
    scores = [f["score"] for f in doc["faces"]]
    assert scores == sorted(scores, reverse=True)
    # PNet only: no landmarks key; an image without faces: an empty list
    code, out, _ = _invoke(["detect", faces_png, "--pnet", layout_models["pnet"], "--json"])
    assert code == 0 and all("landmarks" not in f for f in json.loads(out)["faces"])
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((100, 120, 3), np.uint8))
    code, out, _ = _invoke(["detect", blank, "--pnet", layout_models["pnet"], "--json"])
    assert code == 0 and json.loads(out)["faces"] == []


@pytest.mark.parametrize(("option", "value"), [("--pyramid-min-face", "-1"), ("--factor", "5"), ("--factor", "0")])
def test_bad_cascade_option_is_one_line_naming_the_flag(faces_png, tmp_path, option, value):
    code, out, err = _invoke(["detect", "--pnet", mtcnn_pnet(tmp_path / "p.onnx"), faces_png, option, value])
    text = (out + err).strip()
    assert code != 0 and "Traceback" not in text
    assert len(text.splitlines()) == 1 and option in text and value in text


@pytest.mark.parametrize("args, flag", [
    (["--thresholds", "0.5,0.5,nan"], "--thresholds"), (["--threads", "-2"], "--threads"),
    (["--mean", "inf"], "--mean"),
])
def test_detect_checks_its_values_like_the_mining_builds(faces_png, layout_models, args, flag):
    code, text, err = _invoke(["detect", faces_png, "--pnet", layout_models["pnet"], *args])
    assert code == 2 and flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
