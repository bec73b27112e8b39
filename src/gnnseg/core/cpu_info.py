"""What the CPU is: its model name and instruction-set flags as Linux reports them (torch-free)."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path


@cache
def cpu_model_and_flags() -> tuple[str, str]:
    """The first CPU's ``model name`` and ``flags`` from ``/proc/cpuinfo``; elsewhere (or unreadable) what the
    platform module says: ``(processor or machine, "")``."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if "model name" in fields and "flags" in fields:
                break
    except OSError:
        pass
    return (fields.get("model name") or platform.processor() or platform.machine(), fields.get("flags", ""))
