"""Label checks, seeded stratified train/validation/test split, and the leakage check."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from tuneforge.config.schema import SplitConfig
from tuneforge.data.cleaning import normalized_key
from tuneforge.data.sources import Row
from tuneforge.errors import DataError

SPLITS = ("train", "validation", "test")


def check_labels(rows: list[Row], split: SplitConfig, min_examples: int) -> tuple[list[Row], dict[str, int]]:
    """Drop classes below ``min_examples`` (counted); refuse data that cannot train or split."""
    counts = Counter(row.label for row in rows)
    dropped = {label: n for label, n in counts.items() if n < min_examples}
    rows = [row for row in rows if row.label not in dropped]
    counts = Counter(row.label for row in rows)
    if len(counts) < 2:
        only = next(iter(counts), None)
        raise DataError(f"need at least 2 classes to train a classifier, found {len(counts)}"
                        + (f" ({only!r})" if only else "") + " (check data.label_column)")
    needed = sum(1 for share in (split.train, split.validation, split.test) if share > 0)
    rare = sorted(label for label, n in counts.items() if n < needed)
    if rare:
        shown = ", ".join(f"{label!r} ({counts[label]})" for label in rare[:5])
        raise DataError(f"classes with too few examples to split into {needed} parts: {shown}; add examples or "
                        f"set data.min_examples_per_class={needed} to drop them (counted)")
    return rows, dropped


def sample_rows(rows: list[Row], max_rows: int, seed: int) -> list[Row]:
    """A seeded sample of ``max_rows`` rows that keeps class proportions."""
    if len(rows) <= max_rows:
        return rows
    by_class = _by_class(rows, seed)
    quota = {label: max(3, round(len(items) * max_rows / len(rows))) for label, items in by_class.items()}
    chosen = [row for label, items in by_class.items() for row in items[:quota[label]]]
    random.Random(seed).shuffle(chosen)
    return chosen


def stratified_split(rows: list[Row], split: SplitConfig, seed: int) -> dict[str, list[Row]]:
    """Per class (when stratified): shuffle with the seed, give test and validation their share (at least one
    example each when their share is > 0), train the rest. Rows are sorted by text before the seeded shuffle,
    so the same seed gives the same split whatever the order of the rows in the file."""
    groups = _by_class(rows, seed) if split.stratify else {"*": _shuffled(rows, seed)}
    parts: dict[str, list[Row]] = {name: [] for name in SPLITS}
    for items in groups.values():
        n = len(items)
        n_test = max(1, round(n * split.test))
        n_val = max(1, round(n * split.validation)) if split.validation > 0 else 0
        if n - n_test - n_val < 1:
            n_val = max(0, n - n_test - 1)
        parts["test"] += items[:n_test]
        parts["validation"] += items[n_test:n_test + n_val]
        parts["train"] += items[n_test + n_val:]
    for name in SPLITS:
        random.Random(f"{seed}-{name}").shuffle(parts[name])
    return parts


def remove_leakage(parts: dict[str, list[Row]]) -> dict[str, int]:
    """No normalized text may appear in two splits: such rows leave validation/test (train keeps its copy).
    Returns how many were removed per split; zero after deduplication, a guard when it is switched off."""
    seen = {normalized_key(row.text or "") for row in parts["train"]}
    removed = {}
    for name in ("validation", "test"):
        kept = [row for row in parts[name] if normalized_key(row.text or "") not in seen]
        removed[name] = len(parts[name]) - len(kept)
        parts[name] = kept
        seen |= {normalized_key(row.text or "") for row in kept}
    return removed


def overlap_counts(parts: dict[str, list[Row]]) -> dict[str, int]:
    keys = {name: {normalized_key(row.text or "") for row in parts[name]} for name in SPLITS}
    return {f"{a}&{b}": len(keys[a] & keys[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}


def _by_class(rows: list[Row], seed: int) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[str(row.label)].append(row)
    return {label: _shuffled(groups[label], f"{seed}-{label}") for label in sorted(groups)}


def _shuffled(rows: list[Row], seed: object) -> list[Row]:
    rows = sorted(rows, key=lambda row: (row.text or "", str(row.label)))
    random.Random(str(seed)).shuffle(rows)
    return rows
