"""The data stage of a generative run: load records -> detect format -> parse conversations -> clean ->
deduplicate -> split -> remove prompts leaked across splits, every dropped example counted in the report."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tuneforge.config.schema import CleanConfig, DataConfig, SplitConfig
from tuneforge.data.cleaning import clean_rows, clean_text
from tuneforge.data.formats import Example, parse_examples
from tuneforge.data.sources import Row, load_records
from tuneforge.data.splitting import SPLITS, overlap_counts, remove_leakage, stratified_split

_BLANK_RUN = re.compile(r"[ \t]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


@dataclass
class GenerativeData:
    splits: dict[str, list[Example]]
    format: str
    report: dict[str, Any]

    @property
    def raw_text(self) -> bool:
        return self.format == "text"


def prepare_generative(config: DataConfig, seed: int, tools: Any = None) -> GenerativeData:
    """``tools``: augmentation's translator (data.augment back_translation), an ``augment.AugmentTools``."""
    records, file_format, bad = load_records(config.path, config.format, config.on_bad_rows, config.hf_split)
    examples, fmt = parse_examples(records, config.dataset_format, config.columns, config.roles,
                                   config.system_prompt)
    modified: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    kept = []
    for example in examples:
        changed = _clean(example, config.clean)
        modified.update(changed)
        if not example.reference.strip() or (example.messages and not any(
                m["content"].strip() for m in example.prompt_messages)):
            dropped["empty_text"] += 1
            continue
        kept.append(example)
    # deduplicate whole examples (exact and near), with the classification path's counted cleaning
    by_where = {example.where: example for example in kept}
    dedup = clean_rows([Row(_flat(e.messages) or e.text, "*", e.where) for e in kept],
                       CleanConfig(normalize_unicode=False, strip_control=False, collapse_whitespace=False,
                                   drop_empty=False, dedup_exact=config.clean.dedup_exact,
                                   dedup_near=config.clean.dedup_near, near_threshold=config.clean.near_threshold))
    dropped.update(dedup.dropped)
    kept = [by_where[row.where] for row in dedup.rows]
    if config.max_rows and len(kept) > config.max_rows:
        dropped["not_sampled (data.max_rows)"] = len(kept) - config.max_rows
        kept = random.Random(seed).sample(sorted(kept, key=lambda e: e.where), config.max_rows)
    # split on the prompt: the same question must not be in two splits
    rows = [Row(_flat(e.prompt_messages) if e.messages else e.text, "*", e.where) for e in kept]
    parts = stratified_split(rows, SplitConfig(**{**config.split.model_dump(), "stratify": False}), seed)
    leaked = remove_leakage(parts)
    for name, count in leaked.items():
        if count:
            dropped[f"prompt_leaked_into_{name}"] = count
    by_where = {example.where: example for example in kept}
    splits = {name: [by_where[row.where] for row in parts[name]] for name in SPLITS}
    rows_read = len(records) + len(bad)
    if bad:
        dropped["malformed_row"] = len(bad)
    total_kept = sum(len(part) for part in splits.values())
    assert rows_read == total_kept + sum(dropped.values()), "every record is kept or counted as dropped"
    augmentation = _augment(splits, config, seed, tools)  # the training split only, after the leakage check
    report = {
        "source": {"path": str(config.path), "format": file_format, "dataset_format": fmt, "rows_read": rows_read},
        "cleaning": {"modified": dict(modified), "dropped": dict(dropped), "dropped_total": sum(dropped.values()),
                     "examples": {"malformed_row": bad[:5]} if bad else {}},
        "rows_kept": total_kept,
        "splits": {name: {"rows": len(splits[name]), "turns": _turns(splits[name])} for name in SPLITS},
        "leakage": {"overlapping_prompts": overlap_counts(parts), "removed": leaked,
                    **({"augmented_copies_only_in": "train"} if augmentation else {})},
        **({"augmentation": augmentation} if augmentation else {}),
    }
    return GenerativeData(splits=splits, format=fmt, report=report)


def _augment(splits: dict[str, list[Example]], config: DataConfig, seed: int, tools: Any) -> dict[str, Any] | None:
    """Augmented copies of the training examples: their prompts changed, their answers kept (data.augment.targets
    changes those too)."""
    if config.augment is None:
        return None
    from tuneforge.data.augment_generative import augment_examples

    settings = config.augment
    ratio = settings.back_translation.max_length_ratio if settings.back_translation else 1.5
    done = augment_examples(splits["train"], list(settings.operations), settings.copies, settings.rate,
                            settings.seed + seed, settings.targets, tools.translate if tools else None, ratio)
    splits["train"] = done.rows
    return done.report(settings)


def _clean(example: Example, config: CleanConfig) -> list[str]:
    changed: list[str] = []
    for message in example.messages:
        message["content"] = clean_turn(message["content"], config, changed)
    if example.text is not None:
        example.text = clean_turn(example.text, config, changed)
    return sorted(set(changed))


def clean_turn(text: str, config: CleanConfig, changed: list[str]) -> str:
    """Unicode repair and control characters as for classification; whitespace is trimmed and runs of blanks
    collapsed, but line breaks stay (they carry meaning in answers, lists and code). The steps that changed the text
    are added to ``changed``."""
    steps = CleanConfig(normalize_unicode=config.normalize_unicode, strip_control=config.strip_control,
                        collapse_whitespace=False)
    text, done = clean_text(text.replace("\r\n", "\n"), steps)
    changed.extend(done)
    if config.collapse_whitespace:
        tidy = _MANY_NEWLINES.sub("\n\n", "\n".join(_BLANK_RUN.sub(" ", line).strip()
                                                   for line in text.split("\n"))).strip()
        if tidy != text:
            changed.append("whitespace_normalized")
        text = tidy
    return text


def _flat(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _turns(examples: list[Example]) -> dict[str, float]:
    if not examples:
        return {}
    counts = [sum(m["role"] == "assistant" for m in e.messages) for e in examples]
    return {"assistant_turns_mean": round(sum(counts) / len(counts), 2), "multi_turn": sum(c > 1 for c in counts)}
