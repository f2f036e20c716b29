"""Named settings of the cascade, importable without numpy or OpenCV (the CLI reads them to build --help)."""

# PNet, RNet, ONet score thresholds; why each is the default where it is: facedata.detect.cascade.
DETECTION_THRESHOLDS = (0.6, 0.7, 0.7)
MINING_THRESHOLDS = (0.3, 0.1, 0.7)
# Orders of the ONet's 10 landmark outputs (facedata.detect.models).
LANDMARK_LAYOUTS = ("xyxy", "xxyy")
