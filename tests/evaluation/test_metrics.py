from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics, paired_difference


def sample(n=300, k=4, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < noise, rng.integers(0, k, n), y)
    return y, pred


def test_point_metrics_match_sklearn():
    y, pred = sample()
    labels = ["a", "b", "c", "d"]
    m = classification_metrics(y, pred, labels, bootstrap_indices(len(y), 200))
    assert m["accuracy"] == round(accuracy_score(y, pred), 4)
    assert m["macro_f1"] == round(f1_score(y, pred, average="macro"), 4)
    assert m["weighted_f1"] == round(f1_score(y, pred, average="weighted"), 4)
    p, r, f, s = precision_recall_fscore_support(y, pred)
    for i, label in enumerate(labels):
        assert m["per_class"][label]["precision"] == round(p[i], 4)
        assert m["per_class"][label]["recall"] == round(r[i], 4)
        assert m["per_class"][label]["support"] == s[i]
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(y, pred).tolist()


def test_intervals_contain_the_point_and_shrink_with_n():
    y, pred = sample(n=200)
    small = classification_metrics(y, pred, list("abcd"), bootstrap_indices(200, 500))
    y2, pred2 = sample(n=3000)
    large = classification_metrics(y2, pred2, list("abcd"), bootstrap_indices(3000, 500))
    for name in ("accuracy", "macro_f1"):
        low, high = small[f"{name}_ci"]
        assert low < small[name] < high
        assert (large[f"{name}_ci"][1] - large[f"{name}_ci"][0]) < (high - low) / 2


def test_paired_difference_detects_a_real_gap_and_not_a_null_one():
    y, good = sample(noise=0.1, seed=1)
    _, bad = sample(noise=0.9, seed=2)
    idx = bootstrap_indices(len(y), 500)
    diff = paired_difference(y, good, bad, 4, idx)
    assert diff["macro_f1_ci"][0] > 0
    same = paired_difference(y, good, good, 4, idx)
    assert same["accuracy"] == 0 and same["accuracy_ci"] == [0.0, 0.0]


def test_confusion_rates_have_intervals():
    y, pred = sample(n=400)
    cm = classification_metrics(y, pred, list("abcd"), bootstrap_indices(400, 300))["confusion_matrix"]
    counts = np.asarray(cm["matrix"])
    assert np.allclose(cm["rates"], np.round(counts / counts.sum(axis=1, keepdims=True), 4))
    low, high, rates = map(np.asarray, (cm["rates_ci_low"], cm["rates_ci_high"], cm["rates"]))
    assert (low <= rates + 1e-9).all() and (rates <= high + 1e-9).all() and (high - low).max() > 0
