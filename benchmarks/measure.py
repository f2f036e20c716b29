"""Wall time and peak memory of a command's whole process tree (parent, pool workers, forkserver).

Memory is read from /proc/PID/smaps_rollup every 100 ms and summed over the tree as PSS (proportional
set size): a page shared by k processes (the forkserver's copy-on-write heap, numpy/OpenCV/onnxruntime
libraries) counts 1/k in each, so the sum is what the tree really holds. Plain RSS summed over
processes counts shared pages once per process; the largest single-process RSS is reported as well.
`anon` is the anonymous part (heap, buffers: what the build allocates), `total` adds file-backed pages
(libraries, and memory-mapped shard or plan files that are page cache, not process heap).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass
class Peak:
    anon: int = 0  # bytes, PSS of anonymous pages summed over the tree
    total: int = 0  # bytes, PSS of all pages summed over the tree
    max_rss: int = 0  # bytes, the largest RSS of one process

    def update(self, other: Peak) -> None:
        self.anon, self.total = max(self.anon, other.anon), max(self.total, other.total)
        self.max_rss = max(self.max_rss, other.max_rss)


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
        todo.extend(children.get(p, []))
    return peak


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, Peak, str]:
    """(wall seconds, peak tree memory, output) of a command; raises SystemExit if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
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
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{out}")
    return wall, peak, out


def mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"
