"""Extractive question-answering data (SQuAD style): a question, a context and the answer's text with its
character offset in the context.

Records come through the usual loaders (json, jsonl, csv, parquet, a saved HF dataset) in the SQuAD/HF layout
(``answers: {text: [...], answer_start: [...]}``, or a list of ``{text, answer_start}`` objects), as flat
``answer`` + ``answer_start`` columns, or as the official nested SQuAD JSON (``data -> paragraphs -> qas``);
``data.columns`` maps the keys to yours. Texts are kept verbatim: the character offsets must stay valid. An
answer that is not at its ``answer_start`` is moved to its only occurrence in the context (counted); one that
occurs zero or several times makes the row bad (an error naming file:line and the field, or dropped and counted
with ``data.on_bad_rows: skip``). Records that share a context stay in one split (no leakage through contexts).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from tuneforge.config.schema import DataConfig, SplitConfig
from tuneforge.data.cleaning import normalized_key
from tuneforge.data.sources import Record, Row, load_records
from tuneforge.data.splitting import SPLITS, overlap_counts, stratified_split
from tuneforge.errors import DataError

KEYS = ("question", "context", "answers", "answer", "answer_start", "id")
SKIP_HINT = "fix the row, or set data.on_bad_rows=skip to drop and count it"


@dataclass
class QaExample:
    question: str
    context: str
    answers: list[str]  # every gold answer (SQuAD dev sets have several); training uses the first
    starts: list[int]  # character offset of each answer in the context
    where: str
    id: str

    @property
    def context_id(self) -> str:
        return hashlib.sha1(self.context.encode("utf-8")).hexdigest()[:10]


@dataclass
class QaData:
    splits: dict[str, list[QaExample]]
    report: dict[str, Any]


class BadRow(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def column_names(config: DataConfig) -> dict[str, str]:
    return {key: config.columns.get(key, key) for key in KEYS}


def flatten_squad(records: list[Record]) -> list[Record]:
    """The official SQuAD JSON (articles of paragraphs of questions) as one record per question."""
    if not records or "paragraphs" not in records[0].fields:
        return records
    flat = []
    for record in records:
        for p, paragraph in enumerate(record.fields.get("paragraphs") or [], start=1):
            for q, qa in enumerate(paragraph.get("qas") or [], start=1):
                flat.append(Record({"id": qa.get("id"), "question": qa.get("question"),
                                    "context": paragraph.get("context"), "answers": qa.get("answers")},
                                   f"{record.where} paragraph {p} question {q}"))
    return flat


def check_layout(record: Record, keys: dict[str, str]) -> None:
    found = record.fields
    if keys["question"] in found and keys["context"] in found and (keys["answers"] in found or keys["answer"] in found):
        return
    raise DataError(f"{record.where}: question answering needs fields {keys['question']!r}, {keys['context']!r} and "
                    f"{keys['answers']!r} (or {keys['answer']!r} + {keys['answer_start']!r}); found "
                    f"{', '.join(map(str, found)) or 'none'} (set data.columns, e.g. "
                    f"{{question: q, context: passage}})")


def parse_record(record: Record, keys: dict[str, str]) -> tuple[QaExample, int]:
    """One validated example and how many of its answers were moved to their only occurrence."""
    fields = record.fields
    question, context = _text(fields.get(keys["question"])), _text(fields.get(keys["context"]))
    for key, value in ((keys["question"], question), (keys["context"], context)):
        if not value.strip():
            raise BadRow("empty_field", f"field {key!r} is empty")
    texts, starts, start_field = _answers(fields, keys)
    answer_field = keys["answers"] if keys["answers"] in fields else keys["answer"]
    if not texts or not all(text.strip() for text in texts):
        raise BadRow("no_answer", f"field {answer_field!r}: no answer text (extractive QA needs one per question; "
                     f"unanswerable questions are not supported)")
    fixed, repaired = [], 0
    for text, start in zip(texts, starts):
        if start is not None:  # surrounding spaces are not part of the answer
            start += len(text) - len(text.lstrip())
        text = text.strip()
        if start is not None and context[start:start + len(text)] == text:
            fixed.append(start)
            continue
        count = context.count(text)
        if count != 1:
            raise BadRow("answer_not_in_context", f"field {start_field!r}: the answer {text[:40]!r} is not at "
                         f"character {start} of the context and occurs {count} times in it (correct answer_start "
                         f"or the answer text)")
        fixed.append(context.index(text))
        repaired += 1
    answers = [t.strip() for t in texts]
    identifier = _text(fields.get(keys["id"])) or record.where
    return QaExample(question, context, answers, fixed, record.where, identifier), repaired


def _answers(fields: dict[str, Any], keys: dict[str, str]) -> tuple[list[str], list[int | None], str]:
    if keys["answers"] not in fields:
        start_field = keys["answer_start"]
        return [_text(fields.get(keys["answer"]))], [_offset(fields.get(start_field), start_field)], start_field
    name, value = keys["answers"], fields[keys["answers"]]
    start_field = f"{name}.answer_start"
    if isinstance(value, str):  # a CSV cell holding the JSON of the answers
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadRow("bad_answer", f"field {name!r}: expected {{text: [...], answer_start: [...]}}, got "
                         f"{value[:40]!r}") from None
    if isinstance(value, list):  # [{text, answer_start}, ...]
        if not all(isinstance(item, dict) for item in value):
            raise BadRow("bad_answer", f"field {name!r}: expected a list of {{text, answer_start}} objects")
        value = {"text": [a.get("text") for a in value], "answer_start": [a.get("answer_start") for a in value]}
    if not isinstance(value, dict):
        raise BadRow("bad_answer", f"field {name!r}: expected {{text: [...], answer_start: [...]}}, got "
                     f"{type(value).__name__}")
    texts, starts = value.get("text"), value.get("answer_start")
    if not isinstance(texts, (list, tuple)):
        texts, starts = [texts], [starts]
    if starts is None:
        starts = [None] * len(texts)
    if not isinstance(starts, (list, tuple)):
        starts = [starts]
    if len(texts) != len(starts):
        raise BadRow("bad_answer", f"field {name!r}: {len(texts)} answer texts but {len(starts)} answer_start values")
    return [_text(t) for t in texts], [_offset(s, start_field) for s in starts], start_field


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _offset(value: Any, field: str) -> int | None:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRow("bad_answer", f"field {field!r}: {value!r} is not a character offset") from None
    if not number.is_integer() or number < 0:
        raise BadRow("bad_answer", f"field {field!r}: {value!r} is not a character offset")
    return int(number)


def load_examples(config: DataConfig) -> tuple[list[QaExample], dict[str, Any]]:
    """Every valid example, with what was read, repaired and dropped (and why)."""
    records, fmt, malformed = load_records(config.path, config.format, config.on_bad_rows, config.hf_split)
    records = flatten_squad(records)
    if not records:
        raise DataError(f"{config.path}: no question-answering records found")
    keys = column_names(config)
    check_layout(records[0], keys)
    examples, dropped, bad, repaired = [], Counter(), list(malformed), 0
    for record in records:
        try:
            example, moved = parse_record(record, keys)
        except BadRow as exc:
            if config.on_bad_rows == "error":
                raise DataError(f"{record.where}: {exc}; {SKIP_HINT}") from None
            dropped[exc.reason] += 1
            bad.append(f"{record.where}: {exc}")
            continue
        examples.append(example)
        repaired += moved
    if malformed:
        dropped["malformed_row"] = len(malformed)
    facts = {"format": fmt, "rows_read": len(records) + len(malformed), "dropped": dropped, "bad": bad,
             "repaired": repaired}
    return examples, facts


def group_split(examples: list[QaExample], split: SplitConfig, seed: int) -> dict[str, list[list[QaExample]]]:
    """Contexts (compared as lowercase words) are split, seeded; each takes all its questions with it."""
    groups: dict[str, list[QaExample]] = defaultdict(list)
    for example in examples:
        groups[normalized_key(example.context)].append(example)
    needed = sum(1 for share in (split.train, split.validation, split.test) if share > 0)
    if len(groups) < needed:
        raise DataError(f"{len(groups)} distinct contexts cannot be split into {needed} parts (questions on one "
                        f"context stay in one split); add data with more contexts")
    rows = [Row(key, "*", key) for key in groups]
    parts = stratified_split(rows, SplitConfig(**{**split.model_dump(), "stratify": False}), seed)
    return {name: [groups[row.text or ""] for row in parts[name]] for name in SPLITS}


def prepare_qa(config: DataConfig, seed: int) -> QaData:
    examples, facts = load_examples(config)
    dropped: Counter[str] = facts["dropped"]
    if config.clean.dedup_exact:
        seen, kept = set(), []
        for example in examples:
            key = (normalized_key(example.question), example.context)
            if key in seen:
                dropped["exact_duplicate"] += 1
                continue
            seen.add(key)
            kept.append(example)
        examples = kept
    if config.max_rows and len(examples) > config.max_rows:
        dropped["not_sampled (data.max_rows)"] = len(examples) - config.max_rows
        examples = random.Random(seed).sample(examples, config.max_rows)
    grouped = group_split(examples, config.split, seed)
    splits = {name: [e for group in groups for e in group] for name, groups in grouped.items()}
    kept = sum(len(part) for part in splits.values())
    assert facts["rows_read"] == kept + sum(dropped.values()), "every record is kept or counted as dropped"
    contexts = {name: [Row(normalized_key(e.context), "*", e.where) for e in part] for name, part in splits.items()}
    report = {
        "source": {"path": str(config.path), "format": f"question-answering ({facts['format']})",
                   "rows_read": facts["rows_read"]},
        "cleaning": {"modified": {"answer_start_repaired": facts["repaired"]} if facts["repaired"] else {},
                     "dropped": dict(dropped), "dropped_total": sum(dropped.values()),
                     "examples": {"bad_rows": facts["bad"][:5]} if facts["bad"] else {}},
        "rows_kept": kept,
        "labels": [],
        "splits": {name: {"rows": len(splits[name]), "contexts": len(grouped[name]), "per_class": {}}
                   for name in SPLITS},
        "leakage": {"grouped_by": "context", "overlapping_contexts": overlap_counts(contexts)},
    }
    return QaData(splits=splits, report=report)
