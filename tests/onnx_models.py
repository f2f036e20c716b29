"""Small ONNX models for the detector tests and benchmarks, built offline with onnx.helper.

- `mtcnn_pnet/rnet/onet`: the real MTCNN layer shapes with random weights (speed and plumbing);
- `designed_pnet`: a face is a bright square filling the middle 2/3 of a dark box; the PNet scores a
  12×12 cell by (mean of its centre 8×8) − (mean of its 2-px ring), so it fires where a cell matches
  such a box in position and size, with zero regression;
- `crop_net`: an RNet/ONet whose score is either the crop's mean brightness or the same centre-vs-ring
  rule at 24/48, with constant regression and landmarks given by the caller.
Every builder has knobs to break the contract on purpose (channels, fixed sizes, missing outputs).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Graph:
    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, arr: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def op(self, kind: str, inputs: Sequence[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        weight=None,
        bias=None,
        out: str | None = None,
        gain: float = 1.0,
    ) -> str:
        if weight is None:
            weight = self.rng.normal(0, gain * np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        if bias is None:
            bias = np.zeros(cout)
        return self.op(
            "Conv",
            [x, self.const(weight, "w"), self.const(bias, "b")],
            out,
            kernel_shape=[k, k],
            strides=[stride, stride],
        )

    def prelu(self, x: str, c: int, spatial: bool = True) -> str:
        slope = np.full((c, 1, 1) if spatial else (c,), 0.25)
        return self.op("PRelu", [x, self.const(slope, "slope")])

    def pool(self, x: str, k: int, s: int, ceil: bool = False) -> str:
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], ceil_mode=int(ceil))

    def fc(
        self, x: str, cin: int, cout: int, weight=None, bias=None, out: str | None = None, gain: float = 1.0
    ) -> str:
        if weight is None:
            weight = self.rng.normal(0, gain * np.sqrt(2.0 / cin), (cout, cin))
        if bias is None:
            bias = np.zeros(cout)
        return self.op("Gemm", [x, self.const(weight, "w"), self.const(bias, "b")], out, transB=1)

    def save(self, path: str | Path, input_shape: Sequence[int | str], outputs: Sequence[str]) -> Path:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
        graph = helper.make_graph(self.nodes, "net", [inp], [], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        # Declare the outputs with the shapes onnx infers, so they show up in error messages.
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
        model.graph.output.extend(inferred[o] for o in outputs)
        onnx.checker.check_model(model)
        path = Path(path)
        path.write_bytes(model.SerializeToString())
        return path


def _spatial(dynamic: bool, size: int) -> list[int | str]:
    return ["N", 3, "H", "W"] if dynamic else ["N", 3, size, size]


def mtcnn_pnet(
    path: str | Path,
    seed: int = 0,
    in_channels: int = 3,
    dynamic: bool = True,
    prob_bias: float = 0.0,
    gain: float = 1.0,
) -> Path:
    """conv3×3 10 → PReLU → maxpool 2 → conv3×3 16 → PReLU → conv3×3 32 → PReLU → 1×1 2 (softmax) + 1×1 4."""
    g = _Graph(seed)
    x = g.prelu(g.conv("input", in_channels, 10, 3, gain=gain), 10)
    x = g.pool(x, 2, 2)
    x = g.prelu(g.conv(x, 10, 16, 3, gain=gain), 16)
    x = g.prelu(g.conv(x, 16, 32, 3, gain=gain), 32)
    logits = g.conv(x, 32, 2, 1, bias=np.array([-prob_bias / 2, prob_bias / 2]), gain=gain)
    g.op("Softmax", [logits], "prob", axis=1)
    g.conv(x, 32, 4, 1, out="reg", gain=0.1)
    shape = ["N", in_channels, "H", "W"] if dynamic else ["N", in_channels, 12, 12]
    return g.save(path, shape, ["prob", "reg"])


def mtcnn_rnet(path: str | Path, seed: int = 0, prob_bias: float = 0.0) -> Path:
    """conv 28 → pool 3/2 → conv 48 → pool 3/2 → conv2×2 64 → fc 128 → (fc 2 softmax, fc 4)."""
    g = _Graph(seed)
    x = g.pool(g.prelu(g.conv("input", 3, 28, 3), 28), 3, 2, ceil=True)
    x = g.pool(g.prelu(g.conv(x, 28, 48, 3), 48), 3, 2, ceil=True)
    x = g.op("Flatten", [g.prelu(g.conv(x, 48, 64, 2), 64)], axis=1)
    x = g.prelu(g.fc(x, 576, 128), 128, spatial=False)
    g.op("Softmax", [g.fc(x, 128, 2, bias=np.array([-prob_bias / 2, prob_bias / 2]))], "prob", axis=1)
    g.fc(x, 128, 4, out="reg", gain=0.1)
    return g.save(path, ["N", 3, 24, 24], ["prob", "reg"])


def mtcnn_onet(path: str | Path, seed: int = 0) -> Path:
    """conv 32 → pool → conv 64 → pool → conv 64 → pool 2 → conv2×2 128 → fc 256 → (2, 4, 10)."""
    g = _Graph(seed)
    x = g.pool(g.prelu(g.conv("input", 3, 32, 3), 32), 3, 2, ceil=True)
    x = g.pool(g.prelu(g.conv(x, 32, 64, 3), 64), 3, 2, ceil=True)
    x = g.pool(g.prelu(g.conv(x, 64, 64, 3), 64), 2, 2, ceil=True)
    x = g.op("Flatten", [g.prelu(g.conv(x, 64, 128, 2), 128)], axis=1)
    x = g.prelu(g.fc(x, 1152, 256), 256, spatial=False)
    g.op("Softmax", [g.fc(x, 256, 2)], "prob", axis=1)
    g.fc(x, 256, 4, out="reg", gain=0.1)
    g.fc(x, 256, 10, out="landmarks", gain=0.1)
    return g.save(path, ["N", 3, 48, 48], ["prob", "reg", "landmarks"])


def ring_kernel(size: int, channels: int = 3) -> np.ndarray:
    """(1, C, size, size): +mean over the centre 2/3, −mean over the outer 1/6 ring (channel-averaged)."""
    m = size // 6
    inner = np.zeros((size, size), bool)
    inner[m : size - m, m : size - m] = True
    k = np.where(inner, 1.0 / inner.sum(), -1.0 / (~inner).sum()) / channels
    return np.broadcast_to(k, (1, channels, size, size)).copy()


def draw_faces(height: int, width: int, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Dark uint8 BGR image; each box gets a bright square over its middle 2/3 (the designed 'face')."""
    img = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        mx, my = (x2 - x1) / 6, (y2 - y1) / 6
        img[int(round(y1 + my)) : int(round(y2 - my)), int(round(x1 + mx)) : int(round(x2 - mx))] = 255
    return img


