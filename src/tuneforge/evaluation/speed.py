"""Throughput as the median of timed repeats after a warm-up (what a table of variants compares)."""

from __future__ import annotations

import time
from typing import Any, Callable


def median_rate(work: Callable[[], Any], units: int, repeats: int = 3, warmup: int = 1) -> dict[str, float]:
    """Units per second of ``work`` (which handles ``units`` items): the median of ``repeats`` runs after
    ``warmup`` untimed ones, and the slowest and fastest run."""
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    seconds.sort()
    return {"per_second": round(units / seconds[len(seconds) // 2], 2), "seconds": [round(s, 3) for s in seconds],
            "units": units, "repeats": repeats}
