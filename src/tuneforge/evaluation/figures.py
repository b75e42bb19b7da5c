"""A figure as people read it: the value and its interval, ``0.9582 [0.9330, 0.9790]`` (imports nothing heavy: the
console summary, run listings and model cards all write figures this way)."""

from __future__ import annotations

from typing import Any


def with_interval(value: Any, interval: Any = None, missing: str = "n/a", plain: str = ".4f") -> str:
    """``value [low, high]`` to 4 decimals; the value alone (``plain`` format) when there is no interval or a bound
    is null (not finite); ``missing`` when there is no value."""
    if not isinstance(value, (int, float)):
        return missing
    if not interval or not all(isinstance(bound, (int, float)) for bound in interval):
        return format(value, plain)
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"