def designed_pnet(
    path: str | Path,
    threshold: float = 1.2,
    gain: float = 20.0,
    with_reg: bool = True,
    logits: bool = False,
    reg_channels: int = 4,
    names: tuple[str, str] = ("prob", "reg"),
) -> Path:
    """PNet firing where a 12×12 cell matches a `draw_faces` box; face probability sigmoid(gain·(r − t))."""
    g = _Graph()
    resp = g.conv("input", 3, 1, 12, stride=2, weight=ring_kernel(12), bias=np.array([-threshold]))
    two = g.conv(
        resp,
        1,
        2,
        1,
        weight=np.array([-gain / 2, gain / 2]).reshape(2, 1, 1, 1),
        out=names[0] if logits else None,
    )
    outputs = [names[0]]
    if not logits:
        g.op("Softmax", [two], names[0], axis=1)
    if with_reg:
        g.conv(resp, 1, reg_channels, 1, weight=np.zeros((reg_channels, 1, 1, 1)), out=names[1])
        outputs.append(names[1])
    return g.save(path, ["N", 3, "H", "W"], outputs)


def crop_net(
    path: str | Path,
    size: int = 24,
    score: str = "mean",
    threshold: float = 0.0,
    gain: float = 10.0,
    reg: Sequence[float] = (0, 0, 0, 0),
    landmarks: Sequence[float] | None = None,
    input_size: int | None = None,
    in_channels: int = 3,
) -> Path:
    """RNet (no landmarks) or ONet: score sigmoid(gain·(s − threshold)), s = mean brightness of the
    normalised crop ("mean") or the centre-vs-ring response ("ring"); constant reg and landmarks."""
    g = _Graph()
    insize = input_size or size
    if score == "mean":
        pooled = g.op("Flatten", [g.op("GlobalAveragePool", ["input"])], axis=1)
        s = g.fc(
            pooled,
            in_channels,
            1,
            weight=np.full((1, in_channels), 1.0 / in_channels),
            bias=np.array([-threshold]),
        )
    else:
        conv = g.conv(
            "input",
            in_channels,
            1,
            insize,
            weight=ring_kernel(insize, in_channels),
            bias=np.array([-threshold]),
        )
        s = g.op("Flatten", [conv], axis=1)
    g.op("Softmax", [g.fc(s, 1, 2, weight=np.array([[-gain / 2], [gain / 2]]))], "prob", axis=1)
    g.fc(s, 1, len(reg), weight=np.zeros((len(reg), 1)), bias=np.asarray(reg), out="reg")
    outputs = ["prob", "reg"]
    if landmarks is not None:
        g.fc(
            s,
            1,
            len(landmarks),
            weight=np.zeros((len(landmarks), 1)),
            bias=np.asarray(landmarks),
            out="landmarks",
        )
        outputs.append("landmarks")
    return g.save(path, ["N", in_channels, insize, insize], outputs)


