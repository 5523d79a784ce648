"""What this machine has: its memory and its GPUs' memory, read without loading torch (a worker
advertises them to the queue; worker.resources checks runs against them)."""

from __future__ import annotations

import os
import shutil
import subprocess


MEMORY_LIMIT = "ADAPT_DISTILL_MEMORY_GIB"
"""The most memory (GiB) this machine's runs may take, below what it has: a shared machine's
operator leaves room for others. A worker advertises it, and runs are checked against it."""


def memory_limit() -> int | None:
    from core.errors import ConfigError

    raw = os.environ.get(MEMORY_LIMIT, "").strip()
    if not raw:
        return None
    try:
        limit = float(raw)
    except ValueError:
        limit = -1.0
    if not 0 < limit < 2**40:
        raise ConfigError(f"{MEMORY_LIMIT} must be a positive number of GiB (e.g. 16), got '{raw}'")
    return int(limit * 2**30)


def machine_memory() -> tuple[int, int]:
    """(total, available) bytes of this machine's memory, each at most ADAPT_DISTILL_MEMORY_GIB."""
    total, available = _physical_memory()
    limit = memory_limit()
    return (total, available) if limit is None else (min(total, limit), min(available, limit))


def _physical_memory() -> tuple[int, int]:
    """(total, available) bytes: /proc/meminfo where there is one (the kernel's MemAvailable), else
    the page counts."""
    try:
        fields = {}
        with open("/proc/meminfo") as lines:
            for line in lines:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields["MemTotal"])
    except (OSError, KeyError, ValueError, IndexError):
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError):
            available = total
        return total, available


def gpu_memory() -> list[int]:
    """Total bytes of each NVIDIA GPU the driver lists (nvidia-smi, so CUDA is not initialised in a
    process that forks); [] when there is none or nvidia-smi is missing."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return [int(float(line)) * 2**20 for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
