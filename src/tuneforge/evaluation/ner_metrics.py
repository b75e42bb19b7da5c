"""Entity-level precision/recall/F1 (seqeval's default, conlleval-style IOB2 chunks: an entity is a maximal
B-X I-X* run; it counts only when type and both ends match), micro-averaged and per type, with bootstrap
intervals over sentences; and the memorization baseline (each word's most frequent training tag)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

SCALARS = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) chunks; an I-X that does not continue an X chunk starts a new one (as seqeval)."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not continues:
            found.add((kind, start, i))
            start, kind = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and not continues):
            start, kind = i, tag[2:]
    return found


def _counts(gold: list[list[str]], pred: list[list[str]], types: list[str]) -> np.ndarray:
    """Per sentence and type: [true positives, predicted, gold], plus token [correct, total] in the last row."""
    index = {t: i for i, t in enumerate(types)}
    counts = np.zeros((len(gold), len(types) + 1, 3), dtype=np.int64)
    for n, (g, p) in enumerate(zip(gold, pred)):
        gold_set, pred_set = entities(g), entities(p)
        for kind, *_ in gold_set:
            counts[n, index[kind], 2] += 1
        for chunk in pred_set:
            if chunk[0] in index:
                counts[n, index[chunk[0]], 1] += 1
                counts[n, index[chunk[0]], 0] += chunk in gold_set
        counts[n, -1, 0] = sum(a == b for a, b in zip(g, p))
        counts[n, -1, 1] = len(g)
    return counts


def _scores(summed: np.ndarray) -> dict[str, float]:
    tp, predicted, gold = summed[:-1].sum(axis=0)
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_f1": f1, "entity_precision": precision, "entity_recall": recall,
            "token_accuracy": summed[-1, 0] / summed[-1, 1] if summed[-1, 1] else 0.0}


def _interval(values: list[float], confidence: float) -> list[float]:
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    return [round(float(np.percentile(values, lo)), 4), round(float(np.percentile(values, hi)), 4)]


def ner_metrics(gold: list[list[str]], pred: list[list[str]], types: list[str], indices: np.ndarray,
                confidence: float = 0.95) -> dict[str, Any]:
    counts = _counts(gold, pred, types)
    point = _scores(counts.sum(axis=0))
    boot = [_scores(counts[idx].sum(axis=0)) for idx in indices]
    result: dict[str, Any] = {"n": len(gold)}
    for name in SCALARS:
        result[name] = round(float(point[name]), 4)
        result[f"{name}_ci"] = _interval([b[name] for b in boot], confidence)
    per_type = {}
    for i, kind in enumerate(types):
        tp, predicted, support = counts[:, i].sum(axis=0)
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        per_type[kind] = {"precision": round(p, 4), "recall": round(r, 4),
                          "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0, "support": int(support)}
    result["per_type"] = per_type
    return result


def paired_ner_difference(gold: list[list[str]], pred_a: list[list[str]], pred_b: list[list[str]], types: list[str],
                          indices: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    a, b = _counts(gold, pred_a, types), _counts(gold, pred_b, types)
    point_a, point_b = _scores(a.sum(axis=0)), _scores(b.sum(axis=0))
    diffs = [(_scores(a[idx].sum(axis=0)), _scores(b[idx].sum(axis=0))) for idx in indices]
    out: dict[str, Any] = {}
    for name in SCALARS:
        out[name] = round(float(point_a[name] - point_b[name]), 4)
        out[f"{name}_ci"] = _interval([x[name] - y[name] for x, y in diffs], confidence)
    return out


def memorization_baseline(train_tokens: list[list[str]], train_tags: list[list[str]],
                          tokens: list[list[str]]) -> list[list[str]]:
    """Each word gets its most frequent tag in training (lowercased); unseen words get O; BIO repaired."""
    from tuneforge.data.ner import repair_bio

    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for words, tags in zip(train_tokens, train_tags):
        for word, tag in zip(words, tags):
            seen[word.lower()][tag] += 1
    predicted = []
    for words in tokens:
        tags = [seen[w.lower()].most_common(1)[0][0] if w.lower() in seen else "O" for w in words]
        predicted.append(repair_bio(tags)[0])
    return predicted


def eval_ner(label_ids: np.ndarray, logits: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Point metrics for validation during training, from sub-token predictions (positions labelled -100 skipped)."""
    pred_ids = logits.argmax(axis=-1)
    gold, pred = [], []
    for row_gold, row_pred in zip(label_ids, pred_ids):
        keep = row_gold != -100
        gold.append([labels[i] for i in row_gold[keep]])
        pred.append([labels[i] for i in row_pred[keep]])
    types = sorted({label[2:] for label in labels if label != "O"})
    return {k: float(v) for k, v in _scores(_counts(gold, pred, types).sum(axis=0)).items()}
