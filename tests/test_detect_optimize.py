"""The exact PReLU rewrite of stage models (facedata.detect.optimize) on real onnxruntime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx_models import mtcnn_onet, mtcnn_pnet, mtcnn_rnet

from facedata.detect.optimize import fast_prelu


def _with_slopes(path: Path, low: float, high: float, seed: int) -> bytes:
    """The model with every PRelu slope redrawn per channel from [low, high]."""
    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    prelu_slopes = {n.input[1] for n in model.graph.node if n.op_type == "PRelu"}
    for init in model.graph.initializer:
        if init.name in prelu_slopes:
            shape = numpy_helper.to_array(init).shape
            init.CopyFrom(numpy_helper.from_array(rng.uniform(low, high, shape).astype(np.float32), init.name))
    return model.SerializeToString()


def _run(model: bytes, batch: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]).run(None, {"input": batch})


def _ops(model: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(model).graph.node]


@pytest.mark.parametrize(("low", "high", "rewritten"), [(-0.5, 1.0, True), (1.0, 3.0, True), (0.2, 2.0, False)])
@pytest.mark.parametrize("stage", ["pnet", "rnet", "onet"])
def test_rewrite_gives_bit_identical_outputs(tmp_path: Path, stage: str, low: float, high: float,
                                             rewritten: bool) -> None:
    build, hw = {"pnet": (mtcnn_pnet, (70, 95)), "rnet": (mtcnn_rnet, (24, 24)), "onet": (mtcnn_onet, (48, 48))}[stage]
    original = _with_slopes(build(tmp_path / f"{stage}.onnx", seed=3), low, high, seed=4)
    fast = fast_prelu(original)
    before, after = _ops(original).count("PRelu"), _ops(fast).count("PRelu")
    if rewritten:  # every convolutional PReLU (the fully connected ones of RNet/ONet stay)
        assert after == {"pnet": 0, "rnet": 1, "onet": 1}[stage] < before
        assert {"Max", "Min"} & set(_ops(fast))
    else:
        assert after == before
    rng = np.random.default_rng(5)
    for batch in (rng.normal(0, 1, (3, 3, *hw)), rng.uniform(-1, 1, (3, 3, *hw)) * (rng.random((3, 1, *hw)) < 0.5)):
        batch = batch.astype(np.float32)
        for a, b in zip(_run(original, batch), _run(fast, batch), strict=True):
            np.testing.assert_array_equal(a, b)


def test_models_without_prelu_come_back_unchanged(tmp_path: Path) -> None:
    model = onnx.load(str(mtcnn_pnet(tmp_path / "p.onnx")))
    for node in model.graph.node:
        if node.op_type == "PRelu":
            node.op_type, node.input[:] = "Relu", node.input[:1]
    data = model.SerializeToString()
    assert fast_prelu(data) is data


def test_a_rewrite_onnxruntime_rejects_falls_back_to_the_model_as_given(tmp_path: Path) -> None:
    """PRelu over a 5-D tensor with per-"channel" slopes (C, 1, 1): the 1x1 Conv of the rewrite is not valid
    there, so the stage loads the original graph (and still computes PReLU)."""
    from onnx import TensorProto, helper

    from facedata.detect.models import ModelContract, OnnxStage

    slope = numpy_helper.from_array(np.array([0.1, 0.2, 0.3, 0.4], np.float32).reshape(4, 1, 1), "slope")
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["input", "slope"], ["out"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 4, 5, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 4, 5, 6])], [slope],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    assert "PRelu" not in _ops(fast_prelu(data))  # rewritten, into a graph onnxruntime rejects
    stage = object.__new__(OnnxStage)
    stage.path, stage.stage, stage.contract = tmp_path / "odd.onnx", "pnet", ModelContract()
    session = stage._load(data, ort.SessionOptions())
    x = np.random.default_rng(0).normal(0, 1, (1, 2, 4, 5, 6)).astype(np.float32)
    expected = np.where(x >= 0, x, x * np.array([0.1, 0.2, 0.3, 0.4], np.float32).reshape(4, 1, 1))
    np.testing.assert_array_equal(session.run(None, {"input": x})[0], expected)
