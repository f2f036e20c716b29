"""The local engine's worker processes: their start method and server, and the ordered runner of chunk jobs.

Importable without numpy, so that the CLI can start the server before its own heavy imports: the
server's imports (facedata.buildworker) and the CLI's then run at the same time.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
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


class Runner:
    """Ordered results of chunk jobs, in-process (workers=1) or from a process pool, at most
    `4 x workers` chunks in flight (Pool.imap has no back-pressure: results would pile up in RAM).

    concurrent.futures rather than multiprocessing.Pool: Pool.terminate() can hang forever joining its
    result thread when a worker dies mid-send; the executor cancels queued chunks and lets running
    ones finish (bounded by the window) or reports a broken pool.
    """

    writes_shards = False  # one machine: the samples come back to the build process's writer

    def __init__(self, job: Any, workers: int) -> None:
        from facedata.buildworker import init_worker

        self.workers = self.slots = max(1, workers)
        self.pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=pool_context(), initializer=init_worker, initargs=(job, True)
            )
        else:
            init_worker(job, False)

    def ordered(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        if self.pool is None:
            for args in jobs:
                yield fn(*args)
            return
        window = 4 * self.workers
        pending: deque = deque()
        for args in jobs:
            pending.append(self.pool.submit(fn, *args))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self, ok: bool) -> None:
        from facedata.buildworker import init_worker

        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=not ok)
        else:
            init_worker(None)  # drop the in-process job and its model
