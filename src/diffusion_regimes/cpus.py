"""How many CPU threads a job uses.

On a shared workstation or cluster node another process often holds a core. torch's
OpenMP threads then collapse: every parallel region waits at a barrier for the thread
whose core is taken. So a job uses at most the CPUs it may run on
(``os.sched_getaffinity``: a SLURM allocation, a ``taskset``) that are idle when it starts
(``/proc/stat`` sampled over 0.2 s), at most the threads its rule asked for, and at least
one. ``OMP_NUM_THREADS`` in the environment caps it (set it to pin the count: results are
bit-identical only for the same count, which every table's metadata records as
``threads``).

Idle OpenMP threads keep libgomp's default wait (a short spin): making them sleep
(``OMP_WAIT_POLICY=PASSIVE``) cost 38 % of the default U-Net's training speed alone and
did not rescue it under load (``benchmarks/bench_threads.py``, table in the README). An
``OMP_WAIT_POLICY`` set in the environment is left as it is.

Imports no torch."""

from __future__ import annotations

import os
import time
from pathlib import Path

#: a CPU counts as free when at least this fraction of it was idle while sampled
IDLE_FRACTION = 0.5


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times() -> dict[int, tuple[int, int]]:
    """cpu -> (idle + iowait jiffies, total jiffies) from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in fields[:8]]
            out[int(name[3:])] = (values[3] + values[4], sum(values))
    return out


def idle_cpus(cpus: list[int], seconds: float = 0.2) -> list[int] | None:
    """Those of ``cpus`` that were mostly idle (:data:`IDLE_FRACTION`) over ``seconds``, or
    None where /proc/stat cannot be read."""
    try:
        before = _cpu_times()
        time.sleep(seconds)
        after = _cpu_times()
    except (OSError, ValueError):
        return None
    free = []
    for cpu in cpus:
        if cpu in before and cpu in after:
            idle, total = (a - b for a, b in zip(after[cpu], before[cpu]))
            if total <= 0 or idle / total >= IDLE_FRACTION:
                free.append(cpu)
    return free


def thread_count(requested: int, cpus: list[int] | None = None, free: list[int] | None = None) -> int:
    """Threads for a job that asked for ``requested``: at most the usable CPUs and, when the
    idle ones are known, at most those; at least 1."""
    cpus = usable_cpus() if cpus is None else cpus
    n = min(max(1, int(requested)), len(cpus))
    if free is not None:
        n = min(n, len(free))
    return max(1, n)


def prepare_threads(requested: int) -> int:
    """This job's thread count (:func:`thread_count` over the idle usable CPUs, capped by the
    environment's ``OMP_NUM_THREADS``), also written to ``OMP_NUM_THREADS`` when unset; call
    before torch is imported, then pass the result to ``torch.set_num_threads``."""
    cpus = usable_cpus()
    n = thread_count(requested, cpus, idle_cpus(cpus) if min(int(requested), len(cpus)) > 1 else None)
    if "OMP_NUM_THREADS" in os.environ:
        n = max(1, min(n, int(os.environ["OMP_NUM_THREADS"])))
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    return n
