"""Text augmentation for scarce labelled data: the four EDA operations (Wei & Zou 2019, after the paper's reference
code) -- synonym replacement from WordNet, random insertion of a synonym, random swap, random deletion -- as pure,
seeded functions over words, and the step that adds augmented copies to the training split only (after the split
and the leakage check, so no copy can reach validation or test)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

# our own stopword list (the EDA reference code's, from NLTK's English list): never replaced by a synonym
STOPWORDS = frozenset("""i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this that these those am is
are was were be been being have has had having do does did doing a an the and but if or because as until while of at
by for with about against between into through during before after above below to from up down in out on off over
under again further then once here there when where why how all any both each few more most other some such no nor
not only own same so than too very s t can will just don should now""".split())


def synonyms(word: str) -> list[str]:
    """WordNet synonyms of ``word`` (lowercase letters and spaces only, the word itself left out); none when WordNet
    is not installed."""
    return list(_synonyms(word.lower()))


@lru_cache(maxsize=65536)
def _synonyms(word: str) -> tuple[str, ...]:
    try:
        from nltk.corpus import wordnet
    except ImportError:
        return ()
    try:
        found = {lemma.name().replace("_", " ").replace("-", " ").lower()
                 for synset in wordnet.synsets(word) for lemma in synset.lemmas()}
    except (LookupError, OSError):
        return ()
    return tuple(sorted(s for s in found if s != word and all(c.isalpha() or c == " " for c in s)))


def synonym_replacement(words: list[str], n: int, rng: random.Random,
                        find: Callable[[str], list[str]] = synonyms) -> list[str]:
    """Replace up to ``n`` distinct non-stopwords with one of their synonyms."""
    out = list(words)
    candidates = sorted({w for w in words if w.lower() not in STOPWORDS and w.isalpha()})
    rng.shuffle(candidates)
    replaced = 0
    for word in candidates:
        options = find(word)
        if options:
            choice = rng.choice(options)
            out = [choice if w == word else w for w in out]
            replaced += 1
        if replaced >= n:
            break
    return " ".join(out).split()


def random_insertion(words: list[str], n: int, rng: random.Random,
                     find: Callable[[str], list[str]] = synonyms) -> list[str]:
    """Insert, ``n`` times, a synonym of a random word of the sentence at a random position."""
    out = list(words)
    for _ in range(n):
        for _attempt in range(10):
            options = find(rng.choice(out)) if out else []
            if options:
                out.insert(rng.randrange(len(out) + 1), rng.choice(options))
                break
    return " ".join(out).split()


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """Swap two random positions, ``n`` times."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.randrange(len(out)), rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Drop each word with probability ``p``; one random word is kept when all would go."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


OPERATIONS = ("synonym", "insert", "swap", "delete")


def augment_text(text: str, operation: str, rate: float, rng: random.Random) -> str:
    """One EDA operation on a text; ``rate`` is the share of its words changed (at least one)."""
    words = text.split()
    n = max(1, int(rate * len(words)))
    if operation == "synonym":
        out = synonym_replacement(words, n, rng)
    elif operation == "insert":
        out = random_insertion(words, n, rng)
    elif operation == "swap":
        out = random_swap(words, n, rng)
    elif operation == "delete":
        out = random_deletion(words, rate, rng)
    else:
        raise ValueError(f"unknown augmentation {operation!r} (allowed: {', '.join(OPERATIONS)})")
    return " ".join(out)


@dataclass
class Augmented:
    rows: list[Any]  # the training rows followed by their augmented copies
    made: Counter = field(default_factory=Counter)  # copies kept per operation
    unchanged: Counter = field(default_factory=Counter)  # copies dropped because they equalled their source
    samples: list[dict[str, str]] = field(default_factory=list)


def augment_rows(rows: list[Any], operations: list[str], copies: int, rate: float, seed: int,
                 make_row: Callable[[Any, str, str], Any]) -> Augmented:
    """``copies`` augmented copies of every row, each by one of ``operations`` in turn (seeded), kept only when its
    text differs from the source. ``make_row(row, text, where)`` builds a copy; its ``where`` names the source and
    the operation (``file:12#aug1-swap``)."""
    rng = random.Random(seed)
    result = Augmented(rows=list(rows))
    for row in rows:
        for k in range(copies):
            operation = operations[(k + rng.randrange(len(operations))) % len(operations)]
            text = augment_text(row.text, operation, rate, rng)
            if text == " ".join(row.text.split()):
                result.unchanged[operation] += 1
                continue
            result.rows.append(make_row(row, text, f"{row.where}#aug{k + 1}-{operation}"))
            result.made[operation] += 1
            if len(result.samples) < 8:
                result.samples.append({"operation": operation, "source": row.text, "augmented": text})
    return result
