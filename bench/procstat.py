"""``/proc`` readings with no third-party imports (the worker's baseline RSS must not include bench code)."""

from __future__ import annotations

import os
from typing import Any

STAT_SQL = "SELECT pg_read_file('/proc/self/stat');"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> float:
    """CPU seconds (user + system) from a ``/proc/<pid>/stat`` line."""
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def backend_cpu(cursor: Any) -> float:
    """CPU seconds used so far by the server backend of ``cursor``'s connection (superuser only).

    The backend reads its own ``/proc/self/stat`` with ``pg_read_file``.
    """
    cursor.execute(STAT_SQL)
    return parse_stat(cursor.fetchone()[0])


def machine_cpu() -> tuple[float, float]:
    """Busy and steal CPU seconds of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def memory_mb() -> dict[str, float]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of this process in MB (10^6 bytes).

    ``VmHWM`` belongs to the process's own address space, so it starts afresh at ``exec``.
    ``getrusage().ru_maxrss`` does not: Linux carries the parent's high-water mark across
    fork + exec, so a child of a process holding a gigabyte of test data would report a gigabyte.
    """
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value, _unit = line.split()
                out[name.rstrip(":")] = int(value) * 1024 / 1e6
    return out


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def mem_total_mb() -> float:
    """Physical memory in MB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")
