"""The Dask engines (`--engine dask|dask-local`): a build's chunk jobs as tasks on a Dask distributed cluster.

A task runs the local pool's worker functions: plan_chunk (its records come back to the build process's
plan file), count_chunk, and render_shard (facedata.shardworker), which renders one whole shard and writes
it to the output directory itself, returning only its index entry (facedata.shardedrender): the same
shards, byte for byte, as the local pool's. The job (task tables, recipes, the detector factory) reaches
each worker once, in a WorkerPlugin that the scheduler also gives to workers that join or restart later; a
worker builds its model (the ONNX sessions) on its first task and keeps it for the next ones.

A worker that dies takes its running tasks and held results with it; the scheduler reruns them on the
other workers (up to `distributed.scheduler.allowed-failures` times per task); a shard a dead worker left
half-written stays under a temp name, which the build removes. Results are consumed in stream order, so no
sample is written twice or missed. Progress (plan file, progress table, the list of complete shards) is
recorded by the build process, so an interrupted Dask build resumes like a local one, on either engine.
Workers read the images and the plan file and write the shards (in the output directory): both must be on
storage every worker sees at the same path.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, wait

import facedata
from facedata import killpoint
from facedata.buildworker import Job, forget_job, use_job
from facedata.engines import Engine
from facedata.errors import FacedataError

_JOBS: dict[str, Job] = {}  # worker side: the jobs installed by _JobPlugin, by plugin name


@functools.cache
def code_digest() -> str:
    """sha256 of facedata's source files and the versions of the libraries that shape shard bytes (OpenCV
    renders, numpy, LMDB and pyarrow write): a worker running other code would write other bytes."""
    import cv2
    import lmdb
    import numpy
    import pyarrow

    root = Path(__file__).parent
    digest = hashlib.sha256()
    for module in (cv2, lmdb, numpy, pyarrow):
        digest.update(f"{module.__name__} {module.__version__}\0".encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(f"{path.relative_to(root)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class _JobPlugin(WorkerPlugin):
    """Installs a build's job on every worker of the cluster, present and future, if it runs the same code."""

    def __init__(self, name: str, job: Job) -> None:
        self.name, self.job, self.code = name, job, code_digest()

    def setup(self, worker: Any) -> None:
        if code_digest() != self.code:
            raise FacedataError(f"Dask worker {worker.address} runs another facedata (its source, or its OpenCV, "
                                f"numpy, LMDB or pyarrow version, differs from the build's, facedata "
                                f"{facedata.__version__}): install the same versions on every worker")
        _JOBS[self.name] = self.job
        killpoint.disarm()  # a LocalCluster's workers inherit the crash tests' hook, which is the build process's

    def teardown(self, worker: Any) -> None:
        job = _JOBS.pop(self.name, None)
        if job is not None:
            forget_job(job)


