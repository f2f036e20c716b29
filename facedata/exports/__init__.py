"""Export formats: one module per format, each registered in EXPORTS by name (like parsers.FORMATS).

An exporter has `name`, `description`, `holds` (the manifest contents it can carry, see base.CONTENTS),
`needs_sizes` and `write(manifest, out)`. Importing this package registers all.
"""

from facedata.exports import coco, retinaface, voc, yolo  # noqa: F401  (registers the formats)
from facedata.exports.base import EXPORTS, export, losses

__all__ = ["EXPORTS", "export", "losses"]
