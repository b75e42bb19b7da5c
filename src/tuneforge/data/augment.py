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
    rejected: dict[str, Counter] = field(default_factory=dict)  # reason -> operation -> copies dropped
    samples: list[dict[str, str]] = field(default_factory=list)

    def report(self, settings: Any) -> dict[str, Any]:
        """data_report.json's augmentation section: copies kept and dropped (and why) per operation, a sample."""
        return {"copies_made": dict(self.made), "copies_unchanged_dropped": dict(self.unchanged),
                "copies_rejected": {reason: dict(counts) for reason, counts in self.rejected.items()},
                "train_rows_with_copies": len(self.rows), "settings": settings.model_dump(mode="json"),
                "samples": self.samples}


Translate = Callable[[list[str]], list[str]]  # texts -> their round trips through the pivot language
Predict = Callable[[list[str]], list[str]]  # texts -> the label a model predicts for each


@dataclass
class AugmentTools:
    """What augmentation needs of the layers above data (models): built by the task, called here."""

    translate: Translate | None = None
    keep_label: Callable[[list[Any]], Predict] | None = None  # the original training rows -> a label predictor


def augment_rows(rows: list[Any], operations: list[str], copies: int, rate: float, seed: int,
                 make_row: Callable[[Any, str, str], Any], translate: Translate | None = None,
                 max_length_ratio: float = 1.5, keep_label: Predict | None = None) -> Augmented:
    """``copies`` augmented copies of every row, each by one of ``operations`` in turn (seeded), kept only when its
    text differs from the source (a round trip also only within ``max_length_ratio`` of its length, and, with
    ``keep_label``, only when that model predicts the same label for the copy as for its source). ``make_row(row,
    text, where)`` builds a copy; its ``where`` names the source and the operation (``file:12#aug1-swap``)."""
    rng = random.Random(seed)
    plan = [(row, k, operations[(k + rng.randrange(len(operations))) % len(operations)])
            for row in rows for k in range(copies)]
    round_trips = _round_trips([row for row, _, op in plan if op == "back_translation"], translate)
    result = Augmented(rows=list(rows))
    candidates: list[tuple[Any, Any, str]] = []  # (source row, copy, operation)
    for row, k, operation in plan:
        text = round_trips[id(row)] if operation == "back_translation" else augment_text(row.text, operation, rate,
                                                                                          rng)
        if text == " ".join(row.text.split()):
            result.unchanged[operation] += 1
        elif operation == "back_translation" and not within_ratio(row.text, text, max_length_ratio):
            result.rejected.setdefault("length_ratio", Counter())[operation] += 1
        else:
            candidates.append((row, make_row(row, text, f"{row.where}#aug{k + 1}-{operation}"), operation))
    kept = _same_label(candidates, keep_label, result)
    for row, copy, operation in kept:
        result.rows.append(copy)
        result.made[operation] += 1
        if len(result.samples) < 8:
            result.samples.append({"operation": operation, "source": row.text, "augmented": copy.text})
    return result


def within_ratio(source: str, text: str, ratio: float) -> bool:
    """Whether ``text`` has between 1/ratio and ratio times the words of ``source`` (a truncated or rambling
    translation is neither)."""
    a, b = len(source.split()), len(text.split())
    return b > 0 and 1 / ratio <= b / max(1, a) <= ratio


def _round_trips(rows: list[Any], translate: Translate | None) -> dict[int, str]:
    unique = list({id(row): row for row in rows}.values())
    if not unique:
        return {}
    if translate is None:
        raise ValueError("back_translation needs a translator")
    texts = translate([row.text for row in unique])
    return {id(row): " ".join(text.split()) for row, text in zip(unique, texts)}


def _same_label(candidates: list[tuple[Any, Any, str]], predict: Predict | None,
                result: Augmented) -> list[tuple[Any, Any, str]]:
    """The candidates whose copy the model labels as it labels the source; the others counted as label_changed."""
    if predict is None or not candidates:
        return candidates
    sources = {id(row): row for row, _, _ in candidates}
    source_label = dict(zip(sources, predict([row.text for row in sources.values()])))
    copy_labels = predict([copy.text for _, copy, _ in candidates])
    kept = []
    for (row, copy, operation), label in zip(candidates, copy_labels):
        if label == source_label[id(row)]:
            kept.append((row, copy, operation))
        else:
            result.rejected.setdefault("label_changed", Counter())[operation] += 1
    return kept