def _run(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """A task: `fn(*args)` with the build's job installed (kept, with its model, for the next task)."""
    job = _JOBS.get(name)
    if job is None:
        raise FacedataError(f"this Dask worker has no job {name}: its setup failed (see the worker's log)")
    use_job(job)
    return fn(*args)


class DaskRunner:
    """Ordered results of chunk jobs run on a Dask cluster, at most `4 x slots` in flight."""

    writes_shards = True  # workers on other machines write the shards to shared storage

    def __init__(self, client: Client, job: Job, cluster: LocalCluster | None = None) -> None:
        self.client, self.cluster = client, cluster
        # one build at a time per output directory: a rerun replaces the job a killed build left on the workers
        self.name = f"facedata-job-{hashlib.sha256(str(job.plan_path).encode()).hexdigest()[:16]}"
        try:
            client.register_plugin(_JobPlugin(self.name, job), name=self.name)
        except BaseException:  # e.g. a worker runs other code: the scheduler must not give the job to new ones
            with contextlib.suppress(Exception):  # the original error is the one to report
                client.unregister_worker_plugin(self.name)
            raise
        self.slots, self.counted = max(1, sum(client.nthreads().values())), time.monotonic()
        self.pending: deque = deque()

    @classmethod
    def start(cls, engine: Engine, job: Job, workers: int, progress: bool) -> DaskRunner:
        """Connect to `engine.scheduler` (dask) or start a LocalCluster of `workers` processes (dask-local)."""
        cluster = None
        if engine.scheduler is None:
            try:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
            except RuntimeError as exc:  # e.g. a script without an `if __name__ == "__main__":` guard
                raise FacedataError(f"--engine dask-local: the LocalCluster did not start ({exc}; {exc.__cause__})"
                                    ) from None
            client = Client(cluster)
        else:
            try:
                client = Client(engine.scheduler, timeout=engine.timeout)
            except ValueError as exc:
                raise FacedataError(f"--scheduler {engine.scheduler}: not a Dask address, e.g. tcp://HOST:8786 "
                                    f"({exc})") from None
            except (OSError, TimeoutError) as exc:
                raise FacedataError(f"--scheduler {engine.scheduler}: no Dask scheduler answered within "
                                    f"{engine.timeout:g} s ({exc})") from None
        try:
            client.wait_for_workers(1, timeout=engine.timeout)
            runner = cls(client, job, cluster)
        except BaseException as exc:
            client.close()
            if cluster is not None:
                cluster.close()
            if isinstance(exc, TimeoutError):
                raise FacedataError(f"--scheduler {engine.scheduler}: no Dask worker joined within "
                                    f"{engine.timeout:g} s (start some: dask worker ADDRESS --nthreads 1)") from None
            raise
        if progress:
            print(f"dask: {len(client.nthreads())} workers, {runner.slots} threads at {client.scheduler.address}; "
                  f"dashboard {_dashboard(client)}", file=sys.stderr)
        return runner

    def ordered(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]:
        return self._ordered(lambda args: self._submit(fn, args), jobs, 4)

    def ordered_parts(
        self, part_fn: Callable[..., Any], fn: Callable[..., Any], jobs: Iterable[tuple[list[tuple], tuple]],
        on_part: Callable[[tuple], None] | None = None,
    ) -> Iterator[Any]:
        """Results of `fn(*args, [part_fn(*p) for p in parts])` for each job (parts, args), in order. The parts
        run as tasks of their own, anywhere; Dask moves their results to fn's worker (never to this process).
        At most 2 x slots jobs are in flight: their parts' results wait in the workers' memory. `on_part(p)`
        runs (in the client's thread) as each part finishes, for progress."""
        def submit(job: tuple[list[tuple], tuple]) -> Any:
            parts, args = job
            futures = [self._submit(part_fn, p) for p in parts]
            if on_part is not None:
                for part, future in zip(parts, futures, strict=True):
                    future.add_done_callback(functools.partial(_when_finished, on_part, part))
            return self._submit(fn, (*args, futures))

        return self._ordered(submit, jobs, 2)

    def _submit(self, fn: Callable[..., Any], args: tuple) -> Any:
        key = f"{fn.__name__}-{args[0]}-{uuid.uuid4().hex}"  # the dashboard groups tasks by the name
        return self.client.submit(_run, self.name, fn, *args, key=key, pure=False)

    def _ordered(self, submit: Callable[[Any], Any], jobs: Iterable[Any], per_slot: int) -> Iterator[Any]:
        for job in jobs:
            self.pending.append(submit(job))
            if len(self.pending) >= per_slot * self._slots():
                yield self._result()
        while self.pending:
            yield self._result()

    def _slots(self) -> int:
        """The cluster's threads, recounted every few seconds: workers may join or leave a running build."""
        if time.monotonic() - self.counted >= 5.0:
            self.slots, self.counted = max(1, sum(self.client.nthreads().values())), time.monotonic()
        return self.slots

    def _result(self) -> Any:
        future = self.pending.popleft()
        try:
            result = future.result()
        except KilledWorker as exc:
            raise FacedataError(f"Dask task {future.key} was lost with its worker too many times (see "
                                f"distributed.scheduler.allowed-failures); a rerun resumes the build: {exc}") from None
        except CancelledError as exc:  # the scheduler went away (or cancelled the task)
            raise FacedataError(f"Dask task {future.key} was cancelled by the cluster ({exc}); a rerun resumes the "
                                "build") from None
        future.release()
        return result

    def settle(self, timeout: float = 60.0) -> None:
        """Wait (up to `timeout` s) for the tasks in flight to end, and drop them: after a failure, so that no
        task is still writing into the output directory when the build cleans it."""
        if self.pending:
            with contextlib.suppress(TimeoutError):
                wait(list(self.pending), timeout=timeout)
            self.pending.clear()

    def close(self, ok: bool) -> None:
        """Cancel what is left, remove the job from the workers, disconnect (and stop a LocalCluster)."""
        try:
            if self.pending:
                self.client.cancel(list(self.pending))
                self.pending.clear()
            self.client.unregister_worker_plugin(self.name)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def _when_finished(call: Callable[[tuple], None], part: tuple, future: Any) -> None:
    if future.status == "finished":
        call(part)


def _dashboard(client: Client) -> str:
    try:
        return client.dashboard_link
    except (KeyError, AttributeError):  # the scheduler serves no dashboard (bokeh not installed)
        return "not served (pip install bokeh)"
