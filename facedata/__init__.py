"""facedata: face detection and landmark corpora to sharded training data."""

__version__ = "0.1.0"
