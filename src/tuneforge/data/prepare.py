"""The data stage of a run: load -> clean -> check labels -> split -> check leakage, with a report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from tuneforge.config.schema import DataConfig
from tuneforge.data.cleaning import clean_rows
from tuneforge.data.sources import Row, load_rows
from tuneforge.data.splitting import SPLITS, check_labels, overlap_counts, remove_leakage, sample_rows, \
    stratified_split


@dataclass
class PreparedData:
    splits: dict[str, list[Row]]
    labels: list[str]
    report: dict[str, Any]

    def texts(self, split: str) -> list[str]:
        return [row.text or "" for row in self.splits[split]]

    def label_ids(self, split: str) -> list[int]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [index[str(row.label)] for row in self.splits[split]]


def prepare_data(config: DataConfig, seed: int, tools: Any = None) -> PreparedData:
    """``tools``: augmentation's translator and label filter (data.augment), an ``augment.AugmentTools``."""
    loaded = load_rows(config.path, config.format, config.text_column, config.label_column,
                       config.on_bad_rows, config.hf_split)
    cleaned = clean_rows(loaded.rows, config.clean)
    rows, rare_dropped = check_labels(cleaned.rows, config.split, config.min_examples_per_class)
    before_sample = len(rows)
    if config.max_rows:
        rows = sample_rows(rows, config.max_rows, seed)
    parts = stratified_split(rows, config.split, seed)
    leaked = remove_leakage(parts)
    labels = sorted({str(row.label) for row in rows})

    dropped = dict(cleaned.dropped)
    if loaded.bad_rows:
        dropped["malformed_row"] = len(loaded.bad_rows)
    if rare_dropped:
        dropped["rare_class"] = sum(rare_dropped.values())
    if config.max_rows and before_sample > len(rows):
        dropped["not_sampled (data.max_rows)"] = before_sample - len(rows)
    for name, count in leaked.items():
        if count:
            dropped[f"leaked_into_{name}"] = count
    kept = sum(len(part) for part in parts.values())
    rows_read = len(loaded.rows) + len(loaded.bad_rows)
    assert rows_read == kept + sum(dropped.values()), "every row is kept or counted as dropped"
    augmentation = _augment(parts, config, seed, tools)
    report = {
        "source": {"path": str(config.path), "format": loaded.format, "rows_read": rows_read,
                   **({"lines": loaded.lines} if loaded.lines else {})},
        "cleaning": {
            "modified": dict(cleaned.modified),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "examples": {**dict(cleaned.examples), **({"malformed_row": loaded.bad_rows[:5]} if loaded.bad_rows else {})},
            "rare_classes_dropped": rare_dropped,
        },
        "rows_kept": kept,
        "labels": labels,
        "splits": {name: {"rows": len(parts[name]),
                          "per_class": dict(sorted(Counter(str(r.label) for r in parts[name]).items()))}
                   for name in SPLITS},
        "leakage": {"overlapping_texts": overlap_counts(parts), "removed": leaked,
                    **({"augmented_copies_only_in": "train"} if augmentation else {})},
        "warnings": loaded.warnings,
        **({"augmentation": augmentation} if augmentation else {}),
    }
    return PreparedData(splits=parts, labels=labels, report=report)


def _augment(parts: dict[str, list[Row]], config: DataConfig, seed: int, tools: Any) -> dict[str, Any] | None:
    """Augmented copies appended to the training split only (the splits and the leakage check are already done);
    the counts and a sample for data_report.json. Row counts above (rows_kept, per class) are the originals'."""
    if config.augment is None:
        return None
    from tuneforge.data.augment import AugmentTools, augment_rows

    settings, tools = config.augment, tools or AugmentTools()
    translation = settings.back_translation
    keep_label = tools.keep_label(parts["train"]) if settings.keep_label != "none" and tools.keep_label else None
    done = augment_rows(parts["train"], list(settings.operations), settings.copies, settings.rate,
                        settings.seed + seed, lambda row, text, where: replace(row, text=text, where=where),
                        tools.translate, translation.max_length_ratio if translation else 1.5, keep_label)
    parts["train"] = done.rows
    return done.report(settings)


def token_length_stats(lengths: list[int], max_length: int) -> dict[str, float]:
    import numpy as np

    if not lengths:
        return {}
    array = np.asarray(lengths)
    return {"min": int(array.min()), "mean": round(float(array.mean()), 1), "p50": float(np.percentile(array, 50)),
            "p95": float(np.percentile(array, 95)), "max": int(array.max()),
            "truncated": int((array > max_length).sum()),
            "truncated_pct": round(100 * float((array > max_length).mean()), 2)}


TRUNCATION_WARN_PCT = 5.0  # warn when more of the training split than this is cut at data.max_length


def truncation_warning(stats: dict[str, float], max_length: int, unit: str = "examples") -> str | None:
    """One line when data.max_length cuts a notable share of the training split: the length that would keep 95%
    whole, and what it costs (tokens per example grow by about that ratio)."""
    if not stats or stats.get("truncated_pct", 0.0) <= TRUNCATION_WARN_PCT:
        return None
    p95 = int(stats["p95"])
    return (f"data.max_length {max_length} truncates {stats['truncated_pct']:.0f}% of the training {unit} "
            f"(longest {stats['max']} tokens); data.max_length={p95} would keep 95% whole, at about "
            f"{p95 / max_length:.1f}x the tokens per example")
