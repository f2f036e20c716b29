"""The start method of the build's worker processes, and their server.

Importable without numpy, so that the CLI can start the server before its own heavy imports: the
server's imports (facedata.buildworker) and the CLI's then run at the same time.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def pool_context() -> Any:
    """The worker start method, with its server started now (its imports overlap the caller's work).

    forkserver, not fork: a forked copy of a process whose OpenCV (or OpenMP, onnxruntime) thread pool
    already ran can deadlock; the server imports facedata.buildworker once and forks every worker
    from it.
    """
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["facedata.buildworker"])
        from multiprocessing import forkserver

        forkserver.ensure_running()
    return ctx
