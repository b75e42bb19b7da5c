"""EDA for tagged words (token classification): the four operations touch only words outside entities (tag O), so
every entity keeps its words, its order and its tags; an inserted or replacing synonym is tagged O, and nothing is
inserted inside an entity (before an I- tag)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Callable

from tuneforge.data.augment import STOPWORDS, Augmented, synonyms

Tagged = tuple[list[str], list[str]]


def tagged_synonyms(tokens: list[str], tags: list[str], n: int, rng: random.Random,
                    find: Callable[[str], list[str]] = synonyms) -> Tagged:
    """Replace up to ``n`` distinct O-tagged content words with a synonym (a multi-word synonym becomes O words)."""
    candidates = sorted({t for t, tag in zip(tokens, tags) if tag == "O" and t.isalpha() and t.lower() not in STOPWORDS})
    rng.shuffle(candidates)
    chosen: dict[str, list[str]] = {}
    for word in candidates:
        options = find(word)
        if options:
            chosen[word] = rng.choice(options).split()
        if len(chosen) >= n:
            break
    out_tokens, out_tags = [], []
    for token, tag in zip(tokens, tags):
        words = chosen.get(token) if tag == "O" else None
        out_tokens += words or [token]
        out_tags += ["O"] * len(words) if words else [tag]
    return out_tokens, out_tags


def tagged_insertion(tokens: list[str], tags: list[str], n: int, rng: random.Random,
                     find: Callable[[str], list[str]] = synonyms) -> Tagged:
    """Insert, ``n`` times, a synonym of a random O word at a random place outside any entity."""
    out_tokens, out_tags = list(tokens), list(tags)
    for _ in range(n):
        outside = [t for t, tag in zip(out_tokens, out_tags) if tag == "O"]
        places = [i for i in range(len(out_tokens) + 1) if i == len(out_tokens) or not out_tags[i].startswith("I-")]
        for _attempt in range(10):
            options = find(rng.choice(outside)) if outside else []
            if options:
                at = rng.choice(places)
                words = rng.choice(options).split()
                out_tokens[at:at] = words
                out_tags[at:at] = ["O"] * len(words)
                break
    return out_tokens, out_tags


def tagged_swap(tokens: list[str], tags: list[str], n: int, rng: random.Random) -> Tagged:
    """Swap two O words, ``n`` times."""
    out = list(tokens)
    outside = [i for i, tag in enumerate(tags) if tag == "O"]
    if len(outside) >= 2:
        for _ in range(n):
            i, j = rng.sample(outside, 2)
            out[i], out[j] = out[j], out[i]
    return out, list(tags)


def tagged_deletion(tokens: list[str], tags: list[str], p: float, rng: random.Random) -> Tagged:
    """Drop each O word with probability ``p`` (entities are never touched; one word always stays)."""
    kept = [(t, tag) for t, tag in zip(tokens, tags) if tag != "O" or rng.random() > p]
    if not kept:
        kept = [rng.choice(list(zip(tokens, tags)))]
    return [t for t, _ in kept], [tag for _, tag in kept]


def augment_tagged(tokens: list[str], tags: list[str], operation: str, rate: float, rng: random.Random) -> Tagged:
    n = max(1, int(rate * len(tokens)))
    if operation == "synonym":
        return tagged_synonyms(tokens, tags, n, rng)
    if operation == "insert":
        return tagged_insertion(tokens, tags, n, rng)
    if operation == "swap":
        return tagged_swap(tokens, tags, n, rng)
    if operation == "delete":
        return tagged_deletion(tokens, tags, rate, rng)
    raise ValueError(f"operation {operation!r} does not keep entity spans aligned")


def augment_sentences(sentences: list[Any], operations: list[str], copies: int, rate: float, seed: int,
                      make: Callable[[Any, list[str], list[str], str], Any]) -> Augmented:
    """``copies`` augmented copies of every tagged sentence (each by one operation, seeded), kept when it differs;
    ``make(sentence, tokens, tags, where)`` builds a copy."""
    rng = random.Random(seed)
    result = Augmented(rows=list(sentences), made=Counter(), unchanged=Counter())
    for sentence in sentences:
        for k in range(copies):
            operation = operations[(k + rng.randrange(len(operations))) % len(operations)]
            tokens, tags = augment_tagged(sentence.tokens, sentence.tags, operation, rate, rng)
            if tokens == sentence.tokens:
                result.unchanged[operation] += 1
                continue
            result.rows.append(make(sentence, tokens, tags, f"{sentence.where}#aug{k + 1}-{operation}"))
            result.made[operation] += 1
            if len(result.samples) < 8:
                result.samples.append({"operation": operation, "source": _shown(sentence.tokens, sentence.tags),
                                       "augmented": _shown(tokens, tags)})
    return result


def _shown(tokens: list[str], tags: list[str]) -> str:
    """Words with their entity tags, e.g. ``went to Paris/B-loc today``."""
    return " ".join(t if tag == "O" else f"{t}/{tag}" for t, tag in zip(tokens, tags))
