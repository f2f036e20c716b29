"""How readers hand out pixels: the image layout and the channel order, one place for every framework.

Shards store crops as uint8 HWC in OpenCV's BGR order. `channels="rgb"` reverses the channels (for
models trained on RGB, e.g. converted MTCNN weights); `image_format="float_chw"` gives float32 CHW
normalised (x - 127.5) / 128, the MTCNN input scaling.
"""

from __future__ import annotations

import numpy as np

from facedata.errors import FacedataError

IMAGE_FORMATS = ("uint8_hwc", "float_chw")
CHANNELS = ("bgr", "rgb")


def check_image_options(image_format: str, channels: str) -> None:
    if image_format not in IMAGE_FORMATS:
        raise FacedataError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    check_channels(channels)


def check_channels(channels: str) -> None:
    if channels not in CHANNELS:
        raise FacedataError(f"channels must be one of {CHANNELS}, got {channels!r}")


def to_channels(pixels: np.ndarray, channels: str) -> np.ndarray:
    """The batch in the requested channel order, in place (the stored order is BGR)."""
    if channels == "rgb":
        pixels[...] = pixels[..., ::-1]  # numpy sees the overlap and reads through a temporary
    return pixels


def float_chw(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) normalised (x - 127.5) / 128."""
    return (pixels.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0
