"""Drift statistics on seeded synthetic data: each test pins a property that a wrong formula would break."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuneforge.monitor.drift import (chi_square_p, domain_auc, ks_p, mmd_rbf, mmd_test, oov_share, psi,
                                     wilson_interval, words)

DIM = 16


def gaussian(seed: int, rows: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc=shift, size=(rows, DIM))


def test_mmd_test_same_distribution_is_rarely_significant():
    results = [mmd_test(gaussian(seed, 200), gaussian(seed + 1000, 60), seed=seed) for seed in range(10)]
    p_values = [p for _, p in results]
    assert sum(p < 0.01 for p in p_values) <= 1, p_values
    assert sum(p > 0.05 for p in p_values) >= 7, p_values
    assert all(abs(mmd) < 0.02 for mmd, _ in results), results


def test_mmd_test_detects_a_mean_shift_with_the_smallest_p_value():
    same, p_same = mmd_test(gaussian(1, 200), gaussian(2, 60))
    shifted, p_shifted = mmd_test(gaussian(1, 200), gaussian(2, 60, shift=1.0))
    assert p_shifted < 0.01
    assert p_shifted == pytest.approx(1 / 201)  # no permutation reaches the observed statistic
    assert shifted > 0.1 > same
    assert p_same > p_shifted


def test_mmd_test_statistic_matches_mmd_rbf_and_is_deterministic():
    reference, current = gaussian(3, 120), gaussian(4, 40, shift=0.2)
    mmd, p = mmd_test(reference, current, permutations=50, seed=7)
    assert mmd == pytest.approx(mmd_rbf(reference, current), rel=1e-9, abs=1e-12)
    assert (mmd, p) == mmd_test(reference, current, permutations=50, seed=7)
    assert 1 / 51 <= p <= 1.0 and (p * 51) == pytest.approx(round(p * 51))


def test_mmd_test_subsamples_a_large_reference():
    reference, current = gaussian(5, 900), gaussian(6, 30)
    first = mmd_test(reference, current, permutations=20, max_reference=100, seed=1)
    assert first == mmd_test(reference, current, permutations=20, max_reference=100, seed=1)
    assert first != mmd_test(reference, current, permutations=20, max_reference=100, seed=2)
    with pytest.raises(ValueError):
        mmd_test(reference, current, max_reference=1)


def test_mmd_rbf_near_zero_for_one_distribution_symmetric_and_growing_with_shift():
    x, y = gaussian(7, 150), gaussian(8, 150)
    assert abs(mmd_rbf(x, y)) < 0.01
    assert mmd_rbf(x, y) == pytest.approx(mmd_rbf(y, x), abs=1e-12)
    assert mmd_rbf(x, y, bandwidth=3.0) == pytest.approx(mmd_rbf(y, x, bandwidth=3.0), abs=1e-12)
    small, large = mmd_rbf(x, gaussian(8, 150, shift=0.5)), mmd_rbf(x, gaussian(8, 150, shift=1.0))
    assert 0.01 < small < large


def test_mmd_rbf_edge_cases():
    constant = np.ones((5, 3))
    assert mmd_rbf(constant, constant) == pytest.approx(0.0)  # zero median distance: bandwidth guarded, no NaN
    assert math.isfinite(mmd_rbf(np.arange(6.0), np.arange(6.0) + 0.5))  # 1-D input is one feature per row
    with pytest.raises(ValueError):
        mmd_rbf(np.ones((1, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError):
        mmd_rbf(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        mmd_rbf(np.zeros((4, 3)), np.ones((4, 3)), bandwidth=0.0)


def test_domain_auc_same_distribution_is_near_chance():
    for seed in range(3):
        assert 0.3 < domain_auc(gaussian(seed, 200), gaussian(seed + 500, 60), seed=seed) < 0.7


def test_domain_auc_separates_a_shifted_sample():
    assert domain_auc(gaussian(1, 200), gaussian(2, 60, shift=1.0)) > 0.9
    reference, current = gaussian(1, 200), gaussian(2, 60, shift=1.0)
    assert domain_auc(reference, current, seed=3) == domain_auc(reference, current, seed=3)


def test_domain_auc_small_or_unbalanced_samples():
    assert domain_auc(gaussian(1, 100), gaussian(2, 3, shift=5.0)) == 0.5
    assert domain_auc(gaussian(1, 3), gaussian(2, 100, shift=5.0)) == 0.5
    assert domain_auc(gaussian(1, 2000), gaussian(2, 4, shift=5.0), folds=5) > 0.9  # 12 vs 4 rows, 4 folds
    assert domain_auc(gaussian(1, 200), gaussian(2, 60, shift=1.0), folds=1) > 0.9  # at least 2 folds


def test_psi():
    counts = {"sport": 40, "tech": 35, "food": 25}
    assert psi(counts, counts) == pytest.approx(0.0)
    assert psi(counts, {k: 3 * v for k, v in counts.items()}) == pytest.approx(0.0)
    assert psi(counts, {"sport": 5, "tech": 10, "food": 85}) > 0.25
    assert 0.0 < psi(counts, {"sport": 38, "tech": 37, "food": 25}) < 0.01
    # a new category: its reference share is floored at epsilon, so the index is finite but large
    new = psi(counts, {"sport": 40, "tech": 35, "food": 5, "other": 20})
    assert math.isfinite(new) and new > 0.25
    assert psi({}, {}) == 0.0


def test_chi_square_p():
    reference = {"sport": 400, "tech": 350, "food": 250}
    assert chi_square_p(reference, {"sport": 40, "tech": 35, "food": 25}) > 0.9
    assert chi_square_p(reference, {"sport": 10, "tech": 20, "food": 170}) < 1e-10
    assert chi_square_p(reference, {"sport": 40, "tech": 35, "food": 25, "other": 0}) > 0.9  # zero in both: dropped
    assert chi_square_p({"sport": 10}, {"sport": 90}) == 1.0
    assert chi_square_p({"sport": 10, "tech": 0}, {"sport": 90}) == 1.0
    assert chi_square_p({}, {}) == 1.0
    assert chi_square_p(reference, {}) == 1.0


def test_ks_p():
    rng = np.random.default_rng(11)
    assert ks_p(rng.normal(size=300), rng.normal(size=300)) > 0.05
    assert ks_p(rng.normal(size=300), rng.normal(loc=1.0, size=300)) < 1e-6
    assert ks_p([1.0, 2.0, 3.0], list(np.arange(1.0, 4.0))) == pytest.approx(1.0)
    assert ks_p([], [1.0, 2.0]) == 1.0
    assert ks_p(np.array([1.0]), np.array([])) == 1.0


def test_wilson_interval():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=5e-4)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=5e-4)
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and low == pytest.approx(0.8389, abs=5e-4)
    narrow, wide = wilson_interval(8, 10, confidence=0.8), wilson_interval(8, 10, confidence=0.99)
    assert wide[0] < narrow[0] < 0.8 < narrow[1] < wide[1]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for bad in [(11, 10, 0.95), (-1, 10, 0.95), (5, 10, 1.0), (5, 10, 0.0)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)


def test_words_and_oov_share():
    assert words("Don't STOP, 2 go!  café") == ["don't", "stop", "2", "go", "caf"]
    assert words("") == []
    vocabulary = {"the", "match", "goal"}
    assert oov_share(["The match", "a GOAL, the end"], vocabulary) == pytest.approx(2 / 6)
    assert oov_share(["the goal"], vocabulary) == 0.0
    assert oov_share(["", "!!"], vocabulary) == 0.0
    assert oov_share([], vocabulary) == 0.0
