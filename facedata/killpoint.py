"""A test hook that SIGKILLs a build at a chosen write step, so the crash tests stop builds at reproducible points.

With FACEDATA_KILL_AT_STEP=N in the environment, the N-th write step of the build process (a planned chunk
appended to the plan file, a block written into a shard or, on Dask, each block of a worker's shard as the
build process lists it; whichever comes N-th) kills it with SIGKILL, as the OOM killer or a lost machine
would: no handler, no cleanup. Dask workers disarm it (they inherit a LocalCluster's environment); tests kill
them with a real signal instead. Unset, as always outside tests, a step only counts.
tests/test_crash.py draws N from a seeded RNG within the step count of an uninterrupted build (`steps()`).
"""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("FACEDATA_KILL_AT_STEP", "").strip()
_KILL_AT = int(_ARMED) if _ARMED.isdigit() else 0  # anything but a step number leaves the hook unarmed
_steps = 0


def step() -> None:
    """One write step done; the armed one kills the process."""
    global _steps
    _steps += 1
    if _steps == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def disarm() -> None:
    """Never kill this process (a Dask worker inherits the build's environment: the hook is the build's)."""
    global _KILL_AT
    _KILL_AT = 0


def steps() -> int:
    """Write steps this process has made so far."""
    return _steps
