"""Where a build's chunk jobs run: the local process pool, or a Dask distributed cluster.

Every engine runs the same worker functions (facedata.buildworker). The local pool hands rendered samples,
in order, to the build process, which writes the shards; on Dask each task writes a whole shard to the
shared output directory (facedata.shardedrender) and hands back only its index entry. The shards are cut
at the same samples either way: the bytes never depend on the engine, and the engine is not part of the
dataset's fingerprint (a dataset built on one is 'already complete' on the other, and a build interrupted
on one resumes on the other).

- `local`: a process pool on this machine (`--workers N`, facedata.workerpool.Runner).
- `dask`: a running Dask cluster (`--scheduler tcp://HOST:8786`); its size is the workers' business
  (`dask worker ADDRESS --nworkers K --nthreads 1`).
- `dask-local`: a LocalCluster started for the build, `--workers N` processes of one thread each.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from facedata.errors import FacedataError

ENGINE_NAMES = ("local", "dask", "dask-local")


class ChunkRunner(Protocol):
    """Ordered results of chunk jobs; `slots` jobs run at a time. `writes_shards`: the workers (maybe on other
    machines) render and write whole shards (facedata.shardedrender) instead of streaming samples here."""

    slots: int
    writes_shards: bool

    def ordered(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Any]: ...

    def close(self, ok: bool) -> None: ...


class ShardRunner(ChunkRunner, Protocol):
    """A runner whose workers write the shards (`writes_shards`): a shard's pieces render as tasks of their own,
    and their results travel between workers to the task that writes the shard."""

    def ordered_parts(
        self, part_fn: Callable[..., Any], fn: Callable[..., Any], jobs: Iterable[tuple[list[tuple], tuple]],
        on_part: Callable[[tuple], None] | None = None,
    ) -> Iterator[Any]: ...

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for the tasks in flight to end, and drop them."""


@dataclass(frozen=True)
class Engine:
    """An engine and its connection options (`--engine`, `--scheduler`)."""

    name: str = "local"
    scheduler: str | None = None  # dask: the address of a running `dask scheduler`
    timeout: float = 10.0  # dask: seconds to wait for the scheduler, and then for its first worker

    def check(self, workers: int | None) -> None:
        """Refuse inconsistent options before any input is read (one line naming the flag)."""
        if self.name not in ENGINE_NAMES:
            raise FacedataError(f"--engine {self.name!r}: expected one of {', '.join(ENGINE_NAMES)}")
        if self.name == "dask" and not self.scheduler:
            raise FacedataError("--engine dask needs --scheduler ADDRESS (a running `dask scheduler`, e.g. "
                                "tcp://10.0.0.1:8786); --engine dask-local starts a cluster on this machine")
        if self.name != "dask" and self.scheduler:
            raise FacedataError(f"--scheduler {self.scheduler}: only with --engine dask (not --engine {self.name})")
        if self.name == "dask" and workers is not None:
            raise FacedataError("--workers: a running cluster's workers are set where they start "
                                "(`dask worker ADDRESS --nworkers K`); --workers is for --engine local|dask-local")
        if self.name != "local" and importlib.util.find_spec("distributed") is None:
            raise FacedataError(f"--engine {self.name} needs Dask distributed: pip install 'facedata[dask]'")

    def prepare(self, workers: int) -> None:
        """Start what can start early: the local pool's worker server imports while the manifests load."""
        if self.name == "local" and workers > 1:
            from facedata.workerpool import pool_context

            pool_context()

    def runner(self, job: Any, workers: int, progress: bool) -> ChunkRunner:
        """The runner of `job`'s chunks (the job's per-worker state is installed once per worker)."""
        if self.name == "local":
            from facedata.workerpool import Runner

            return Runner(job, workers)
        from facedata.daskrunner import DaskRunner

        return DaskRunner.start(self, job, workers, progress)
