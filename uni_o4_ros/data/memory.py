"""How many bytes this process may still allocate: the computer's free memory, or its memory cgroup's
(a container's `--memory`, a systemd unit's MemoryMax), whichever is tighter.

The dataset readers refuse a file whose declared size will not fit, before reading it. Under a cgroup limit
the computer's MemAvailable says nothing of that limit: a container limited to 4 GB on a 64 GB host read
the file, and the kernel's OOM killer ended the process with no message. Linux only; elsewhere the free
physical pages.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number, v2 as "max".
_NO_LIMIT = 2**62


def available_memory() -> int | None:
    """Bytes that can be allocated without swapping or the OOM killer; None where nothing is known."""
    free = [m for m in (_meminfo_available(), cgroup_available()) if m is not None]
    return min(free) if free else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def cgroup_available(proc_cgroup: Path | None = None, root: Path | None = None) -> int | None:
    """The room left under this process's memory cgroup and every ancestor's limit (the tightest), page cache
    that can be dropped counted as free, as `docker stats` does; None without a limit or a readable cgroup.
    `proc_cgroup` and `root` default to /proc/self/cgroup and /sys/fs/cgroup."""
    proc_cgroup, root = proc_cgroup or PROC_CGROUP, root or CGROUP_ROOT
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    room = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # v2 (unified); on hybrid systems it holds no memory files
            base, names = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            base, names = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        rel = Path(path.lstrip("/"))
        for folder in (base / rel, *(base / p for p in rel.parents)):
            if (left := _room(folder, *names)) is not None:
                room.append(left)
    return min(room) if room else None


def _room(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        limit_text = (folder / limit_file).read_text().strip()
        if limit_text == "max" or int(limit_text) >= _NO_LIMIT:
            return None
        usage = int((folder / usage_file).read_text())
        inactive = 0
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
                break
    except (OSError, ValueError):
        return None
    return max(0, int(limit_text) - max(0, usage - inactive))
