"""Generation metrics and perplexity: point estimates against sacrebleu and hand computations, and their intervals."""
from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import sacrebleu

from tuneforge.evaluation.metrics import bootstrap_indices
from tuneforge.evaluation.text_metrics import (
    METEOR_UNAVAILABLE,
    generation_metrics,
    meteor_available,
    normalize_answer,
    paired_generation_difference,
    perplexity,
)

HYPS = ["The cat sat on the mat.", "A quick brown fox jumps over a lazy dog", "hello there world", "",
        "It is raining heavily in Paris today."]
REFS = ["The cat is sitting on the mat.", "The quick brown fox jumped over the lazy dog.", "hello world",
        "something was expected here", "Heavy rain falls on Paris today."]
WORDS = "the cat dog sat ran on mat rug quick brown fox lazy over under big small red blue house tree".split()


def noisy_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """References of random words, predictions that keep each word with probability 0.7."""
    rng = random.Random(seed)
    refs = [" ".join(rng.choices(WORDS, k=rng.randint(6, 12))) for _ in range(n)]
    preds = [" ".join(w if rng.random() < 0.7 else rng.choice(WORDS) for w in ref.split()) for ref in refs]
    return preds, refs


def require_wordnet() -> None:
    if not meteor_available():
        if os.environ.get("CI") == "true":
            pytest.fail("WordNet is not installed under CI: scripts/ensure-wordnet.sh must run first")
        pytest.skip("WordNet not installed (run scripts/ensure-wordnet.sh); METEOR is reported as unavailable")


def test_identical_texts_score_perfectly():
    texts = ["the cat sat on the mat", "a quick brown fox jumps over the lazy dog", "hello world again today"]
    m = generation_metrics(texts, texts, bootstrap_indices(3, 50))
    assert m["n"] == 3 and m["exact_match"] == 1.0 and m["bleu"] == 100.0 and m["chrf"] == 100.0
    assert m["rouge1"] == m["rouge2"] == m["rougeL"] == 1.0
    if meteor_available():
        assert m["meteor"] > 0.99
    json.dumps(m)  # plain floats and lists only


def test_point_estimates_reproduce_sacrebleu():
    m = generation_metrics(HYPS, REFS, bootstrap_indices(len(HYPS), 100))
    assert m["bleu"] == round(sacrebleu.corpus_bleu(HYPS, [REFS]).score, 4)
    assert m["chrf"] == round(sacrebleu.corpus_chrf(HYPS, [REFS]).score, 4)
    assert 0 < m["bleu"] < 100 and 0 < m["chrf"] < 100


def test_exact_match_is_squad_normalised():
    assert normalize_answer("  The  Eiffel-Tower!") == "eiffeltower"
    m = generation_metrics(["An apple.", "the Dog", "cat"], ["apple", "dog!", "dogs"], bootstrap_indices(3, 20))
    assert m["exact_match"] == round(2 / 3, 4)


def test_empty_predictions_score_zero():
    m = generation_metrics(["", ""], ["a real reference", "another one here"], bootstrap_indices(2, 20))
    for name in ("exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL"):
        assert m[name] == 0.0 and m[f"{name}_ci"] == [0.0, 0.0]
    if meteor_available():
        assert m["meteor"] == 0.0


def test_intervals_contain_the_point_and_shrink_with_n():
    preds, refs = noisy_pairs(40)
    small = generation_metrics(preds, refs, bootstrap_indices(40, 300))
    preds, refs = noisy_pairs(640, seed=1)
    large = generation_metrics(preds, refs, bootstrap_indices(640, 300))
    names = ["bleu", "chrf", "rouge1", "rouge2", "rougeL"] + (["meteor"] if meteor_available() else [])
    for name in names:
        for m in (small, large):
            low, high = m[f"{name}_ci"]
            assert low <= m[name] <= high and low < high, name
        width = lambda m: m[f"{name}_ci"][1] - m[f"{name}_ci"][0]  # noqa: E731
        assert width(large) < width(small) / 2, name


def test_meteor_uses_wordnet_synonyms():
    require_wordnet()
    ref = ["the red car is parked outside now"]
    synonym = generation_metrics(["the red auto is parked outside now"], ref, bootstrap_indices(1, 10))
    unrelated = generation_metrics(["the red zzz is parked outside now"], ref, bootstrap_indices(1, 10))
    assert synonym["rouge1"] == unrelated["rouge1"]  # same exact-word overlap
    assert synonym["meteor"] > unrelated["meteor"] + 0.1


def test_meteor_unavailable_without_wordnet(monkeypatch):
    import tuneforge.evaluation.text_metrics as text_metrics

    monkeypatch.setattr(text_metrics, "meteor_available", lambda: False)
    m = generation_metrics(["hello world"], ["hello world"], bootstrap_indices(1, 10))
    assert m["meteor"] is None and m["meteor_ci"] is None and m["meteor_unavailable"] == METEOR_UNAVAILABLE


def test_perplexity_matches_hand_computation():
    nll = np.array([12.0, 3.5, 20.25, 7.0])
    tokens = np.array([10, 2, 15, 5])
    p = perplexity(nll, tokens, bootstrap_indices(4, 500))
    mean_nll = (12.0 + 3.5 + 20.25 + 7.0) / (10 + 2 + 15 + 5)
    assert p["nll_per_token"] == round(mean_nll, 4)
    assert p["perplexity"] == round(math.exp(mean_nll), 4)
    assert p["tokens"] == 32
    low, high = p["perplexity_ci"]
    assert low <= p["perplexity"] <= high
    json.dumps(p)


def test_paired_difference_of_a_system_with_itself_is_zero():
    preds, refs = noisy_pairs(30)
    d = paired_generation_difference(preds, preds, refs, bootstrap_indices(30, 200))
    names = ["exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL"] + (["meteor"] if meteor_available() else [])
    for name in names:
        assert d[name] == 0.0 and d[f"{name}_ci"] == [0.0, 0.0], name


def test_paired_difference_favours_the_better_system():
    preds, refs = noisy_pairs(200)
    d = paired_generation_difference(refs, preds, refs, bootstrap_indices(200, 200))
    assert d["bleu"] > 0 and d["bleu_ci"][0] > 0
    assert d["rougeL"] > 0 and d["rougeL_ci"][0] > 0
