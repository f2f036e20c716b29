"""Build stages, one module each in this package, registered in STAGES by name (`facedata build NAME`).

Every module here is imported on first use, so adding a stage is adding a file that registers a
`facedata.stages.base.Stage`; the build orchestration (facedata.build, facedata.buildrun,
facedata.buildworker) only calls the Stage interface.
"""

from __future__ import annotations

import importlib
import pkgutil

from facedata.stages.base import STAGES, BuildConfig, Stage

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STAGES", "BuildConfig", "Stage"]
