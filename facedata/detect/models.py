"""The model contract of the three cascade stages, and loading ONNX files or Python callables to it.

Contract (what `load_stage` checks and what the cascade feeds):
- input: one float32 NCHW tensor, pixels normalised as (x − mean) · scale (default (x − 127.5)/128),
  channel order BGR by default (the reference trains on cv2.imread images) or RGB;
- PNet: fully convolutional, input N×3×H×W with dynamic H and W, outputs a face-probability map
  N×2×h×w (channel 1 = face; a single-channel map is taken as the face probability) and a box
  regression map N×4×h×w, with h = (H − 12) // 2 + 1 and w likewise (cell 12, stride 2, no padding);
- RNet: N×3×24×24 → prob N×2, reg N×4; ONet: N×3×48×48 → prob N×2, reg N×4, landmarks N×10
  (N×C×1×1 outputs of convolutional heads are accepted too);
- probabilities are expected after softmax; with `logits=True` the loader applies the softmax (sigmoid
  for a single channel); regression is (dx1, dy1, dx2, dy2) as fractions of the box width/height;
  landmarks are fractions of the box, as (x, y) pairs ("xyxy": x1 y1 … x5 y5, the layout of the
  reference's training data and of facedata's shards, so of models trained on them) or five x then five
  y ("xxyy": x1 … x5 y1 … y5, what the original Caffe/MATLAB MTCNN and most converted models emit, e.g.
  facenet-pytorch's). Nothing in the outputs tells the two apart: the layout is part of the contract.
Outputs are found by name when the contract names them, else by shape from one probe forward pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from facedata.detect.optimize import fast_prelu
from facedata.detect.settings import LANDMARK_LAYOUTS
from facedata.errors import FacedataError
from facedata.samples import STAGE_SIZE

Stage = Literal["pnet", "rnet", "onet"]
_STAGE_NAME = {"pnet": "PNet", "rnet": "RNet", "onet": "ONet"}
_EXPECTED = {
    "pnet": "input N×3×H×W float32 with dynamic H, W; outputs prob N×2×h×w and reg N×4×h×w "
    "with h = (H − 12)//2 + 1",
    "rnet": "input N×3×24×24 float32; outputs prob N×2 and reg N×4",
    "onet": "input N×3×48×48 float32; outputs prob N×2, reg N×4 and landmarks N×10",
}
# Probe input for PNet: 24×30 must give a 7×10 map.
_PROBE_HW = (24, 30)


@dataclass(frozen=True)
class ModelContract:
    """How pixels are fed to the models and how their outputs are read (see module docstring)."""

    mean: float = 127.5
    scale: float = 0.0078125
    channels: str = "bgr"
    logits: bool = False
    prob_output: str | None = None
    reg_output: str | None = None
    landmark_output: str | None = None
    landmark_layout: str = "xyxy"

    def __post_init__(self) -> None:
        if self.channels not in ("bgr", "rgb"):
            raise FacedataError(f"model contract: channels must be 'bgr' or 'rgb', not {self.channels!r}")
        if self.landmark_layout not in LANDMARK_LAYOUTS:
            raise FacedataError(
                f"model contract: landmark_layout must be 'xyxy' or 'xxyy', not {self.landmark_layout!r}"
            )

    def output_names(self, stage: Stage) -> list[str | None]:
        names = [self.prob_output, self.reg_output]
        return names + [self.landmark_output] if stage == "onet" else names


class StageModel(Protocol):
    """A stage: NCHW float32 batch in, (prob, reg[, landmarks]) numpy arrays out."""

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]: ...


def _softmax(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _fmt_shape(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def _check_outputs(stage: Stage, outs: Sequence[np.ndarray], batch_shape: tuple[int, ...]) -> str | None:
    """Why (prob, reg[, landmarks]) outputs do not fit a batch of `batch_shape`, or None if they do."""
    n = batch_shape[0]
    want = 3 if stage == "onet" else 2
    if len(outs) < want:
        return f"{len(outs)} output(s), expected {want}"
    if stage == "pnet":
        mh, mw = (batch_shape[2] - 12) // 2 + 1, (batch_shape[3] - 12) // 2 + 1
        for what, arr, chans in (("prob", outs[0], (1, 2)), ("reg", outs[1], (4,))):
            if arr.ndim != 4 or arr.shape[0] != n or arr.shape[1] not in chans:
                return f"{what} output has shape {list(arr.shape)}, expected N×{chans[-1]}×h×w"
            if arr.shape[2:] != (mh, mw):
                return (
                    f"{what} map is {arr.shape[2]}×{arr.shape[3]} for a {batch_shape[2]}×{batch_shape[3]} "
                    f"input, expected {mh}×{mw} (cell 12, stride 2, no padding)"
                )
        return None
    heads = [("prob", outs[0], (1, 2)), ("reg", outs[1], (4,))]
    if stage == "onet":
        heads.append(("landmarks", outs[2], (10,)))
    for what, arr, chans in heads:
        flat_ok = arr.ndim == 2 or (arr.ndim == 4 and arr.shape[2:] == (1, 1))
        if not flat_ok or arr.shape[0] != n or arr.shape[1] not in chans:
            return f"{what} output has shape {list(arr.shape)}, expected N×{chans[-1]}"
    return None


def _finish(stage: Stage, outs: Sequence[np.ndarray], logits: bool) -> tuple[np.ndarray, ...]:
    """Flatten N×C×1×1 heads, apply the softmax when the model gives logits, cast to float32."""
    want = 3 if stage == "onet" else 2
    result = []
    for i, arr in enumerate(outs[:want]):
        arr = np.asarray(arr, dtype=np.float32)
        if stage != "pnet":
            arr = arr.reshape(arr.shape[0], -1)
        if i == 0 and logits:
            arr = _softmax(arr)
        result.append(arr)
    return tuple(result)


class CallableStage:
    """A user's Python callable (e.g. a live PyTorch/MindSpore model returning numpy), checked per call."""

    def __init__(
        self, fn: Callable[[np.ndarray], Sequence[np.ndarray]], stage: Stage, contract: ModelContract
    ):
        self.fn, self.stage, self.contract = fn, stage, contract

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        outs = self.fn(batch)
        if isinstance(outs, np.ndarray):
            outs = (outs,)
        outs = [np.asarray(o) for o in outs]
        problem = _check_outputs(self.stage, outs, batch.shape)
        if problem:
            shapes = ", ".join(_fmt_shape(o.shape) for o in outs)
            returns = "(prob, reg, landmarks)" if self.stage == "onet" else "(prob, reg)"
            raise FacedataError(
                f"{_STAGE_NAME[self.stage]} callable does not fit the contract: expected "
                f"{_EXPECTED[self.stage]} returned as {returns}; "
                f"it returned {shapes} for input {list(batch.shape)}: {problem}"
            )
        return _finish(self.stage, outs, self.contract.logits)


