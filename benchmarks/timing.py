"""Wall-clock helpers shared by the benchmark scripts (run from this folder, so they import it directly)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def best_of(function: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds: the figure least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return min(times)


def worker_output(script: str | Path, *args: object) -> str:
    """The last line that ``python script --worker *args`` prints, run in a Python process of its own (for settings of
    a whole process, and for imports and caches that must start cold); a failure raises with the worker's stderr."""
    command = [sys.executable, str(Path(script).resolve()), "--worker", *map(str, args)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")
    return finished.stdout.strip().splitlines()[-1]
