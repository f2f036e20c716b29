"""Shared fixtures and guards: the real-data folder (skip when absent, fail under CI's
FACEDATA_REQUIRE_REALDATA) and the optional frameworks (skip when absent, fail when CI's
FACEDATA_REQUIRE_FRAMEWORKS names them: CI's core environment requires PyTorch, its MindSpore one MindSpore).
Tests that need MindSpore are marked `mindspore`: MindSpore 2.9 needs numpy < 2, so they run in their own
environment (`make test-mindspore`, `pytest -m mindspore`) and skip in the core one."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

# facedata.readers.mindspore sets this itself before importing MindSpore, but this test process imports
# onnx (test_detect_optimize) during collection, before any MindSpore test: the variable must be set
# before protobuf is first imported (see that module's docstring).
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

from facedata.realdata import realdata_dir

MINDSPORE_ELSEWHERE = "MindSpore 2.9 needs numpy < 2: its tests run in their own environment (make test-mindspore)"


def required_frameworks() -> set[str]:
    """The top-level names in FACEDATA_REQUIRE_FRAMEWORKS (comma-separated, e.g. `torch,facenet_pytorch`)."""
    return {name.strip() for name in os.environ.get("FACEDATA_REQUIRE_FRAMEWORKS", "").split(",") if name.strip()}


def require_framework(name: str, *, load: bool = True) -> ModuleType | None:
    """Import `name` (or, with load=False, only check it is installed); when it is missing, skip the
    calling test or module, or fail it when FACEDATA_REQUIRE_FRAMEWORKS names its top-level package (CI must
    not pass by skipping the tests of a framework its environment is meant to have)."""
    top = name.partition(".")[0]
    if importlib.util.find_spec(top) is None:
        message = f"{name} is not installed"
        if top in required_frameworks():
            pytest.fail(f"{message} but FACEDATA_REQUIRE_FRAMEWORKS names {top} (CI requires its tests)")
        pytest.skip(f"{message}; {MINDSPORE_ELSEWHERE}" if top == "mindspore" else message,
                    allow_module_level=True)
    return importlib.import_module(name) if load else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `mindspore` needs MindSpore's dataset engine: skip or fail before its fixtures are built."""
    if item.get_closest_marker("mindspore"):
        require_framework("mindspore.dataset", load=False)


@pytest.fixture(scope="session")
def realdata() -> Path:
    path = realdata_dir()
    if path is None:
        if os.environ.get("FACEDATA_REQUIRE_REALDATA"):
            pytest.fail("real-data folder missing (FACEDATA_REALDATA, ../shared/realdata) but CI requires it")
        pytest.skip("real-data folder not found: set FACEDATA_REALDATA or place ../shared/realdata")
    return path


FUZZ_CASES = pytest.StashKey[Counter]()


@pytest.fixture(scope="session")
def fuzz_cases(request: pytest.FixtureRequest) -> Counter:
    """Generated fuzz cases per format (tests/test_fuzz_parsers.py), printed in the terminal summary."""
    return request.config.stash.setdefault(FUZZ_CASES, Counter())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    counts = config.stash.get(FUZZ_CASES, None)
    if counts:
        detail = ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        terminalreporter.write_line(f"fuzz: {sum(counts.values()):,} generated parser cases ({detail})")
