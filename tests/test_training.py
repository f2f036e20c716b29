"""Training on built shards: a tiny PNet (the real MTCNN PNet layers) learns face/non-face in PyTorch
through the DataLoader reader, and one MindSpore epoch runs through GeneratorDataset (CPU); on pfld shards of
real AFLW2000-3D faces a tiny PFLD-like regressor lowers its NME in PyTorch and one MindSpore epoch trains one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_framework

from facedata.build import build_dataset
from facedata.cli import main
from facedata.demo import build_demo_corpus
from facedata.parsers import ingest
from facedata.readers.order import MIX_LABELS, mix_counts
from facedata.storage import ShardedDataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("training")
    corpus = build_demo_corpus(root / "corpus", seed=11, wider_images=32, cuhk_images=8)
    det, _ = ingest(corpus.wider_annotations, images=corpus.wider_images)
    lmk, _ = ingest(corpus.cuhk_annotations, images=corpus.cuhk_images)
    out = root / "pnet"
    build_dataset(det, lmk, out, workers=1, progress=False, seed=0, shard_bytes=1 << 20)
    return out


def test_tiny_pnet_learns_on_the_shards_with_pytorch(shards: Path) -> None:
    torch = require_framework("torch")
    from torch import nn
    from torch.utils.data import DataLoader

    from facedata.readers.torch import ShardIterableDataset

    torch.manual_seed(0)

    class PNet(nn.Module):
        """MTCNN PNet: conv3 10 - PReLU - maxpool 2 - conv3 16 - PReLU - conv3 32 - PReLU - 1x1 (2, 4)."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
                nn.Conv2d(10, 16, 3), nn.PReLU(16), nn.Conv2d(16, 32, 3), nn.PReLU(32),
            )
            self.cls = nn.Conv2d(32, 2, 1)
            self.box = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            h = self.body(x)
            return self.cls(h).flatten(1), self.box(h).flatten(1)

    net = PNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    dataset = ShardIterableDataset(shards, batch_size=64, seed=0, image_format="float_chw")
    losses: list[float] = []
    epoch = 0
    while len(losses) < 300:
        dataset.set_epoch(epoch)
        for batch in DataLoader(dataset, batch_size=None, num_workers=2):
            image, label = batch["image"], batch["label"]
            assert label.dtype == torch.int64
            assert image.dtype == torch.float32 and image.shape[1:] == (3, 12, 12)
            assert float(image.abs().max()) <= 1.0
            cls_rows = label >= 0  # pos/neg for classification (parts and landmarks are not)
            box_rows = label.abs() == 1  # pos/part for box regression
            logits, box = net(image)
            loss = nn.functional.cross_entropy(logits[cls_rows], label[cls_rows])
            losses.append(loss.item())
            if box_rows.any():
                loss = loss + 0.5 * nn.functional.mse_loss(box[box_rows], batch["bbox"][box_rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if len(losses) >= 300:
                break
        epoch += 1
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    print(f"classification loss: first 20 steps {first:.3f}, last 20 {last:.3f}")
    assert last < 0.6 * first, (first, last)


# Run in a fresh interpreter: MindSpore can abort at interpreter exit, and its protobuf modules must be
# imported before onnx's (see facedata.readers.mindspore); a subprocess keeps both out of the pytest process.
_MINDSPORE_TRAIN = r"""
import json, os, sys
import numpy as np
from facedata.readers.mindspore import MindSporeBatchSource
import mindspore as ms
from mindspore import nn, ops
from mindspore.train import Callback, Model

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
ms.set_seed(0)
seen = []


class LoggedSource(MindSporeBatchSource):
    def __getitem__(self, i):
        columns = super().__getitem__(i)
        seen.append(columns[self.column_names.index("image_index")])
        return columns


source = LoggedSource(sys.argv[1], 128, seed=0, image_format="float_chw", batch_mix="3:1:1:2")
dataset = source.dataset(num_parallel_workers=1, python_multiprocessing=False).project(["image", "label"])


class TinyNet(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3, pad_mode="valid", has_bias=True)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(10, 16, 3, pad_mode="valid", has_bias=True)
        self.conv3 = nn.Conv2d(16, 32, 3, pad_mode="valid", has_bias=True)
        self.cls = nn.Conv2d(32, 2, 1, has_bias=True)
        self.act = nn.ReLU()
        self.flatten = nn.Flatten()

    def construct(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.act(self.conv3(self.act(self.conv2(x))))
        return self.flatten(self.cls(x))


class FaceLoss(nn.Cell):
    # Cross-entropy on negatives and positives only (parts and landmarks carry label -1 / -2).

    def construct(self, logits, label):
        weight = (label >= 0).astype(ms.float32)
        per_sample = ops.cross_entropy(logits, ops.maximum(label, 0), reduction="none")
        return (per_sample * weight).sum() / ops.maximum(weight.sum(), ms.Tensor(1.0, ms.float32))


class Losses(Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_step_end(self, run_context):
        self.values.append(float(run_context.original_args().net_outputs.asnumpy()))


net = TinyNet()
losses = Losses()
model = Model(net, loss_fn=FaceLoss(), optimizer=nn.Adam(net.trainable_params(), learning_rate=3e-3))
model.train(2, dataset, callbacks=[losses], dataset_sink_mode=False)
n = len(source)
epochs = [np.concatenate(seen[e * n : (e + 1) * n]) for e in range(2)]
expected = [source.data.read(source.order.rank(e))[1]["image_index"] for e in range(2)]  # image rows
print(json.dumps({"steps": len(losses.values), "batches": n, "losses": losses.values,
                  "epochs_follow_the_order": [bool(np.array_equal(epochs[e], expected[e])) for e in range(2)],
                  "epochs_differ": not np.array_equal(epochs[0], epochs[1])}), flush=True)
os._exit(0)  # skip MindSpore's interpreter-exit teardown
"""


@pytest.mark.mindspore
def test_mindspore_model_train_two_epochs_on_the_shards(shards: Path) -> None:
    """Model.train(2, dataset) over one GeneratorDataset: two epochs, each in its own order, batch_mix on."""
    env = {**os.environ, "GLOG_v": "3", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)  # facedata sets it itself
    proc = subprocess.run([sys.executable, "-c", _MINDSPORE_TRAIN, str(shards)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == 2 * result["batches"] > 2
    assert result["epochs_follow_the_order"] == [True, True] and result["epochs_differ"]
    assert all(np.isfinite(result["losses"]))


def test_batch_mix_on_built_shards_leaves_the_dataset_untouched(shards: Path) -> None:
    """Labels come from the shards' label bytes, in memory: nothing is written into a finished dataset."""
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in shards.iterdir()}
    ds = ShardedDataset(shards)
    assert np.array_equal(ds.labels(), ds.read_range(0, len(ds))[1]["label"])
    counts = mix_counts(64, (3, 1, 1, 2))
    batches = list(ds.iter_batches(64, seed=1, batch_mix="3:1:1:2"))
    assert len(batches) == -(-len(ds) // 64)
    for _, records in batches:
        assert np.array_equal(records["label"], np.repeat(MIX_LABELS, counts))
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in shards.iterdir()} == before


@pytest.fixture(scope="module")
def pfld_shards(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 16 real AFLW2000-3D faces fused 68 -> 98 (30 masked points each), 8 pfld variants per face."""
    root = tmp_path_factory.mktemp("pfld")
    manifest, _ = ingest(realdata / "aflw2000_3d")
    manifest.write(root / "aflw.parquet")
    runner = CliRunner()
    for args in (["fuse", root / "aflw.parquet", "--to", "wflw98", "-o", root / "fused.parquet"],
                 ["build", "pfld", "--landmarks", root / "fused.parquet", "-o", root / "pfld", "--variants", 8, "-q"]):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return root / "pfld"


WFLW98_OUTER_EYES = (60, 72)
STEPS = 200  # the inter-ocular normaliser of WFLW's NME (spec 8.3)


def nme(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean over samples of the mean present-point error over the outer-eye-corner distance (WFLW's NME)."""
    pred, target = pred.reshape(len(pred), -1, 2), target.reshape(len(target), -1, 2)
    a, b = WFLW98_OUTER_EYES
    inter_ocular = np.linalg.norm(target[:, a] - target[:, b], axis=1)
    present = mask.astype(bool)
    errors = np.where(present, np.linalg.norm(pred - target, axis=2), 0.0)  # NaN (masked) errors dropped
    return float(np.mean(errors.sum(axis=1) / present.sum(axis=1) / inter_ocular))


def test_tiny_pfld_regressor_lowers_its_nme_with_pytorch(pfld_shards: Path) -> None:
    """A few conv layers and a 2 x 98 regression head, the loss over present points only (masked points are
    NaN in the records); after STEPS steps the training-shard NME is well below the untrained net's and below
    the mean shape's (so the net reads the pixels, not just the average face)."""
    torch = require_framework("torch")
    from torch import nn
    from torch.utils.data import DataLoader

    from facedata.readers.torch import ShardIterableDataset, ShardMapDataset

    torch.manual_seed(0)
    net = nn.Sequential(  # the 112 px input pooled to 56 px first: CI time
        nn.AvgPool2d(2), nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
        nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 196),
    )
    every = ShardMapDataset(pfld_shards, image_format="float_chw")[list(range(len(ShardMapDataset(pfld_shards))))]
    target, mask = every["landmarks"].numpy(), every["mask"].numpy()
    assert (mask.sum(axis=1) == 68).all() and np.isnan(target).sum() == 30 * 2 * len(target)

    def evaluate() -> float:
        net.eval()
        with torch.no_grad():
            return nme(net(every["image"]).numpy(), target, mask)

    initial = evaluate()
    average = np.nan_to_num(target).sum(axis=0) / np.maximum(1, np.repeat(mask.sum(axis=0), 2))  # present only
    mean_shape = nme(np.broadcast_to(average, target.shape), target, mask)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    dataset = ShardIterableDataset(pfld_shards, batch_size=16, seed=0, image_format="float_chw")
    steps, epoch = 0, 0
    while steps < STEPS:
        dataset.set_epoch(epoch)
        net.train()
        for batch in DataLoader(dataset, batch_size=None, num_workers=0):
            present = batch["mask"].bool().repeat_interleave(2, dim=1)  # x and y of each present point
            points = torch.nan_to_num(batch["landmarks"])
            loss = ((net(batch["image"]) - points) ** 2)[present].mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
        epoch += 1
    final = evaluate()
    print(f"NME: untrained {initial:.3f}, mean shape {mean_shape:.3f}, after {steps} steps {final:.3f}")
    assert final < 0.6 * initial and final < mean_shape, (initial, mean_shape, final)


_MINDSPORE_PFLD = r"""
import json, os, sys
import numpy as np
from facedata.readers.mindspore import MindSporeBatchSource
import mindspore as ms
from mindspore import nn, ops

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
ms.set_seed(0)
source = MindSporeBatchSource(sys.argv[1], 16, seed=0, image_format="float_chw")
dataset = source.dataset(num_parallel_workers=1, python_multiprocessing=False).project(["image", "landmarks", "mask"])


class TinyPfld(nn.Cell):
    def __init__(self):
        super().__init__()
        self.body = nn.SequentialCell(
            nn.AvgPool2d(2, 2), nn.Conv2d(3, 8, 3, 2, has_bias=True), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, has_bias=True), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, has_bias=True), nn.ReLU())
        self.head = nn.Dense(32, 196)

    def construct(self, x):
        return self.head(self.body(x).mean(axis=(2, 3)))


class MaskedLoss(nn.Cell):
    # Squared error over present points only: masked points are NaN in the records.
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, image, landmarks, mask):
        n = landmarks.shape[0]
        target = ops.where(ops.isnan(landmarks), ops.zeros_like(landmarks), landmarks).reshape(n, -1, 2)
        weight = mask.astype(ms.float32).reshape(n, -1, 1)
        error = (self.net(image).reshape(n, -1, 2) - target) ** 2 * weight
        return error.sum() / (2 * weight.sum())


net = TinyPfld()
step = nn.TrainOneStepCell(MaskedLoss(net), nn.Adam(net.trainable_params(), learning_rate=3e-3))
step.set_train()
before = net.head.weight.asnumpy().copy()
losses, shapes = [], set()
for image, landmarks, mask in dataset.create_tuple_iterator(num_epochs=1):
    shapes.add((tuple(image.shape[1:]), tuple(landmarks.shape[1:]), tuple(mask.shape[1:]), str(landmarks.dtype)))
    losses.append(float(step(image, landmarks, mask).asnumpy()))
shapes = [list(map(str, s)) for s in shapes]
print(json.dumps({"steps": len(losses), "batches": len(source), "losses": losses, "shapes": shapes,
                  "moved": bool(np.abs(net.head.weight.asnumpy() - before).max() > 0)}), flush=True)
os._exit(0)  # skip MindSpore's interpreter-exit teardown
"""


@pytest.mark.mindspore
def test_one_mindspore_epoch_trains_a_tiny_pfld_net(pfld_shards: Path) -> None:
    """A GeneratorDataset over the same pfld shards, a tiny net and TrainOneStepCell: one epoch of real steps
    on (image, landmarks, mask) with the masked points out of the loss."""
    env = {**os.environ, "GLOG_v": "3", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    proc = subprocess.run([sys.executable, "-c", _MINDSPORE_PFLD, str(pfld_shards)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == result["batches"] == 8 and result["moved"]
    assert result["shapes"] == [["(3, 112, 112)", "(196,)", "(98,)", "Float32"]]
    assert all(np.isfinite(result["losses"])) and np.mean(result["losses"][-2:]) < np.mean(result["losses"][:2])
