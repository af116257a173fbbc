"""Memory estimates before large allocations: a job that would not fit is refused with one
line giving the estimate, instead of an allocation traceback (or the machine swapping).

The bound is the memory this process may still use: the smaller of the system's
``MemAvailable`` and the room left under a cgroup limit (a SLURM job's memory, a
container's)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, then v1), or None."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                return None
            return int(limit) - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def available_bytes() -> int | None:
    """Bytes this process may still allocate (None when the system does not say)."""
    known = [b for b in (_meminfo_available(), _cgroup_room()) if b is not None]
    return min(known) if known else None


def human(n: float) -> str:
    """Bytes as text: 1.5 GB, 300 MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def check_fits(what: str, need: float, fix: str) -> None:
    """Refuse (:class:`InputError`, one line) when ``need`` bytes for ``what`` exceed what this
    process may still allocate; ``fix`` says what to change."""
    have = available_bytes()
    if have is not None and need > have:
        raise InputError(f"{what} needs about {human(need)} of memory, more than the {human(have)} available "
                         f"here: {fix}")
