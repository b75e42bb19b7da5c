"""Several datasets in one training stream, each taking its weighted share of every epoch: a task whose share is
larger than its data repeats (every row before any row twice), a smaller share is a seeded sample."""

from __future__ import annotations

import random
from typing import Any


def epoch_counts(sizes: list[int], weights: list[float]) -> list[int]:
    """Rows each dataset contributes to an epoch of ``sum(sizes)`` rows, in proportion to ``weights``."""
    total, weight_sum = sum(sizes), sum(weights)
    counts = [int(total * w / weight_sum) for w in weights]
    for index in sorted(range(len(weights)), key=lambda i: -(total * weights[i] / weight_sum % 1))[:total - sum(counts)]:
        counts[index] += 1  # the largest remainders take the rows rounding left over
    return counts


def mix(datasets: list[list[Any]], weights: list[float], seed: int) -> tuple[list[Any], list[int]]:
    """The mixed epoch (shuffled) and how many rows each dataset gave."""
    rng = random.Random(seed)
    counts = epoch_counts([len(d) for d in datasets], weights)
    mixed: list[Any] = []
    for rows, count in zip(datasets, counts):
        full, rest = divmod(count, len(rows))
        for _ in range(full):
            mixed += rng.sample(rows, len(rows))
        mixed += rng.sample(rows, rest)
    rng.shuffle(mixed)
    return mixed, counts
