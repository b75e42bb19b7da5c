"""Token-classification data (NER with BIO tags): CoNLL-style text (``token<TAB>tag`` per line, a blank line
between sentences) or records with a list of tokens and a list of tags. Cleaned, deduplicated, split without
leakage, every dropped sentence counted; tags not in BIO order (an I-X that starts an entity) are repaired to
B-X and counted."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import DataConfig, SplitConfig
from tuneforge.data.sources import Row, load_records
from tuneforge.data.splitting import SPLITS, overlap_counts, remove_leakage, stratified_split
from tuneforge.errors import DataError
from tuneforge.packages import resolve_data_path

CONLL_SUFFIXES = (".txt", ".conll", ".bio", ".iob", ".iob2")


@dataclass
class Sentence:
    tokens: list[str]
    tags: list[str]
    where: str


@dataclass
class NerData:
    splits: dict[str, list[Sentence]]
    labels: list[str]  # "O" first, then B-/I- tags sorted
    report: dict[str, Any]

    def tag_ids(self, split: str) -> list[list[int]]:
        index = {label: i for i, label in enumerate(self.labels)}
        return [[index[t] for t in s.tags] for s in self.splits[split]]


def read_conll(path: Path) -> tuple[list[Sentence], list[str]]:
    sentences, bad, tokens, tags, start = [], [], [], [], 1
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tokens, tags, f"{path}:{start}"))
            tokens, tags, start = [], [], number + 1
            continue
        parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
        if len(parts) < 2 or not parts[0].strip():
            bad.append(f"{path}:{number}: expected 'token<TAB>tag', got {line.strip()[:40]!r}")
            continue
        tokens.append(parts[0].strip())
        tags.append(parts[-1].strip())
    if tokens:
        sentences.append(Sentence(tokens, tags, f"{path}:{start}"))
    return sentences, bad


def load_sentences(config: DataConfig) -> tuple[list[Sentence], list[str]]:
    path = Path(resolve_data_path(config.path)).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data path not found (set data.path)")
    if path.suffix.lower() in CONLL_SUFFIXES:
        return read_conll(path)
    records, _, bad = load_records(path, config.format, config.on_bad_rows, config.hf_split)
    token_key = config.columns.get("tokens", "tokens")
    tag_key = config.columns.get("tags", "ner_tags" if "ner_tags" in records[0].fields else "tags")
    sentences = []
    for record in records:
        tokens, tags = record.fields.get(token_key), record.fields.get(tag_key)
        if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
            raise DataError(f"{record.where}: token classification needs a list {token_key!r} and a list {tag_key!r} "
                            f"of the same length (found keys {', '.join(record.fields)}; set data.columns.tokens "
                            f"and data.columns.tags)")
        sentences.append(Sentence([str(t) for t in tokens], [str(t) for t in tags], record.where))
    return sentences, bad


def repair_bio(tags: list[str]) -> tuple[list[str], int]:
    """IOB2: an entity starts with B-X; an I-X after O or after another type becomes B-X."""
    fixed, repaired, previous = [], 0, "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag, repaired = "B-" + tag[2:], repaired + 1
        fixed.append(tag)
        previous = tag
    return fixed, repaired


def prepare_ner(config: DataConfig, seed: int) -> NerData:
    sentences, bad = load_sentences(config)
    if bad and config.on_bad_rows == "error":
        raise DataError(f"{bad[0]} (fix the line, or set data.on_bad_rows=skip to drop and count it)")
    dropped: Counter[str] = Counter()
    repaired = 0
    seen: set[tuple[str, ...]] = set()
    kept = []
    for sentence in sentences:
        key = tuple(t.lower() for t in sentence.tokens)
        if config.clean.dedup_exact and key in seen:
            dropped["exact_duplicate"] += 1
            continue
        seen.add(key)
        sentence.tags, count = repair_bio(sentence.tags)
        repaired += count
        kept.append(sentence)
    bad_tags = sorted({t for s in kept for t in s.tags if t != "O" and not t.startswith(("B-", "I-"))})
    if bad_tags:
        raise DataError(f"tags must be O, B-<type> or I-<type> (BIO); found {', '.join(bad_tags[:5])}")
    if config.max_rows and len(kept) > config.max_rows:
        dropped["not_sampled (data.max_rows)"] = len(kept) - config.max_rows
        kept = random.Random(seed).sample(kept, config.max_rows)
    by_where = {s.where: s for s in kept}
    rows = [Row(" ".join(s.tokens), "*", s.where) for s in kept]
    parts = stratified_split(rows, SplitConfig(**{**config.split.model_dump(), "stratify": False}), seed)
    leaked = remove_leakage(parts)
    for name, count in leaked.items():
        if count:
            dropped[f"leaked_into_{name}"] = count
    if bad:
        dropped["malformed_row"] = len(bad)
    splits = {name: [by_where[row.where] for row in parts[name]] for name in SPLITS}
    kept_total = sum(len(p) for p in splits.values())  # the originals (copies are counted in augmentation)
    augmentation = _augment(splits, config, seed)  # the training split only, after the leakage check
    types = sorted({t for s in kept for t in s.tags if t != "O"}, key=lambda t: (t[2:], t[0]))
    labels = ["O", *types]
    read = len(sentences) + len(bad)
    report = {
        "source": {"path": str(config.path), "format": "tagged words (BIO)", "rows_read": read},
        "cleaning": {"modified": {"bio_repaired_tags": repaired} if repaired else {}, "dropped": dict(dropped),
                     "dropped_total": sum(dropped.values()), "examples": {"malformed_row": bad[:5]} if bad else {}},
        "rows_kept": kept_total,
        "labels": labels,
        "splits": {name: {"rows": len(part), "per_class": _entity_counts(part)} for name, part in splits.items()},
        "leakage": {"overlapping_texts": overlap_counts(parts), "removed": leaked,
                    **({"augmented_copies_only_in": "train"} if augmentation else {})},
        **({"augmentation": augmentation} if augmentation else {}),
    }
    return NerData(splits=splits, labels=labels, report=report)


def _augment(splits: dict[str, list[Sentence]], config: DataConfig, seed: int) -> dict[str, Any] | None:
    """Augmented copies of the training sentences by the operations that keep entity spans aligned."""
    if config.augment is None:
        return None
    from tuneforge.data.augment_tagged import augment_sentences

    settings = config.augment
    done = augment_sentences(splits["train"], list(settings.operations), settings.copies, settings.rate,
                             settings.seed + seed, lambda s, tokens, tags, where: Sentence(tokens, tags, where))
    splits["train"] = done.rows
    return done.report(settings)


def _entity_counts(sentences: list[Sentence]) -> dict[str, int]:
    return dict(sorted(Counter(t[2:] for s in sentences for t in s.tags if t.startswith("B-")).items()))
