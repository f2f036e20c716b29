"""Training on built shards: a tiny PNet (the real MTCNN PNet layers) learns face/non-face in PyTorch
through the DataLoader reader, and one MindSpore epoch runs through GeneratorDataset (CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facedata.build import build_dataset
from facedata.demo import build_demo_corpus
from facedata.parsers import ingest


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
    torch = pytest.importorskip("torch")
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
            image, label = batch["image"], batch["label"].long()
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


# Run in a fresh interpreter: MindSpore's generated protobuf modules clash with onnx's protobuf once
# another test has imported onnx ("Descriptors cannot be created directly"), and MindSpore can abort
# at interpreter exit; a subprocess keeps both out of the pytest process.
_MINDSPORE_EPOCH = r"""
import json, os, sys
import numpy as np
import mindspore as ms
import mindspore.dataset as ds_module
from mindspore import nn, ops
from facedata.readers.mindspore import MindSporeBatchSource

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
ms.set_seed(0)
source = MindSporeBatchSource(sys.argv[1], 128, seed=0, image_format="float_chw")
dataset = ds_module.GeneratorDataset(source, column_names=source.column_names, shuffle=False,
                                     num_parallel_workers=1, python_multiprocessing=False)


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


net = TinyNet()
optimiser = nn.Adam(net.trainable_params(), learning_rate=3e-3)


def forward(image, label, weight):
    per_sample = ops.cross_entropy(net(image), label, reduction="none")
    return (per_sample * weight).sum() / ops.maximum(weight.sum(), ms.Tensor(1.0, ms.float32))


grad_fn = ms.value_and_grad(forward, None, optimiser.parameters)
steps = samples = 0
losses = []
for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
    labels = batch["label"].astype(np.int32)
    weight = (labels >= 0).astype(np.float32)
    loss, grads = grad_fn(ms.Tensor(batch["image"]), ms.Tensor(np.maximum(labels, 0)), ms.Tensor(weight))
    optimiser(grads)
    losses.append(float(loss.asnumpy()))
    steps += 1
    samples += len(labels)
print(json.dumps({"steps": steps, "batches": len(source), "samples": samples, "dataset": len(source.data),
                  "losses": losses}), flush=True)
os._exit(0)  # skip MindSpore's interpreter-exit teardown
"""


def test_one_mindspore_epoch_trains_on_the_shards(shards: Path) -> None:
    if importlib.util.find_spec("mindspore") is None:  # not imported here: see above
        pytest.skip("mindspore is not installed")
    env = {**os.environ, "GLOG_v": "3", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-c", _MINDSPORE_EPOCH, str(shards)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["steps"] == result["batches"] > 1
    assert result["samples"] == result["dataset"]
    assert all(np.isfinite(result["losses"]))
