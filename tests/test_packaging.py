"""Packaging: the core dependencies carry no pin that only an extra needs (MindSpore's numpy < 2 stays in the
`mindspore` extra and its own environment), and the core environment `make test` builds really runs current
numpy and pyarrow, so a pin that comes back cannot hold every user on old versions unnoticed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CURRENT = {"numpy": 2, "pyarrow": 26}  # the first major versions the `mindspore` extra rules out


def test_core_dependencies_have_no_upper_bound() -> None:
    capped = [dep for dep in PROJECT["dependencies"] if re.search(r"<|==|~=|!=", dep)]
    assert capped == [], f"core dependencies capped for an extra's sake: {capped}"


def test_the_mindspore_extra_carries_its_numpy_1_pins() -> None:
    """MindSpore 2.9.0 declares numpy < 2; pyarrow 26+ fails to import with numpy 1.x but does not declare it."""
    assert {"mindspore==2.9.0", "numpy<2", "pyarrow<26"} <= set(PROJECT["optional-dependencies"]["mindspore"])


def test_the_core_environment_runs_current_numpy_and_pyarrow() -> None:
    if not os.environ.get("FACEDATA_REQUIRE_CURRENT_DEPS"):
        pytest.skip("checked in the core environment make builds (FACEDATA_REQUIRE_CURRENT_DEPS)")
    found = {name: version(name) for name in CURRENT}
    assert all(int(found[name].split(".")[0]) >= major for name, major in CURRENT.items()), found


def test_make_test_runs_each_environment_with_its_frameworks_required() -> None:
    """`make test` (what .ci/run runs): the core suite with PyTorch and Dask required and current numpy/pyarrow checked,
    then the MindSpore tests in their own environment with MindSpore required (a skip there would hide them)."""
    stamps = [arg for stamp in (".venv/.installed", ".venv-mindspore/.installed") for arg in ("-o", stamp)]
    dry = subprocess.run(["make", "-n", *stamps, "test"], cwd=ROOT, capture_output=True, text=True, check=True)
    runs = [shlex.split(line) for line in dry.stdout.splitlines() if "pytest" in line]
    mindspore = ["FACEDATA_REQUIRE_FRAMEWORKS=mindspore", ".venv-mindspore/bin/python", "-m", "pytest", "-q"]
    core = ["FACEDATA_REQUIRE_FRAMEWORKS=torch,facenet_pytorch,distributed", "FACEDATA_REQUIRE_CURRENT_DEPS=1",
            ".venv/bin/python", "-m", "pytest", "-q"]
    assert runs == [[*mindspore, "-m", "mindspore"], core], dry.stdout  # the core run deselects nothing
    assert "make test" in (ROOT / ".ci" / "run").read_text()
