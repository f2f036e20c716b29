"""Where the shared real-data folder is: env FACEDATA_REALDATA, else ../shared/realdata beside the project."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def realdata_dir() -> Path | None:
    """The real-data folder if it exists, else None (tests skip; CI fails in .ci/run)."""
    configured = os.environ.get("FACEDATA_REALDATA")
    path = Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "realdata"
    return path if path.is_dir() else None
