"""What the machine has: available memory (MemAvailable, cgroup headroom, CUDA), sizes for
messages.
"""

from __future__ import annotations

from pathlib import Path

import torch

UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a number near 2**63


def format_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``: sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, ValueError):
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reclaimable(stat: Path, key: str) -> int:
    # page cache that is not in active use is freed under pressure before anything is killed
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup"),
                     self_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """Smallest ``limit - usage`` over this process's memory cgroup and its ancestors."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        _, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2
            base, names = root, ("memory.max", "memory.current", "memory.stat", "inactive_file")
        elif "memory" in controllers.split(","):  # cgroup v1
            base, names = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                            "memory.stat", "total_inactive_file")
        else:
            continue
        folder = base / rel.lstrip("/")
        # a container usually sees its own cgroup as the root: walk up to the mount point
        while True:
            limit = _read_int(folder / names[0])
            usage = _read_int(folder / names[1])
            if limit is not None and usage is not None and limit < UNLIMITED:
                room = limit - usage + _reclaimable(folder / names[2], names[3])
                best = room if best is None else min(best, room)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return None if best is None else max(best, 0)


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``; ``None`` when unknown.

    On the CPU (Linux): the smaller of ``MemAvailable`` and the headroom under a cgroup
    memory limit. On a CUDA device: the free memory ``torch.cuda.mem_get_info`` reports.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    return min(known) if known else None
