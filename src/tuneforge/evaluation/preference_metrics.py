"""Figures of preference evaluation, pure functions over per-example arrays, each with a percentile bootstrap
interval over the same resamples (so differences are paired)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneforge.evaluation.metrics import percentile_interval


def wins(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> np.ndarray:
    """Per example: 1 where ``a`` scores above ``b``, 0.5 on a tie, 0 below (pairwise accuracy, win rate)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return (a > b) + 0.5 * (a == b)


def mean_with_interval(name: str, values: np.ndarray | list[float], indices: np.ndarray,
                       confidence: float) -> dict[str, Any]:
    values = np.asarray(values, dtype=float)
    if not len(values):
        return {}
    return {name: round(float(values.mean()), 4),
            f"{name}_ci": percentile_interval(values[indices].mean(axis=1), confidence)}


def paired_difference(name: str, a: np.ndarray | list[float], b: np.ndarray | list[float], indices: np.ndarray,
                      confidence: float) -> dict[str, Any]:
    """``a`` minus ``b`` per example, its mean and interval (the verdict reads ``<name>_ci``)."""
    return mean_with_interval(name, np.asarray(a, dtype=float) - np.asarray(b, dtype=float), indices, confidence)


def against_constant(name: str, values: np.ndarray | list[float], constant: float, indices: np.ndarray,
                     confidence: float) -> dict[str, Any]:
    """The difference from a fixed baseline (chance 0.5, or the reference's win rate against itself)."""
    values = np.asarray(values, dtype=float)
    return paired_difference(name, values, np.full_like(values, constant), indices, confidence)
