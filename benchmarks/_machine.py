"""Measuring tools the benchmark scripts share: machine load, interleaved repeats, peaks, memory.

Not a benchmark itself (run with ``--quick`` it only prints the load). The machine may be shared:
every timed call records the *foreign load*, the cores other processes kept busy meanwhile
(``/proc/stat`` busy time minus this process's CPU time, over the wall time), and ratios are taken
between calls that ran next to each other (the median over repeats of the per-repeat ratio).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def load_average() -> str:
    """The 1/5/15-minute load averages and the core count, as ``uptime`` reports them."""
    try:
        with open("/proc/loadavg") as handle:
            one, five, fifteen = handle.read().split()[:3]
    except OSError:
        return "load unknown"
    return f"load average {one}, {five}, {fifteen} on {os.cpu_count()} cores"


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Sample:
    """One timed call: wall seconds and the foreign load (cores) meanwhile."""

    seconds: float
    foreign: float


def timed(fn: Callable[[], object]) -> Sample:
    """Run ``fn`` once and time it."""
    busy, own = _busy_seconds(), _own_seconds()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    busy_end, own_end = _busy_seconds(), _own_seconds()
    foreign = float("nan") if busy is None else max(0.0, (busy_end - busy) - (own_end - own)) / max(wall, 1e-9)
    return Sample(wall, foreign)


@dataclass
class Series:
    """The repeats of one configuration."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time."""
        return statistics.median(s.seconds for s in self.samples)

    @property
    def foreign(self) -> float:
        """Median foreign load (cores)."""
        return statistics.median(s.foreign for s in self.samples)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, Series]:
    """Time every function ``repeats`` times, round-robin, so slow phases of the machine hit all."""
    out = {name: Series() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].samples.append(timed(fn))
    return out


def paired_ratio(slow: Series, fast: Series) -> float:
    """Median over repeats of ``slow / fast``, each pair timed back to back."""
    return statistics.median(a.seconds / b.seconds for a, b in zip(slow.samples, fast.samples))


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 9) -> float:
    """Median GFLOP/s of an ``n``-cube ``torch.mm`` (2 n³ FLOP) in ``dtype`` on this process's threads."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    times = [timed(lambda: torch.mm(a, b)).seconds for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux ``clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB) since the start or the last :func:`reset_peak`."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now (MiB)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def run_child(args: list[str]) -> dict:
    """Run ``python <args>`` in a fresh process; it must print one JSON object as its last line."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(load_average())
