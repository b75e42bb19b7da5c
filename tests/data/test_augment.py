"""EDA augmentation: each operation as a seeded pure function, copies only in the training split."""

from __future__ import annotations

import random

import pytest

from tuneforge.data.augment import STOPWORDS, augment_rows, augment_text, random_deletion, random_insertion, \
    random_swap, synonym_replacement, synonyms
from tuneforge.data.sources import Row

WORDS = "the striker scored a late goal and the happy fans sang".split()
FAKE = {"striker": ["forward"], "goal": ["score"], "happy": ["glad"], "fans": ["supporters"], "late": ["belated"]}


def fake(word):
    return FAKE.get(word, [])


def test_synonym_replacement_changes_n_content_words_and_never_a_stopword():
    out = synonym_replacement(WORDS, 2, random.Random(0), fake)
    changed = [(a, b) for a, b in zip(WORDS, out) if a != b]
    assert len(out) == len(WORDS) and len(changed) == 2
    assert all(a not in STOPWORDS and b in FAKE[a] for a, b in changed)
    assert out == synonym_replacement(WORDS, 2, random.Random(0), fake)  # seeded


def test_insertion_swap_and_deletion():
    inserted = random_insertion(WORDS, 2, random.Random(1), fake)
    assert len(inserted) == len(WORDS) + 2
    assert set(inserted) - set(WORDS) <= {w for options in FAKE.values() for w in options}
    swapped = random_swap(WORDS, 3, random.Random(2))
    assert sorted(swapped) == sorted(WORDS) and swapped != WORDS
    deleted = random_deletion(WORDS, 0.3, random.Random(3))
    assert 0 < len(deleted) < len(WORDS) and all(w in WORDS for w in deleted)
    assert random_deletion(["alone"], 0.9, random.Random(0)) == ["alone"]
    assert len(random_deletion(WORDS, 1.0, random.Random(0))) == 1  # never an empty text
    with pytest.raises(ValueError, match="unknown augmentation 'shout'"):
        augment_text("a b", "shout", 0.1, random.Random(0))


def test_wordnet_synonyms_are_real():
    found = synonyms("happy")
    if not found:
        pytest.fail("WordNet is not installed (scripts/ensure-wordnet.sh runs in make setup)")
    assert "glad" in found and "happy" not in found


def test_copies_keep_the_label_name_their_source_and_differ_from_it():
    rows = [Row("the striker scored a late goal", "sport", "d.csv:2"), Row("bread and cheese soup", "food", "d.csv:3")]
    done = augment_rows(rows, ["swap", "delete"], 2, 0.3, 0, lambda r, text, where: Row(text, r.label, where))
    copies = done.rows[2:]
    assert done.rows[:2] == rows and len(copies) == sum(done.made.values()) > 0
    assert all(c.where.startswith(("d.csv:2#aug", "d.csv:3#aug")) for c in copies)
    by_source = {r.where: r for r in rows}
    for copy in copies:
        source = by_source[copy.where.split("#")[0]]
        assert copy.label == source.label and copy.text != source.text
