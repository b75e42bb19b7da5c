"""Group fairness of a classifier's test predictions over a sensitive attribute: per group selection rate, true and
false positive rates and false negative rate (fairlearn's MetricFrame), the demographic parity difference and the
equalized-odds difference (fairlearn's own functions), each with a percentile bootstrap interval.

fairlearn computes every point figure. Its bootstrap (MetricFrame's n_boot) takes ~45 s for 1,000 resamples of 300
rows, so the intervals come from the same definitions vectorised here over the run's resamples; a test checks that
both agree on the points. A multi-class task is read one-vs-rest: selection means predicting ``positive``; without a
positive label every label is taken in turn and the largest differences are the headline."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tuneforge.evaluation.metrics import bootstrap_indices, percentile_interval

RATES = ("selection_rate", "true_positive_rate", "false_positive_rate", "false_negative_rate")


def group_fairness(y_true: np.ndarray, y_pred: np.ndarray, groups: list[str], labels: list[str],
                   positive: str | None, samples: int, confidence: float, seed: int) -> dict[str, Any]:
    """The fairness figures of one model for one sensitive column (``groups``: each test row's group)."""
    y_true, y_pred, groups_array = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups, dtype=object)
    chosen = [positive] if positive is not None else labels
    indices = bootstrap_indices(len(y_true), samples, seed)
    per_label = {label: _one_vs_rest(y_true == labels.index(label), y_pred == labels.index(label), groups_array,
                                     indices, confidence) for label in chosen}
    worst_dp = max(per_label, key=lambda label: per_label[label]["demographic_parity_difference"])
    worst_eo = max(per_label, key=lambda label: per_label[label]["equalized_odds_difference"])
    return {"groups": {str(g): int((groups_array == g).sum()) for g in sorted(set(groups))},
            "positive": positive, "per_label": per_label,
            "demographic_parity_difference": per_label[worst_dp]["demographic_parity_difference"],
            "demographic_parity_difference_ci": per_label[worst_dp]["demographic_parity_difference_ci"],
            "demographic_parity_worst_label": worst_dp,
            "equalized_odds_difference": per_label[worst_eo]["equalized_odds_difference"],
            "equalized_odds_difference_ci": per_label[worst_eo]["equalized_odds_difference_ci"],
            "equalized_odds_worst_label": worst_eo}


def _one_vs_rest(truth: np.ndarray, chosen: np.ndarray, groups: np.ndarray, indices: np.ndarray,
                 confidence: float) -> dict[str, Any]:
    from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,
                                   false_negative_rate, false_positive_rate, selection_rate, true_positive_rate)

    truth, chosen = truth.astype(int), chosen.astype(int)
    with warnings.catch_warnings():  # a group without positives (or negatives): fairlearn warns and gives 0
        warnings.simplefilter("ignore")
        frame = MetricFrame(metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                                     "false_positive_rate": false_positive_rate,
                                     "false_negative_rate": false_negative_rate},
                            y_true=truth, y_pred=chosen, sensitive_features=groups)
        dp = float(demographic_parity_difference(truth, chosen, sensitive_features=groups))
        eo = float(equalized_odds_difference(truth, chosen, sensitive_features=groups))
    boot = rates_by_group(truth, chosen, groups, indices)
    by_group = {}
    for group, figures in frame.by_group.to_dict(orient="index").items():
        name = group if isinstance(group, str) else str(group[0] if isinstance(group, tuple) else group)
        by_group[name] = {}
        for rate in RATES:
            by_group[name][rate] = round(float(figures[rate]), 4)
            by_group[name][f"{rate}_ci"] = _interval(boot[rate][name], confidence)
    return {"demographic_parity_difference": round(dp, 4),
            "demographic_parity_difference_ci": _interval(boot["demographic_parity_difference"], confidence),
            "equalized_odds_difference": round(eo, 4),
            "equalized_odds_difference_ci": _interval(boot["equalized_odds_difference"], confidence),
            "by_group": by_group}


def rates_by_group(truth: np.ndarray, chosen: np.ndarray, groups: np.ndarray, indices: np.ndarray) -> dict[str, Any]:
    """fairlearn's definitions over many resamples at once (``indices``: resamples x rows): each group's rates per
    resample (NaN where a resample has none of the group, or none of the rate's condition) and the two differences
    (max - min over groups, NaN groups left out; a rate fairlearn gives as 0 for an empty condition counts as 0)."""
    names = sorted(set(groups.tolist()))
    t, c = truth[indices].astype(bool), chosen[indices].astype(bool)
    out: dict[str, Any] = {rate: {} for rate in RATES}
    for name in names:
        member = groups[indices] == name
        size, positives, negatives = member.sum(1), (member & t).sum(1), (member & ~t).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["selection_rate"][name] = np.where(size > 0, (member & c).sum(1) / size, np.nan)
            out["true_positive_rate"][name] = np.where(size > 0, np.where(positives > 0, (member & t & c).sum(1)
                                                                          / np.maximum(positives, 1), 0.0), np.nan)
            out["false_positive_rate"][name] = np.where(size > 0, np.where(negatives > 0, (member & ~t & c).sum(1)
                                                                           / np.maximum(negatives, 1), 0.0), np.nan)
            out["false_negative_rate"][name] = np.where(size > 0, np.where(positives > 0, (member & t & ~c).sum(1)
                                                                           / np.maximum(positives, 1), 0.0), np.nan)
    spread = {rate: _spread(np.stack([out[rate][name] for name in names], axis=1)) for rate in RATES}
    out["demographic_parity_difference"] = spread["selection_rate"]
    out["equalized_odds_difference"] = np.fmax(spread["true_positive_rate"], spread["false_positive_rate"])
    return out


def _spread(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample with no group at all: NaN
        return np.nanmax(values, axis=1) - np.nanmin(values, axis=1)


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    finite = np.asarray(values)[np.isfinite(values)]
    return percentile_interval(finite, confidence) if len(finite) else None
