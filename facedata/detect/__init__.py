"""The MTCNN cascade in the loop: stage models from ONNX files or callables, vectorised NMS, drawing.

Names are imported on first use, so `facedata.detect.settings` (read by the CLI at start-up) does not
pull in OpenCV and onnx. NMS is `facedata.detect.nms.nms` (a package attribute of that name would be
shadowed by the submodule).
"""

from importlib import import_module
from typing import Any

_MODULE = {
    "Cascade": "cascade",
    "CascadeConfig": "cascade",
    "Detections": "cascade",
    "calibrate": "cascade",
    "crop_batch": "cascade",
    "square_boxes": "cascade",
    "ModelContract": "models",
    "StageModel": "models",
    "load_stage": "models",
}
__all__ = sorted(_MODULE)


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module 'facedata.detect' has no attribute {name!r}")
    return getattr(import_module(f"facedata.detect.{_MODULE[name]}"), name)
