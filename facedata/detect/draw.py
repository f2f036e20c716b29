"""Draw what the cascade found, to check a model by eye before a long mining run."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

from facedata.detect.cascade import Cascade, Detections
from facedata.errors import FacedataError
from facedata.imageio import read_image, write_image


def draw_detections(
    image_bgr: np.ndarray, dets: Detections, color: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """A copy of the image with boxes, scores and (ONet) landmarks drawn on it."""
    out = image_bgr.copy()
    thickness = max(1, round(min(out.shape[:2]) / 400))
    for i, (box, score) in enumerate(zip(dets.boxes, dets.scores, strict=True)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        cv2.putText(
            out, f"{score:.2f}", (x1, max(0, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA
        )
        if dets.landmarks is not None:
            for x, y in dets.landmarks[i]:
                cv2.circle(out, (int(round(float(x))), int(round(float(y)))), thickness + 1, (0, 0, 255), -1)
    return out


def parse_thresholds(text: str) -> tuple[float, float, float]:
    """'0.6,0.7,0.7' → (0.6, 0.7, 0.7): PNet, RNet, ONet score thresholds."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise FacedataError(
            f"thresholds must be three comma-separated numbers (PNet,RNet,ONet), not {text!r}"
        )
    return values  # type: ignore[return-value]


def detect_file(
    image_path: str | os.PathLike[str], output: str | os.PathLike[str] | None, cascade: Cascade
) -> Detections:
    """Run the cascade on one image file and (atomically) write the drawing to `output` if given."""
    image = read_image(image_path)
    dets = cascade.detect(image)
    if output is not None:
        write_image(output, draw_detections(image, dets))
    return dets


def detections_json(image_path: str | os.PathLike[str], dets: Detections) -> str:
    """The detections as one JSON document: per face its box (x1, y1, x2, y2 image pixels, continuous),
    score and, when ONet ran, its 5 points as [x, y] (mtcnn5 order); best score first."""
    faces = []
    for i, (box, score) in enumerate(zip(dets.boxes, dets.scores, strict=True)):
        face: dict = {"box": [float(v) for v in box], "score": float(score)}
        if dets.landmarks is not None:
            face["landmarks"] = [[float(x), float(y)] for x, y in dets.landmarks[i]]
        faces.append(face)
    doc = {"image": str(image_path), "boxes_after_each_stage": list(dets.proposals), "faces": faces}
    return json.dumps(doc)
