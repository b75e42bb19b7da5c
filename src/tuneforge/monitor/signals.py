"""Logged traffic cut into windows, and each window's signals against the run's reference: input drift (length,
out-of-vocabulary share, embedding MMD with its permutation p-value, a domain classifier's AUC), prediction drift
(label distribution by PSI and chi-square, confidence) and, where feedback exists, quality with an interval."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tuneforge.config.monitor import MonitorConfig
from tuneforge.monitor import drift
from tuneforge.monitor.reference import Reference


def cut_windows(rows: list[dict[str, Any]], config: MonitorConfig) -> list[list[dict[str, Any]]]:
    """Consecutive windows of ``window_requests`` rows (a last partial one only from half a window on), or of
    ``window_minutes`` of wall time (empty stretches skipped)."""
    if config.window_requests:
        size = config.window_requests
        windows = [rows[start:start + size] for start in range(0, len(rows), size)]
        return [w for w in windows if len(w) >= max(2, size // 2)]
    if not rows:
        return []
    span, first = config.window_minutes * 60, rows[0]["ts"]  # type: ignore[operator]
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(int((row["ts"] - first) // span), []).append(row)
    return [grouped[key] for key in sorted(grouped) if len(grouped[key]) >= 2]


def signal_series(rows: list[dict[str, Any]], reference: Reference, config: MonitorConfig) -> list[dict[str, Any]]:
    """One record per window: its span, size and signals (None where a signal cannot be read), and intervals."""
    series = []
    for index, window in enumerate(cut_windows(rows, config)):
        signals, intervals = window_signals(window, reference, config, seed=config.seed + index)
        series.append({"window": index, "start": window[0]["ts"], "end": window[-1]["ts"], "rows": len(window),
                       "signals": signals, "intervals": intervals})
    return series


def window_signals(window: list[dict[str, Any]], reference: Reference, config: MonitorConfig,
                   seed: int = 0) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    signals: dict[str, float | None] = {name: None for name in _names()}
    signals.update(_input_signals(window, reference, config, seed))
    signals.update(_prediction_signals(window, reference))
    quality, intervals = _quality(window, config)
    signals.update(quality)
    latencies = [row["latency_ms"] for row in window if row.get("latency_ms") is not None]
    if latencies:
        import numpy as np

        signals["latency_ms_p95"] = round(float(np.percentile(latencies, 95)), 2)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in signals.items()}, intervals


def _names() -> tuple[str, ...]:
    from tuneforge.config.monitor import SIGNALS

    return SIGNALS


def _input_signals(window: list[dict[str, Any]], reference: Reference, config: MonitorConfig,
                   seed: int) -> dict[str, float | None]:
    import numpy as np

    lengths = [row["input_words"] for row in window]
    out: dict[str, float | None] = {"input_words_mean": float(np.mean(lengths)),
                                    "input_words_ks_p": drift.ks_p(reference.input_words, lengths)}
    texts = [row["input_text"] for row in window if row.get("input_text") is not None]
    if texts:
        share = drift.oov_share(texts, reference.vocabulary)
        out.update(oov_share=share, oov_share_delta=share - reference.oov_share)
    vectors = [row["embedding"] for row in window if row.get("embedding") is not None]
    if len(vectors) >= 4 and len(vectors[0]) == reference.embeddings.shape[1]:
        current = np.stack(vectors)
        mmd, p_value = drift.mmd_test(reference.embeddings, current, config.permutations, seed)
        out.update(embedding_mmd=mmd, embedding_mmd_p=p_value,
                   domain_auc=drift.domain_auc(reference.embeddings, current, seed))
    return out


def _prediction_signals(window: list[dict[str, Any]], reference: Reference) -> dict[str, float | None]:
    import numpy as np

    predicted = [row["prediction"] for row in window if row.get("prediction") is not None]
    if not predicted:
        return {}
    counts = dict(Counter(predicted))
    confidences = [row["confidence"] for row in window if row.get("confidence") is not None]
    return {"prediction_psi": drift.psi(reference.predictions, counts),
            "prediction_chi2_p": drift.chi_square_p(reference.predictions, counts),
            "confidence_mean": float(np.mean(confidences)) if confidences else None,
            "confidence_ks_p": drift.ks_p(reference.confidences, confidences) if confidences else None}


def _quality(window: list[dict[str, Any]], config: MonitorConfig) -> tuple[dict[str, float | None],
                                                                              dict[str, list[float]]]:
    """Accuracy on the window's labelled requests (with its Wilson interval), once there are enough; mean rating."""
    out: dict[str, float | None] = {}
    intervals: dict[str, list[float]] = {}
    labelled = [row for row in window if row.get("label") is not None and row.get("prediction") is not None]
    if len(labelled) >= config.min_feedback:
        right = sum(row["label"] == row["prediction"] for row in labelled)
        out["accuracy"] = right / len(labelled)
        intervals["accuracy"] = [round(x, 4) for x in drift.wilson_interval(right, len(labelled))]
    ratings = [row["rating"] for row in window if row.get("rating") is not None]
    if ratings:
        out["rating_mean"] = sum(ratings) / len(ratings)
    return out, intervals