class OnnxStage:
    """An ONNX stage model run by onnxruntime on the CPU, in bounded memory.

    Per-shape memory patterns are off: with one input shape per pyramid level and per image they would
    grow with every new shape (the 25–48 GB reports in the reference). The CPU arena stays on: it is
    reused across shapes, peaks at the largest pyramid level (flat over hundreds of image sizes,
    measured) and saves ~12% of PNet time over fresh allocations per call. The graph is loaded with its
    per-channel PReLUs rewritten exactly (facedata.detect.optimize: same outputs, 10–40% faster PNet).
    """

    def __init__(self, path: str | os.PathLike[str], stage: Stage, contract: ModelContract, threads: int = 1):
        import onnxruntime as ort

        self.path, self.stage, self.contract = Path(path), stage, contract
        if not self.path.is_file():
            raise FacedataError(f"{_STAGE_NAME[stage]} model not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_mem_pattern = False
        opts.log_severity_level = 3
        self.session = self._load(self.path.read_bytes(), opts)
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        self.fixed_batch = inputs[0].shape[0] if inputs and isinstance(inputs[0].shape[0], int) else None
        self._check_input(inputs)
        self.output_names = self._find_outputs()

    def _load(self, model: bytes, opts: Any) -> Any:
        """A session of the PReLU-rewritten graph, or of the model as given if the rewrite does not apply
        (not parseable as ONNX, or a graph onnxruntime rejects once rewritten)."""
        import onnxruntime as ort

        try:
            fast = fast_prelu(model)
        except Exception:  # noqa: BLE001 - not parseable as ONNX: onnxruntime says why just below
            fast = model
        for candidate in dict.fromkeys((fast, model)):  # the rewrite first; the original bytes once
            try:
                return ort.InferenceSession(candidate, opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
                error = exc
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise FacedataError(
            f"--{self.stage} {self.path}: not an ONNX model onnxruntime can load ({reason}); facedata loads "
            f"{_STAGE_NAME[self.stage]} models only as ONNX, never a pickle (export PyTorch with torch.onnx.export)"
        ) from error

    def describe(self) -> str:
        ins = ", ".join(f"'{i.name}' {_fmt_shape(i.shape)} {i.type}" for i in self.session.get_inputs())
        outs = ", ".join(f"'{o.name}' {_fmt_shape(o.shape)}" for o in self.session.get_outputs())
        return f"input {ins}; outputs {outs}"

    def _fail(self, problem: str) -> FacedataError:
        return FacedataError(
            f"{_STAGE_NAME[self.stage]} model {self.path.name} does not fit the contract: {problem}. "
            f"Expected {_EXPECTED[self.stage]}; the model has {self.describe()}"
        )

    def _check_input(self, inputs: list) -> None:
        if len(inputs) != 1:
            raise self._fail(f"{len(inputs)} inputs, expected 1")
        shape, size = inputs[0].shape, STAGE_SIZE[self.stage]
        if len(shape) != 4:
            raise self._fail(f"input rank {len(shape)}, expected 4 (NCHW)")
        if inputs[0].type != "tensor(float)":
            raise self._fail(f"input type {inputs[0].type}, expected tensor(float)")
        if isinstance(shape[1], int) and shape[1] != 3:
            raise self._fail(f"input has {shape[1]} channel(s), expected 3")
        hw = [d for d in shape[2:] if isinstance(d, int)]
        if self.stage == "pnet" and hw:
            raise self._fail(
                f"input height/width fixed at {_fmt_shape(shape[2:])}; the PNet must be exported with "
                "dynamic spatial axes so each pyramid level runs in one call"
            )
        if self.stage != "pnet" and any(d != size for d in hw):
            raise self._fail(f"input size {_fmt_shape(shape[2:])}, expected {size}×{size}")

    def _run(self, batch: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
        return self.session.run(names, {self.input_name: batch})

    def _find_outputs(self) -> list[str]:
        """Output names in (prob, reg[, landmarks]) order: from the contract or by probed shapes."""
        available = [o.name for o in self.session.get_outputs()]
        n = self.fixed_batch or 2
        hw = _PROBE_HW if self.stage == "pnet" else (STAGE_SIZE[self.stage],) * 2
        probe = np.zeros((n, 3, *hw), dtype=np.float32)
        try:
            outs = dict(zip(available, self._run(probe), strict=True))
        except Exception as exc:  # onnxruntime shape/type errors
            raise self._fail(f"a probe forward pass on {list(probe.shape)} failed ({exc})") from exc
        named = self.contract.output_names(self.stage)
        roles = ["prob", "reg", "landmarks"][: len(named)]
        chosen: list[str] = []
        for role, name in zip(roles, named, strict=True):
            if name is not None:
                if name not in outs:
                    raise self._fail(f"no output named '{name}' (given for {role}); outputs are {available}")
                chosen.append(name)
                continue
            chans = {"prob": (2, 1), "reg": (4,), "landmarks": (10,)}[role]
            found = None
            for c in chans:  # prefer the 2-channel probability over a 1-channel map
                matches = [k for k, v in outs.items() if k not in chosen and self._has_channels(v, c)]
                if len(matches) > 1:
                    raise self._fail(f"outputs {matches} all look like {role}; name it in the contract")
                if matches:
                    found = matches[0]
                    break
            if found is None:
                raise self._fail(f"no output shaped like {role} ({'/'.join(map(str, chans))} channels)")
            chosen.append(found)
        problem = _check_outputs(self.stage, [outs[k] for k in chosen], probe.shape)
        if problem:
            raise self._fail(problem)
        return chosen

    def _has_channels(self, arr: np.ndarray, c: int) -> bool:
        if self.stage == "pnet":
            return arr.ndim == 4 and arr.shape[1] == c
        return (arr.ndim == 2 or (arr.ndim == 4 and arr.shape[2:] == (1, 1))) and arr.shape[1] == c

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return _finish(self.stage, self._run(batch, self.output_names), self.contract.logits)
        parts: list[list[np.ndarray]] = []
        b = self.fixed_batch
        for start in range(0, len(batch), b):  # a model exported with a fixed batch: pad the last chunk
            chunk = batch[start : start + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            outs = self._run(chunk, self.output_names)
            parts.append([o[: b - pad] for o in outs])
        merged = [np.concatenate([p[i] for p in parts]) for i in range(len(self.output_names))]
        return _finish(self.stage, merged, self.contract.logits)


def load_stage(
    model: str | os.PathLike[str] | Callable[[np.ndarray], Sequence[np.ndarray]],
    stage: Stage,
    contract: ModelContract = ModelContract(),
    threads: int = 1,
) -> StageModel:
    """An ONNX file (checked against the contract now) or a callable, as a stage model.

    `threads` is onnxruntime's intra-op thread count: keep 1 per worker process when mining in parallel.
    """
    if stage not in STAGE_SIZE:
        raise FacedataError(f"unknown cascade stage {stage!r}; expected one of {sorted(STAGE_SIZE)}")
    if isinstance(model, (OnnxStage, CallableStage)):
        return model
    if isinstance(model, (str, os.PathLike)):
        return OnnxStage(model, stage, contract, threads)
    if callable(model):
        return CallableStage(model, stage, contract)
    raise FacedataError(
        f"{_STAGE_NAME[stage]} model must be an ONNX path or a callable, not {type(model).__name__}"
    )
