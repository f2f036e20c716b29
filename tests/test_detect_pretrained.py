"""The real pretrained MTCNN (facenet-pytorch's weights, exported to ONNX by tests/onnx_models.py) in
facedata's cascade finds the annotated faces of real photos: this proves the conversion, the contract
(RGB, (x − 127.5)/128, no transposition, xxyy landmarks) and the cascade together.

facenet-pytorch and torch are the `bench` extra: without them these tests skip.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require_framework
from onnx_models import FACENET_CONTRACT, facenet_mtcnn, facenet_weights_dir

from facedata.detect import Cascade, CascadeConfig, ModelContract

require_framework("torch")  # exports the pretrained MTCNN to ONNX
require_framework("facenet_pytorch", load=False)  # its weight files (extra: bench; make installs it)
if facenet_weights_dir() is None:
    pytest.skip("facenet-pytorch (the `bench` extra: pip install --no-deps facenet-pytorch) is not installed",
                allow_module_level=True)

# iBUG-68 indices of the mtcnn5 points: eye centres (image left, image right), nose tip, mouth corners
IBUG_TO_MTCNN5 = [list(range(36, 42)), list(range(42, 48)), [30], [48], [54]]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x1 y1 x2 y2 boxes (continuous areas), written here so the check shares no code."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return w * h / (area(a)[:, None] + area(b)[None, :] - w * h)


def _dlib_faces(realdata: Path) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """dlib's test photos: (path, boxes x1 y1 x2 y2, mtcnn5 points from dlib's predicted 68 points)."""
    folder = realdata / "dlib_faces"
    out = []
    for image in ET.parse(folder / "testing_with_face_landmarks.xml").getroot().iter("image"):
        boxes, points = [], []
        for box in image.iter("box"):
            x, y, w, h = (float(box.get(k)) for k in ("left", "top", "width", "height"))
            boxes.append([x, y, x + w, y + h])
            parts = {int(p.get("name")): (float(p.get("x")), float(p.get("y"))) for p in box.iter("part")}
            points.append([np.mean([parts[i] for i in idx], axis=0) for idx in IBUG_TO_MTCNN5])
        out.append((folder / image.get("file"), np.array(boxes), np.array(points)))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return facenet_mtcnn(tmp_path_factory.mktemp("facenet"))


def _run(models, realdata, **contract):
    cascade = Cascade(models["pnet"], models["rnet"], models["onet"], config=CascadeConfig(pyramid_min_face=20),
                      contract=ModelContract(**contract))
    for path, boxes, points in _dlib_faces(realdata):
        yield boxes, points, cascade.detect(cv2.imread(str(path)))


def _point_error(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per face: mean distance of the 5 points to dlib's, over the eye distance."""
    return np.linalg.norm(found - points, axis=2).mean(axis=1) / np.linalg.norm(points[:, 0] - points[:, 1], axis=1)


def test_pretrained_mtcnn_finds_the_annotated_faces(models, realdata):
    faces = found = false = 0
    errors = []
    for boxes, points, dets in _run(models, realdata, **FACENET_CONTRACT):
        iou = _iou(boxes, dets.boxes) if len(dets) else np.zeros((len(boxes), 1))
        hit = iou.max(axis=1) >= 0.5
        faces, found = faces + len(boxes), found + int(hit.sum())
        false += int((iou.max(axis=0) < 0.3).sum()) if len(dets) else 0
        errors.extend(_point_error(points, dets.landmarks[iou.argmax(axis=1)])[hit])
    assert faces == 25 and found == faces  # every annotated face of dlib's 5 test photos, IoU >= 0.5
    assert false == 0
    # the 5 points agree with dlib's (independent) predictions: mean error < 10% of the eye distance (measured: 5.7%)
    assert np.mean(errors) < 0.1, errors


def test_pretrained_mtcnn_needs_its_contract(models, realdata):
    """The same models fed BGR miss faces, and xxyy landmarks read as xyxy land far from dlib's points:
    the contract options matter, and the test above would see a wrong conversion."""
    bgr = dict(FACENET_CONTRACT, channels="bgr")
    found = sum(int((_iou(b, d.boxes).max(axis=1) >= 0.5).sum()) for b, _, d in _run(models, realdata, **bgr))
    assert found < 25
    errors = []
    for boxes, points, dets in _run(models, realdata, **dict(FACENET_CONTRACT, landmark_layout="xyxy")):
        errors.extend(_point_error(points, dets.landmarks[_iou(boxes, dets.boxes).argmax(axis=1)]))
    assert np.mean(errors) > 0.4, errors