# -- the real pretrained MTCNN (facenet-pytorch's weights), exported to ONNX ------------------------------
FACENET_CONTRACT = {"channels": "rgb", "mean": 127.5, "scale": 0.0078125, "landmark_layout": "xxyy"}
"""How facenet-pytorch feeds its nets (models/utils/detect_face.py): RGB, (x − 127.5) · 0.0078125, NCHW
in the image's own H × W order (its weights were converted so no transposition is needed; the W/H swap of
the MATLAB-trained original is inside the nets, as the permute before the dense layers), landmarks
x1..x5 y1..y5."""


def facenet_weights_dir() -> Path | None:
    """facenet-pytorch's `data/` folder (pnet.pt, rnet.pt, onet.pt) if it is installed, without importing
    the package (its __init__ needs requests and torchvision)."""
    import importlib.util

    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data if all((data / f"{n}.pt").is_file() for n in ("pnet", "rnet", "onet")) else None


def _facenet_modules():
    """PNet, RNet, ONet of the MTCNN paper, with facenet-pytorch's layer names (its state dict keys)."""
    from torch import nn

    def conv(name: str, cin: int, cout: int, k: int) -> list:
        return [(f"conv{name}", nn.Conv2d(cin, cout, k)), (f"prelu{name}", nn.PReLU(cout))]

    def pool(name: str, k: int) -> list:
        return [(f"pool{name}", nn.MaxPool2d(k, 2, ceil_mode=True))]

    def dense(name: str, cin: int, cout: int, prelu: bool = True) -> list:
        return [(f"dense{name}", nn.Linear(cin, cout))] + ([(f"prelu{name}", nn.PReLU(cout))] if prelu else [])

    class Net(nn.Module):
        """`trunk` in order, then the heads (first head: face probability, softmaxed)."""

        def __init__(self, trunk: list, flatten_after: str | None, heads: list) -> None:
            super().__init__()
            self.trunk, self.flatten_after, self.heads = [n for n, _ in trunk], flatten_after, [n for n, _ in heads]
            for name, layer in trunk + heads:
                setattr(self, name, layer)

        def forward(self, x):
            for name in self.trunk:
                x = getattr(self, name)(x)
                if name == self.flatten_after:  # the original's W, H, C order before the dense layers
                    x = x.permute(0, 3, 2, 1).flatten(1)
            outs = [getattr(self, name)(x) for name in self.heads]
            return (outs[0].softmax(dim=1), *outs[1:])

    return {
        "pnet": lambda: Net(conv("1", 3, 10, 3) + pool("1", 2) + conv("2", 10, 16, 3) + conv("3", 16, 32, 3), None,
                            [("conv4_1", nn.Conv2d(32, 2, 1)), ("conv4_2", nn.Conv2d(32, 4, 1))]),
        "rnet": lambda: Net(conv("1", 3, 28, 3) + pool("1", 3) + conv("2", 28, 48, 3) + pool("2", 3)
                            + conv("3", 48, 64, 2) + dense("4", 576, 128), "prelu3",
                            dense("5_1", 128, 2, False) + dense("5_2", 128, 4, False)),
        "onet": lambda: Net(conv("1", 3, 32, 3) + pool("1", 3) + conv("2", 32, 64, 3) + pool("2", 3)
                            + conv("3", 64, 64, 3) + [("pool3", nn.MaxPool2d(2, 2, ceil_mode=True))]
                            + conv("4", 64, 128, 2) + dense("5", 1152, 256), "prelu4",
                            dense("6_1", 256, 2, False) + dense("6_2", 256, 4, False) + dense("6_3", 256, 10, False)),
    }


def facenet_mtcnn(out_dir: str | Path) -> dict[str, Path]:
    """Export facenet-pytorch's pretrained PNet/RNet/ONet (MIT) to ONNX in `out_dir` (cached by name).

    The state dicts are loaded with `torch.load(weights_only=True)` (tensors only, no unpickling of
    code) into the modules above, which raise if a key or shape differs. Outputs are named prob, reg
    (and landmarks, in the xxyy layout); run them with `FACENET_CONTRACT`.
    """
    import torch

    weights = facenet_weights_dir()
    if weights is None:
        raise FileNotFoundError("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stage, make in _facenet_modules().items():
        path = paths[stage] = out_dir / f"facenet-{stage}.onnx"
        if path.is_file():
            continue
        net = make().eval()
        net.load_state_dict(torch.load(weights / f"{stage}.pt", weights_only=True))
        size = {"pnet": 12, "rnet": 24, "onet": 48}[stage]
        outputs = ["prob", "reg", "landmarks"] if stage == "onet" else ["prob", "reg"]
        axes = {"input": {0: "N", 2: "H", 3: "W"} if stage == "pnet" else {0: "N"}}
        axes.update({name: {0: "N", 2: "h", 3: "w"} if stage == "pnet" else {0: "N"} for name in outputs})
        tmp = path.with_suffix(".tmp")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(tmp), input_names=["input"],
                              output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        tmp.replace(path)
    return paths
