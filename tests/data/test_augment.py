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


# --- tagged words (token classification): entities keep their words, order and tags ---

TOKENS = "yesterday alice smith went to the happy market in paris with fans".split()
TAGS = ["O", "B-person", "I-person", "O", "O", "O", "O", "O", "O", "B-loc", "O", "O"]


def _entities(tokens, tags):
    spans, current = [], None
    for token, tag in zip(tokens, tags):
        if tag.startswith("B-"):
            current = [tag[2:], [token]]
            spans.append(current)
        elif tag.startswith("I-") and current is not None:
            current[1].append(token)
        else:
            current = None
    return [(kind, tuple(words)) for kind, words in spans]


@pytest.mark.parametrize("operation", ["synonym", "insert", "swap", "delete"])
def test_tagged_operations_keep_every_entity_span(operation):
    from tuneforge.data.augment_tagged import augment_tagged, tagged_insertion, tagged_synonyms

    changed = 0
    for seed in range(30):
        rng = random.Random(seed)
        if operation in ("synonym", "insert"):  # WordNet-independent: a fake thesaurus with a two-word synonym
            fn = tagged_synonyms if operation == "synonym" else tagged_insertion
            tokens, tags = fn(TOKENS, TAGS, 2, rng, find=lambda w: {"happy": ["glad"], "market": ["open air market"],
                                                                    "fans": ["supporters"]}.get(w, []))
        else:
            tokens, tags = augment_tagged(TOKENS, TAGS, operation, 0.3, rng)
        assert len(tokens) == len(tags) and _entities(tokens, tags) == _entities(TOKENS, TAGS)
        assert all(t == "O" or t in TAGS for t in tags)
        changed += tokens != TOKENS
    assert changed >= 25


def test_ner_config_refuses_operations_that_move_spans():
    from tuneforge.config.loader import load_config
    from tuneforge.errors import UserError

    base = {"name": "x", "model": {"name": "minilm", "task": "token-classification"}, "data": {"path": "d.conll"}}
    with pytest.raises(UserError, match="keep entity spans aligned"):
        load_config({**base, "data": {"path": "d.conll", "augment": {
            "operations": ["swap", "back_translation"], "back_translation": {"model": "smollm2-135m"}}}})
    with pytest.raises(UserError, match="back_translation: set back_translation.model"):
        load_config({**base, "data": {"path": "d.conll", "augment": {"operations": ["back_translation"]}}})
    with pytest.raises(UserError, match="has no labels to preserve"):
        load_config({**base, "model": {"name": "smollm2-135m", "task": "causal-lm"},
                     "data": {"path": "c.jsonl", "augment": {"keep_label": "probe"}}})


# --- back-translation and the label filter, through injected translators and predictors ---

def test_round_trips_are_kept_when_they_differ_and_keep_their_length():
    rows = [Row("the striker scored a late goal", "sport", "d.csv:2"), Row("bread and cheese soup", "food", "d.csv:3"),
            Row("markets fell sharply today", "business", "d.csv:4")]
    trips = {rows[0].text: "the forward scored a goal late", rows[1].text: "bread and cheese soup",
             rows[2].text: "markets fell today and then a very long rambling answer went on and on and on"}
    seen = []

    def translate(texts):
        seen.append(list(texts))
        return [trips[t] for t in texts]

    done = augment_rows(rows, ["back_translation"], 1, 0.1, 0, lambda r, text, where: Row(text, r.label, where),
                        translate=translate, max_length_ratio=1.5)
    assert len(seen) == 1 and sorted(seen[0]) == sorted(r.text for r in rows)  # one batched call
    assert [r.text for r in done.rows[3:]] == ["the forward scored a goal late"]
    assert done.made == {"back_translation": 1} and done.unchanged == {"back_translation": 1}
    assert done.rejected == {"length_ratio": {"back_translation": 1}}


def test_the_label_filter_drops_copies_whose_predicted_label_changes():
    rows = [Row("the striker scored a late goal", "sport", "d.csv:2"), Row("bread and cheese soup", "food", "d.csv:3")]

    def predict(texts):  # a model that calls a text food when it mentions cheese or soup
        return ["food" if ("cheese" in t or "soup" in t) else "sport" for t in texts]

    done = augment_rows(rows, ["delete"], 6, 0.5, 0, lambda r, text, where: Row(text, r.label, where),
                        keep_label=predict)
    copies, source = done.rows[2:], {r.where: r for r in rows}
    assert copies and all(predict([c.text]) == predict([source[c.where.split("#")[0]].text]) for c in copies)
    assert done.rejected["label_changed"]["delete"] > 0  # "bread and" lost cheese and soup: dropped


def test_generative_copies_change_prompts_and_keep_answers():
    from tuneforge.data.augment_generative import augment_examples
    from tuneforge.data.formats import Example

    examples = [Example([{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "what is the capital city of france please"},
                         {"role": "assistant", "content": "the capital of france is paris"}], "c.jsonl:1")]
    done = augment_examples(examples, ["swap", "delete"], 4, 0.3, 0)
    assert len(done.rows) > 1
    for copy in done.rows[1:]:
        assert copy.messages[0] == examples[0].messages[0] and copy.messages[2] == examples[0].messages[2]
        assert copy.messages[1]["content"] != examples[0].messages[1]["content"] and "#aug" in copy.where
    both = augment_examples(examples, ["swap"], 4, 0.3, 0, targets=True)
    assert any(c.messages[2]["content"] != examples[0].messages[2]["content"] for c in both.rows[1:])


def test_smollm2_round_trip_goes_through_french(smollm_path):
    """The real offline decoder, prompted: the pivot text is French (its function words), the round trip is text."""
    from tuneforge.config.augment import BackTranslationConfig
    from tuneforge.tasks.augment_tools import RoundTrip

    trip = RoundTrip(BackTranslationConfig(model="smollm2-135m", max_new_tokens=24, batch_size=2))
    texts = ["The government announced plans to cut taxes next year.", "The new phone has a faster chip."]
    pivot = trip.forth.translate(texts, "English", "French")
    french = {"le", "la", "les", "de", "des", "du", "un", "une", "et", "est"}
    assert all(set(t.lower().replace("'", " ").split()) & french for t in pivot), pivot
    back = trip(texts)
    assert len(back) == 2 and all(b.strip() for b in back)
