"""Wall-clock helpers shared by the benchmark scripts (run from this folder, so they import it directly)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(function: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds: the figure least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return min(times)
