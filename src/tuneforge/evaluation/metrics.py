"""Classification metrics as pure functions over label ids, with paired bootstrap confidence intervals.

Every scalar metric is reported as ``name`` beside ``name_ci = [low, high]``. Baselines are resampled with the
same bootstrap indices as the fine-tuned model, so differences between them get intervals too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SCALARS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_f1")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _from_confusion(matrix: np.ndarray) -> dict[str, Any]:
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp), where=denominator > 0)
    present = support > 0  # classes absent from this sample do not enter macro averages (as in sklearn)
    total = support.sum()
    return {
        "accuracy": tp.sum() / total if total else 0.0,
        "macro_precision": precision[present].mean(),
        "macro_recall": recall[present].mean(),
        "macro_f1": f1[present].mean(),
        "weighted_f1": (f1 * support).sum() / total if total else 0.0,
        "precision": precision, "recall": recall, "f1": f1, "support": support,
    }


def bootstrap_indices(n: int, samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def percentile_interval(values: np.ndarray | list[float], confidence: float = 0.95) -> list[float]:
    """The central ``confidence`` share of bootstrap values, as [low, high] rounded to 4 places."""
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    return [round(float(np.percentile(values, lo)), 4), round(float(np.percentile(values, hi)), 4)]


def classification_metrics(y_true: list[int] | np.ndarray, y_pred: list[int] | np.ndarray, labels: list[str],
                           indices: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Accuracy, macro/weighted precision-recall-F1, per-class figures and the confusion matrix, each scalar
    with a percentile bootstrap interval over ``indices`` (shape: samples x n)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(labels)
    matrix = confusion(y_true, y_pred, k)
    point = _from_confusion(matrix)
    boot = [_from_confusion(confusion(y_true[idx], y_pred[idx], k)) for idx in indices]
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2

    def interval(values: list[float]) -> list[float]:
        return [round(float(np.percentile(values, lo)), 4), round(float(np.percentile(values, hi)), 4)]

    result: dict[str, Any] = {"n": int(len(y_true))}
    for name in SCALARS:
        result[name] = round(float(point[name]), 4)
        result[f"{name}_ci"] = interval([b[name] for b in boot])
    result["per_class"] = {
        label: {
            **{m: round(float(point[m][i]), 4) for m in ("precision", "recall", "f1")},
            **{f"{m}_ci": interval([b[m][i] for b in boot]) for m in ("precision", "recall", "f1")},
            "support": int(point["support"][i]),
        }
        for i, label in enumerate(labels)
    }
    rates = [_row_rates(b_matrix) for b_matrix in (confusion(y_true[idx], y_pred[idx], k) for idx in indices)]
    result["confusion_matrix"] = {
        "labels": labels,
        "matrix": matrix.tolist(),  # counts: rows are true classes, columns predicted classes
        "rates": np.round(_row_rates(matrix), 4).tolist(),  # each row divided by its class's support
        "rates_ci_low": np.round(np.percentile(rates, lo, axis=0), 4).tolist(),
        "rates_ci_high": np.round(np.percentile(rates, hi, axis=0), 4).tolist(),
    }
    return result


def _row_rates(matrix: np.ndarray) -> np.ndarray:
    support = matrix.sum(axis=1, keepdims=True).astype(float)
    return np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)


def paired_difference(y_true: list[int] | np.ndarray, pred_a: list[int] | np.ndarray,
                      pred_b: list[int] | np.ndarray, k: int, indices: np.ndarray,
                      confidence: float = 0.95) -> dict[str, Any]:
    """a - b for each scalar metric, with a paired bootstrap interval (same resamples for both)."""
    y_true, pred_a, pred_b = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    point_a = _from_confusion(confusion(y_true, pred_a, k))
    point_b = _from_confusion(confusion(y_true, pred_b, k))
    diffs: dict[str, list[float]] = {name: [] for name in SCALARS}
    for idx in indices:
        a = _from_confusion(confusion(y_true[idx], pred_a[idx], k))
        b = _from_confusion(confusion(y_true[idx], pred_b[idx], k))
        for name in SCALARS:
            diffs[name].append(a[name] - b[name])
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    out: dict[str, Any] = {}
    for name in SCALARS:
        out[name] = round(float(point_a[name] - point_b[name]), 4)
        out[f"{name}_ci"] = [round(float(np.percentile(diffs[name], lo)), 4),
                             round(float(np.percentile(diffs[name], hi)), 4)]
    return out


def eval_metrics(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, float]:
    """Point metrics for validation during training (no intervals: cheap)."""
    point = _from_confusion(confusion(np.asarray(y_true), np.asarray(y_pred), k))
    return {name: float(point[name]) for name in SCALARS}


def scalar_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int, indices: np.ndarray, names: tuple[str, ...],
                  confidence: float = 0.95) -> dict[str, Any]:
    """Only the scalar metrics ``names`` with their bootstrap intervals (a slice's figures: cheap)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    point = _from_confusion(confusion(y_true, y_pred, k))
    boot = [_from_confusion(confusion(y_true[idx], y_pred[idx], k)) for idx in indices]
    out: dict[str, Any] = {"n": int(len(y_true))}
    for name in names:
        out[name] = round(float(point[name]), 4)
        out[f"{name}_ci"] = percentile_interval([b[name] for b in boot], confidence)
    return out
