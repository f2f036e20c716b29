"""Shared fixtures: the real-data folder (skip when absent, fail under CI's FACEDATA_REQUIRE_REALDATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facedata.realdata import realdata_dir


@pytest.fixture(scope="session")
def realdata() -> Path:
    path = realdata_dir()
    if path is None:
        if os.environ.get("FACEDATA_REQUIRE_REALDATA"):
            pytest.fail("real-data folder missing (FACEDATA_REALDATA, ../shared/realdata) but CI requires it")
        pytest.skip("real-data folder not found: set FACEDATA_REALDATA or place ../shared/realdata")
    return path
