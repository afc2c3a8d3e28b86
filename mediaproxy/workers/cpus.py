"""``[proxy] workers = auto``: how many CPUs this process may use.

The smaller of the CPUs in its affinity mask (``taskset``, cpusets) and its cgroup's CPU quota,
rounded up: a container limited to 1.5 CPUs on a 64-core host gets 2 workers, not 64. Pure
functions over a root directory, so tests give them a fake cgroup tree.
"""

from __future__ import annotations

import math
import os


def quota_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """The cgroup CPU quota in whole CPUs (rounded up), or None when there is none.

    cgroup v2: ``cpu.max`` holds ``"max 100000"`` (no quota) or ``"QUOTA PERIOD"`` in µs.
    cgroup v1: ``cpu/cpu.cfs_quota_us`` (``-1``: none) over ``cpu/cpu.cfs_period_us`` (also
    looked for directly under the root, where some hosts mount the cpu controller).
    Unreadable or malformed files count as no quota: the affinity mask still bounds the count.
    """
    v2 = _read(os.path.join(cgroup_root, "cpu.max"))
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            return _ratio(parts[0], parts[1])
        return None
    for directory in (os.path.join(cgroup_root, "cpu"), os.path.join(cgroup_root, "cpu,cpuacct"), cgroup_root):
        quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
        period = _read(os.path.join(directory, "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def usable_cpus(affinity: int, cgroup_root: str = "/sys/fs/cgroup") -> int:
    """``min(affinity, quota rounded up)``, at least 1. ``affinity`` is
    ``len(os.sched_getaffinity(0))``."""
    quota = quota_cpus(cgroup_root)
    count = affinity if quota is None else min(affinity, quota)
    return max(1, count)


def this_process_cpus() -> int:
    """:func:`usable_cpus` for this process on this host."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    return usable_cpus(affinity)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _ratio(quota: str, period: str) -> int | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:  # v1 writes -1 for "no quota"
        return None
    return max(1, math.ceil(q / p))
