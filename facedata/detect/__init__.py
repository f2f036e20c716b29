"""The MTCNN cascade in the loop: stage models from ONNX files or callables, vectorised NMS, drawing."""

from facedata.detect.cascade import Cascade, CascadeConfig, Detections, calibrate, crop_batch, square_boxes
from facedata.detect.models import ModelContract, StageModel, load_stage
from facedata.detect.nms import nms

__all__ = [
    "Cascade",
    "CascadeConfig",
    "Detections",
    "ModelContract",
    "StageModel",
    "calibrate",
    "crop_batch",
    "load_stage",
    "nms",
    "square_boxes",
]
