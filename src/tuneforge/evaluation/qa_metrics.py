"""Extractive QA scores as the official SQuAD script computes them: both texts normalized (lowercase, punctuation
and the articles a/an/the removed, whitespace collapsed), exact match and token F1 against every gold answer,
the best one counting. Means over questions with bootstrap intervals (questions resampled; the same resamples
for every model, so differences get paired intervals). And the ``sliding_window`` baseline, which needs no
training: the context sentence that shares the most words with the question."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

import numpy as np

from tuneforge.evaluation.metrics import percentile_interval

SCALARS = ("exact_match", "f1")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not wanted:  # as SQuAD 2.0's script: an empty side scores 1 only against an empty side
        return float(predicted == wanted)
    same = sum((Counter(predicted) & Counter(wanted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(wanted)
    return 2 * precision * recall / (precision + recall)


def score_answers(predictions: list[str], golds: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Per question: exact match and F1, each the best over that question's gold answers."""
    em = np.array([max(exact_match(p, g) for g in gold) for p, gold in zip(predictions, golds)], dtype=float)
    f1 = np.array([max(token_f1(p, g) for g in gold) for p, gold in zip(predictions, golds)], dtype=float)
    return em, f1


def qa_metrics(em: np.ndarray, f1: np.ndarray, indices: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    result: dict[str, Any] = {"n": int(len(em))}
    for name, scores in zip(SCALARS, (em, f1)):
        result[name] = round(float(scores.mean()), 4) if len(scores) else 0.0
        result[f"{name}_ci"] = percentile_interval(scores[indices].mean(axis=1), confidence) if len(scores) else [0, 0]
    return result


def paired_qa_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], indices: np.ndarray,
                         confidence: float = 0.95) -> dict[str, Any]:
    """a - b for exact match and F1 ((em, f1) per question each), with a paired bootstrap interval."""
    out: dict[str, Any] = {}
    for name, x, y in zip(SCALARS, a, b):
        difference = x - y
        out[name] = round(float(difference.mean()), 4) if len(difference) else 0.0
        out[f"{name}_ci"] = percentile_interval(difference[indices].mean(axis=1), confidence) if len(x) else [0, 0]
    return out


def sentences(context: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(context) if part.strip()]


def sliding_window_baseline(questions: list[str], contexts: list[str]) -> list[str]:
    """For each question, the sentence of its context sharing the most distinct (normalized) words with it; the
    first such sentence on a tie."""
    predicted = []
    for question, context in zip(questions, contexts):
        words = set(normalize_answer(question).split())
        candidates = sentences(context) or [context]
        overlap = [len(words & set(normalize_answer(sentence).split())) for sentence in candidates]
        predicted.append(candidates[int(np.argmax(overlap))])
    return predicted
