"""Wall time, CPU time, bytes written and peak memory of a command's whole process tree (parent, pool
workers, forkserver).

Memory is read from /proc/PID/smaps_rollup every 100 ms and summed over the tree, in three figures:
- `anon`: PSS of anonymous pages (heap, buffers: what the program allocates). Build/reader memory goals
  use this figure: it is what the tree really holds, a page shared by k processes (the forkserver's
  copy-on-write heap) counting 1/k in each.
- `total`: PSS of all pages, file-backed ones included (libraries, memory-mapped shard or plan files
  that are page cache, not process heap), still shared pages divided among their users.
- `rss`: plain RSS summed over the tree, file-backed pages included, shared pages counted once per
  process (what `ps`/`top` add up to; an upper bound). `max_rss` is the largest single process's RSS.
CPU seconds are user + system time of every process of the tree: getrusage(RUSAGE_CHILDREN) of this
process before and after, the kernel folding each reaped process's time (and its own reaped children's)
into its parent. This process is made a child subreaper, so descendants orphaned by their parent (a pool's
forkserver, its workers) are re-parented here and reaped too, not lost. Bytes written are `write_bytes`
of /proc/self/io the same way (bytes the tree dirtied in the page cache, mmap writes included, whether or
not the files are deleted later).
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass
class Peak:
    anon: int = 0  # bytes, PSS of anonymous pages summed over the tree
    total: int = 0  # bytes, PSS of all pages summed over the tree
    max_rss: int = 0  # bytes, the largest RSS of one process
    rss: int = 0  # bytes, RSS (file-backed pages included) summed over the tree
    cpu: float = 0.0  # seconds, user + system of the whole tree (set by run_measured)
    written: int = 0  # bytes, write_bytes of the whole tree (set by run_measured)

    def update(self, other: Peak) -> None:
        self.anon, self.total = max(self.anon, other.anon), max(self.total, other.total)
        self.max_rss, self.rss = max(self.max_rss, other.max_rss), max(self.rss, other.rss)


def _written_by_reaped_children() -> int:
    """write_bytes of this process, which includes its reaped children's."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("write_bytes:"))


def _become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to this process (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def _reap_orphans(timeout: float = 30.0) -> None:
    """Wait for descendants re-parented here (so their CPU time and bytes count); give up after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _smaps(pid: int) -> tuple[int, int, int]:
    """(Pss_Anon, Pss, Rss) bytes of one process (zeros if it is gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("Pss_Anon", "Pss", "Rss"):
                    values[key] = int(rest.split()[0]) << 10
    except OSError:
        return 0, 0, 0
    return values.get("Pss_Anon", 0), values.get("Pss", 0), values.get("Rss", 0)


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(entry))
    return out


def tree_memory(pid: int) -> Peak:
    children = _children()
    peak, todo = Peak(), [pid]
    while todo:
        p = todo.pop()
        anon, pss, rss = _smaps(p)
        peak.anon, peak.total, peak.max_rss = peak.anon + anon, peak.total + pss, max(peak.max_rss, rss)
        peak.rss += rss
        todo.extend(children.get(p, []))
    return peak


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[float, Peak, str]:
    """(wall seconds, peak tree memory with CPU seconds and bytes written, output) of a command; raises
    SystemExit if it fails. Run one command at a time: CPU and bytes are this process's children's."""
    _become_subreaper()
    cpu0, written0 = _children_cpu(), _written_by_reaped_children()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    peak = Peak()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.update(tree_memory(proc.pid))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    _reap_orphans()
    peak.cpu = _children_cpu() - cpu0
    peak.written = _written_by_reaped_children() - written0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{out}")
    return wall, peak, out


def mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"
