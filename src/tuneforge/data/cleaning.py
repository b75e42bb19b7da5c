"""Cleaning, each step counted: unicode repair, control characters, whitespace, empty and unlabelled rows,
exact and near duplicates. Rows are never dropped silently: every removal has a reason and a count."""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from tuneforge.config.schema import CleanConfig
from tuneforge.data.sources import Row

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


@dataclass
class CleanResult:
    rows: list[Row]
    modified: Counter[str] = field(default_factory=Counter)  # step -> rows changed
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> rows removed
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> locations

    def drop(self, reason: str, row: Row, detail: str = "") -> None:
        self.dropped[reason] += 1
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(row.where + (f" ({detail})" if detail else ""))


def normalized_key(text: str) -> str:
    """The comparison form used for near duplicates and leakage: lowercase words, punctuation ignored."""
    return " ".join(_WORD.findall(text.lower()))


def clean_text(text: str, config: CleanConfig) -> tuple[str, list[str]]:
    """Return the cleaned text and the names of the steps that changed it."""
    changed = []
    if config.normalize_unicode:
        import ftfy

        fixed = unicodedata.normalize("NFC", ftfy.fix_text(text, normalization="NFC"))
        if fixed != text:
            changed.append("unicode_repaired")
        text = fixed
    if config.strip_control:
        stripped = _CONTROL.sub("", text.replace("\t", " "))
        if stripped != text:
            changed.append("control_characters_removed")
        text = stripped
    if config.collapse_whitespace:
        collapsed = _SPACE.sub(" ", text).strip()
        if collapsed != text:
            changed.append("whitespace_normalized")
        text = collapsed
    return text, changed


def clean_rows(rows: list[Row], config: CleanConfig) -> CleanResult:
    result = CleanResult(rows=[])
    seen_exact: dict[str, Row] = {}
    seen_key: dict[str, Row] = {}
    for row in rows:
        if row.label is None:
            result.drop("missing_label", row)
            continue
        text, changed = clean_text(row.text or "", config)
        result.modified.update(changed)
        if config.drop_empty and not text.strip():
            result.drop("empty_text", row)
            continue
        row = replace(row, text=text)
        if config.dedup_exact:
            first = seen_exact.get(text)
            if first is not None:
                reason = "exact_duplicate" if first.label == row.label else "exact_duplicate_conflicting_label"
                result.drop(reason, row, f"same as {first.where}")
                continue
            seen_exact[text] = row
        if config.dedup_near:
            key = normalized_key(text)
            first = seen_key.get(key)
            if first is not None:
                result.drop("near_duplicate", row, f"same words as {first.where}")
                continue
            seen_key[key] = row
        result.rows.append(row)
    if config.dedup_near:
        keep = minhash_unique(result.rows, config.near_threshold)
        for index, row in enumerate(result.rows):
            if keep[index] != index:
                result.drop("near_duplicate", row, f"similar to {result.rows[keep[index]].where}")
        result.rows = [row for index, row in enumerate(result.rows) if keep[index] == index]
    return result


def _shingles(text: str, n: int = 3) -> set[int]:
    words = _WORD.findall(text.lower())
    grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
    return {zlib.crc32(gram.encode()) for gram in grams}


def minhash_unique(rows: list[Row], threshold: float, num_perm: int = 64, bands: int = 8) -> list[int]:
    """For each row, the index of the first earlier row whose word-3-gram Jaccard similarity is >= threshold
    (itself when none). MinHash + LSH banding finds candidates; the exact Jaccard confirms each one."""
    rng = np.random.default_rng(0)
    prime = np.uint64((1 << 61) - 1)
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
    shingles = [_shingles(row.text or "") for row in rows]
    rows_per_band = num_perm // bands
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    first = list(range(len(rows)))
    for index, grams in enumerate(shingles):
        hashes = np.fromiter(grams, dtype=np.uint64, count=len(grams))
        signature = ((a[:, None] * hashes[None, :] + b[:, None]) % prime).min(axis=1)
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, signature[band * rows_per_band:(band + 1) * rows_per_band].tobytes())
            candidates.update(buckets[key])
            buckets[key].append(index)
        for other in sorted(candidates):
            if first[other] != other:
                continue
            union = len(grams | shingles[other])
            if union and len(grams & shingles[other]) / union >= threshold:
                first[index] = other
                break
    return first
