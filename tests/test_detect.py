"""The MTCNN cascade on real onnxruntime with ONNX models built in the tests (tests/onnx_models.py)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from onnx_models import crop_net, designed_pnet, draw_faces, mtcnn_onet, mtcnn_pnet, mtcnn_rnet

from facedata.cli import main
from facedata.detect import Cascade, CascadeConfig, ModelContract, crop_batch, load_stage, square_boxes
from facedata.detect.nms import Lattice, lattice_nms, nms, overlap_pairs
from facedata.errors import FacedataError
from facedata.samplers.iou import iou_matrix

FACES = [[50, 60, 110, 120], [300, 200, 340, 240], [500, 100, 590, 190], [150, 250, 270, 370]]
LANDMARKS = [0.3, 0.3, 0.7, 0.3, 0.5, 0.5, 0.35, 0.7, 0.65, 0.7]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {
        "pnet": mtcnn_pnet(d / "pnet.onnx"),
        "rnet": mtcnn_rnet(d / "rnet.onnx"),
        "onet": mtcnn_onet(d / "onet.onnx"),
        "dpnet": designed_pnet(d / "dpnet.onnx"),
        "drnet": crop_net(d / "drnet.onnx", 24, score="ring", threshold=1.0),
        "donet": crop_net(d / "donet.onnx", 48, score="ring", threshold=1.0, landmarks=LANDMARKS),
    }


# -- 1. real MTCNN layer shapes on a real image --------------------------------------------------------
def test_mtcnn_shaped_models_on_real_image(models, realdata):
    path = next(iter(sorted((realdata / "wflw" / "WFLW_images").rglob("*.jpg"))))
    image = cv2.imread(str(path))
    cascade = Cascade(
        models["pnet"],
        models["rnet"],
        models["onet"],
        config=CascadeConfig(pyramid_min_face=48, thresholds=(0.6, 0.5, 0.5)),
    )
    h, w = image.shape[:2]
    scales = cascade.scales(h, w)
    assert scales[0] == pytest.approx(12 / 48) and min(int(h * scales[-1]), int(w * scales[-1])) >= 12
    level = cv2.resize(image, (int(w * scales[0]), int(h * scales[0])))
    prob, reg = cascade.pnet(cascade._normalise(level))
    mh, mw = (level.shape[0] - 12) // 2 + 1, (level.shape[1] - 12) // 2 + 1
    assert prob.shape == (1, 2, mh, mw) and reg.shape == (1, 4, mh, mw)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    dets = cascade.detect(image)
    assert len(dets.proposals) == 3 and dets.proposals[0] > 0
    assert dets.boxes.shape == (len(dets), 4) and dets.boxes.dtype == np.float32
    assert dets.landmarks is not None and dets.landmarks.shape == (len(dets), 5, 2)
    assert (dets.scores > 0.5).all()
    out = cascade.onet(np.zeros((3, 3, 48, 48), np.float32))
    assert [o.shape for o in out] == [(3, 2), (3, 4), (3, 10)]


# -- 2. designed models: the expected detections are known --------------------------------------------
def _match(dets_boxes: np.ndarray, faces) -> np.ndarray:
    return iou_matrix(dets_boxes, np.asarray(faces, np.float64))


def test_designed_pnet_finds_the_faces(models):
    image = draw_faces(420, 700, FACES)
    dets = Cascade(models["dpnet"]).detect(image)
    iou = _match(dets.boxes, FACES)
    assert (iou.max(axis=0) > 0.5).all(), iou.max(axis=0)  # every face found
    assert (iou.max(axis=1) > 0.3).all()  # nothing found on the dark background
    assert (np.diff(dets.scores) <= 0).all()


def test_designed_full_cascade_one_box_per_face_with_landmarks(models):
    image = draw_faces(420, 700, FACES)
    cascade = Cascade(models["dpnet"], models["drnet"], models["donet"])
    dets = cascade.detect(image)
    iou = _match(dets.boxes, FACES)
    assert len(dets) == len(FACES), dets.boxes
    assert (iou.max(axis=1) > 0.6).all() and len(set(iou.argmax(axis=1))) == len(FACES)
    # landmarks are the ONet's constant fractions of the squared box it scored
    frac = np.asarray(LANDMARKS).reshape(5, 2)
    for box, points in zip(dets.boxes, dets.landmarks, strict=True):
        side = box[2] - box[0]  # ONet reg is 0 and its input box was square: the output box is that square
        np.testing.assert_allclose(points, box[:2] + frac * side, atol=1e-3)


def test_same_result_from_python_callables(models):
    """A callable stage (e.g. a live torch model) gives what the ONNX file gives."""
    import onnxruntime as ort

    image = draw_faces(420, 700, FACES)
    sessions = {k: ort.InferenceSession(str(models[k])) for k in ("dpnet", "drnet")}

    def wrap(session):
        return lambda batch: tuple(session.run(None, {"input": batch}))

    a = Cascade(models["dpnet"], models["drnet"]).detect(image)
    b = Cascade(wrap(sessions["dpnet"]), wrap(sessions["drnet"])).detect(image)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    assert a.proposals == b.proposals


def test_rnet_and_onet_pass_known_scores_and_regression(models, tmp_path):
    image = np.zeros((200, 300, 3), np.uint8)
    image[:, 150:] = 255  # right half bright: crops there score high with the "mean" RNet
    reg = (0.1, -0.05, 0.2, 0.0)
    rnet = crop_net(tmp_path / "r.onnx", 24, score="mean", reg=reg)
    onet = crop_net(tmp_path / "o.onnx", 48, score="mean", reg=reg, landmarks=LANDMARKS)
    cascade = Cascade(models["dpnet"], rnet, onet, config=CascadeConfig(thresholds=(0.6, 0.9, 0.9)))
    boxes = np.array([[10, 10, 50, 40], [180, 20, 220, 60], [200, 120, 260, 180], [60, 100, 100, 140.4]])
    expected_squares = square_boxes(boxes[1:3])  # the bright ones
    out = cascade.rnet_boxes(image, boxes)
    side = expected_squares[:, 2:3] - expected_squares[:, 0:1]
    want = expected_squares + np.asarray(reg) * side
    order = np.argsort(out.boxes[:, 0])
    np.testing.assert_allclose(out.boxes[order], want, atol=1e-4)
    assert (out.scores > 0.99).all()
    out = cascade.onet_boxes(image, boxes)
    order = np.argsort(out.boxes[:, 0])
    np.testing.assert_allclose(out.boxes[order], want, atol=1e-4)
    np.testing.assert_allclose(
        out.landmarks[order],
        expected_squares[:, None, :2] + np.asarray(LANDMARKS).reshape(5, 2) * side[:, None],
        atol=1e-3,
    )


def test_logits_contract_applies_softmax(tmp_path):
    image = draw_faces(420, 700, FACES)
    soft = Cascade(designed_pnet(tmp_path / "s.onnx")).detect(image)
    raw = Cascade(
        designed_pnet(tmp_path / "l.onnx", logits=True), contract=ModelContract(logits=True)
    ).detect(image)
    np.testing.assert_allclose(soft.boxes, raw.boxes, atol=1e-4)
    np.testing.assert_allclose(soft.scores, raw.scores, atol=1e-5)


def test_rgb_contract_swaps_channels():
    seen = []

    def pnet(batch):
        seen.append(batch[0, :, 0, 0].copy())
        n, _, h, w = batch.shape
        mh, mw = (h - 12) // 2 + 1, (w - 12) // 2 + 1
        return np.zeros((n, 2, mh, mw), np.float32), np.zeros((n, 4, mh, mw), np.float32)

    image = np.zeros((40, 40, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    Cascade(pnet, contract=ModelContract(channels="rgb", mean=0, scale=1)).detect(image)
    np.testing.assert_allclose(seen[0], [0, 0, 255])
    seen.clear()
    Cascade(pnet, contract=ModelContract(mean=0, scale=1)).detect(image)
    np.testing.assert_allclose(seen[0], [255, 0, 0])


def test_crop_batch_matches_padded_resize():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 58, 68], [-12, -12, 36, 36], [100, 50, 148, 98]])
    crops = crop_batch(image, boxes, 24)
    padded = cv2.copyMakeBorder(image, 50, 50, 50, 50, cv2.BORDER_CONSTANT, value=0)
    for box, crop in zip(boxes, crops, strict=True):
        x1, y1, x2, y2 = box + 50
        ref = cv2.resize(padded[y1:y2, x1:x2], (24, 24), interpolation=cv2.INTER_LINEAR)
        assert np.abs(crop.astype(int) - ref).max() <= 2  # fixed-point rounding of the two kernels


# -- 3. wrong contracts ---------------------------------------------------------------------------------
def test_wrong_input_channels(tmp_path):
    path = mtcnn_pnet(tmp_path / "gray.onnx", in_channels=1)
    with pytest.raises(FacedataError, match=r"input has 1 channel\(s\), expected 3") as err:
        load_stage(path, "pnet")
    assert "'input' [N, 1, H, W]" in str(err.value) and "Expected input N×3×H×W" in str(err.value)


def test_missing_output(tmp_path):
    path = designed_pnet(tmp_path / "noreg.onnx", with_reg=False)
    with pytest.raises(FacedataError, match=r"no output shaped like reg \(4 channels\)") as err:
        load_stage(path, "pnet")
    assert "outputs 'prob'" in str(err.value)
    with pytest.raises(
        FacedataError, match=r"no output named 'boxes' \(given for reg\); outputs are \['prob'\]"
    ):
        load_stage(path, "pnet", ModelContract(reg_output="boxes"))


def test_wrong_output_shape(tmp_path):
    with pytest.raises(FacedataError, match=r"no output shaped like reg"):
        load_stage(designed_pnet(tmp_path / "reg3.onnx", reg_channels=3), "pnet")
    with pytest.raises(FacedataError, match=r"RNet model .* no output shaped like reg"):
        load_stage(crop_net(tmp_path / "r3.onnx", 24, reg=(0, 0, 0)), "rnet")
    with pytest.raises(FacedataError, match=r"no output shaped like landmarks"):
        load_stage(crop_net(tmp_path / "o.onnx", 48), "onet")
    with pytest.raises(FacedataError, match=r"reg output has shape \[1, 3\], expected N×4"):
        load_stage(lambda b: (np.zeros((len(b), 2)), np.zeros((len(b), 3))), "rnet")(np.zeros((1, 3, 24, 24)))


def test_wrong_input_size(tmp_path):
    with pytest.raises(FacedataError, match=r"input size \[12, 12\], expected 24×24"):
        load_stage(crop_net(tmp_path / "r12.onnx", 12), "rnet")
    with pytest.raises(FacedataError, match=r"height/width fixed at \[12, 12\]"):
        load_stage(mtcnn_pnet(tmp_path / "fixed.onnx", dynamic=False), "pnet")
    with pytest.raises(FacedataError, match="model not found"):
        load_stage(tmp_path / "nope.onnx", "pnet")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(FacedataError, match="--onet .*junk.onnx: not an ONNX model onnxruntime can load"):
        load_stage(tmp_path / "junk.onnx", "onet")


def test_outputs_found_by_name(tmp_path):
    path = designed_pnet(tmp_path / "named.onnx", names=("a", "b"))
    stage = load_stage(path, "pnet", ModelContract(prob_output="a", reg_output="b"))
    prob, reg = stage(np.zeros((1, 3, 30, 40), np.float32))
    assert prob.shape == (1, 2, 10, 15) and reg.shape == (1, 4, 10, 15)


# -- 4. NMS against the reference greedy loop -----------------------------------------------------------
def _brute_nms(boxes, scores, threshold, mode):
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(len(order), bool)
    keep = []
    for p, i in enumerate(order):
        if not alive[p]:
            continue
        keep.append(i)
        rest = order[p + 1 :]
        ov = overlap_pairs(np.repeat(boxes[i : i + 1], len(rest), axis=0), boxes[rest], mode)
        alive[p + 1 :] &= ~(ov > threshold)
    return np.array(keep, np.int64)


@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_matches_brute_force(mode):
    rng = np.random.default_rng(7)
    for _ in range(60):
        n = int(rng.integers(0, 600))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(0, 60, (n, 2)) * rng.choice([0.2, 1, 4], (n, 1))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.integers(0, 30, n).astype(float)  # many ties
        t = float(rng.choice([0.0, 0.3, 0.5, 0.7, 0.95]))
        np.testing.assert_array_equal(nms(boxes, scores, t, mode), _brute_nms(boxes, scores, t, mode))


def test_nms_dense_grid_like_pnet():
    ys, xs = np.mgrid[0:60, 0:80]
    boxes = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], axis=-1).reshape(-1, 4).astype(float)
    scores = np.random.default_rng(3).random(len(boxes))
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), _brute_nms(boxes, scores, 0.5, "union"))



def _random_lattices(rng, factor, n_levels, density):
    """PNet-like levels of a 200x150 image: cells above a random threshold, true per-axis resize ratios."""
    levels, s = [], 12 / 20
    for _ in range(n_levels):
        lw, lh = int(200 * s), int(150 * s)
        mh, mw = (lh - 12) // 2 + 1, (lw - 12) // 2 + 1
        if min(mh, mw) < 1:
            break
        rows, cols = np.nonzero(rng.random((mh, mw)) < density)
        rx, ry = 200 / lw, 150 / lh
        boxes = np.stack([2 * cols * rx, 2 * rows * ry, (2 * cols + 12) * rx, (2 * rows + 12) * ry], axis=1)
        scores = rng.integers(0, 20, len(cols)).astype(np.float32) / 20  # many ties
        levels.append(Lattice(cols, rows, boxes.astype(np.float64), scores, 12, 2))
        s *= factor
    return levels


@pytest.mark.parametrize("factor", [0.79, 0.95])
def test_lattice_nms_equals_generic_nms(factor):
    """Same indices as nms() on the concatenated boxes, within a level and across levels (factor 0.95
    puts levels close enough in size for cross-level suppression at every threshold tested)."""
    rng = np.random.default_rng(11)
    for t in (0.0, 0.3, 0.5, 0.6, 0.7, 0.9):
        for density in (0.05, 0.4, 1.0) if t > 0 else (0.05,):  # t = 0: every touching pair overlaps
            levels = _random_lattices(rng, factor, 4, density)
            boxes = np.concatenate([lv.boxes for lv in levels])
            scores = np.concatenate([lv.scores for lv in levels])
            np.testing.assert_array_equal(lattice_nms(levels, t), nms(boxes, scores, t))
            np.testing.assert_array_equal(lattice_nms(levels[:1], t), nms(levels[0].boxes, levels[0].scores, t))
            # the cascade's merged NMS over levels already NMS-ed at t: within-level pairs are skipped
            kept = [lv.subset(lattice_nms([lv], t)) for lv in levels]
            merged = min(1.0, t + 0.2)
            np.testing.assert_array_equal(
                lattice_nms(kept, merged, levels_nms=t),
                nms(np.concatenate([lv.boxes for lv in kept]), np.concatenate([lv.scores for lv in kept]), merged),
            )

# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_detect_draws_boxes(models, tmp_path):
    image_path = tmp_path / "faces.png"
    cv2.imwrite(str(image_path), draw_faces(420, 700, FACES))
    out = tmp_path / "out.jpg"
    args = [
        "detect",
        str(image_path),
        "--pnet",
        str(models["dpnet"]),
        "--rnet",
        str(models["drnet"]),
        "--onet",
        str(models["donet"]),
        "--thresholds",
        "0.6,0.7,0.7",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert re.search(rf"^{len(FACES)} face\(s\) in faces.png", result.output, re.M)
    drawn = cv2.imread(str(out))
    assert drawn.shape == (420, 700, 3)
    green = (drawn[..., 1] > 180) & (drawn[..., 2] < 100) & (drawn[..., 0] < 100)
    assert green.sum() > 100  # box outlines (faces are white, background black)

    bad = CliRunner().invoke(main, ["detect", str(image_path), "--pnet", str(models["rnet"])])
    assert bad.exit_code == 2 and "does not fit the contract" in bad.output
    bad = CliRunner().invoke(
        main, ["detect", str(image_path), "--pnet", str(models["dpnet"]), "--thresholds", "1,2"]
    )
    assert bad.exit_code == 2 and "three comma-separated numbers" in bad.output
