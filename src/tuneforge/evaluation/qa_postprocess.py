"""From start/end logits to answers: for every window of an example, the ``n_best`` highest start and end
logits among its context tokens are paired; a pair counts when the end is not before the start and the span
is at most ``max_answer_length`` tokens; its score is start logit + end logit. The example's answer is the best
pair over all its windows, cut from the context by the tokens' character offsets."""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneforge.data.qa_features import Features


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, features: Features, contexts: list[str],
               n_best: int = 20, max_answer_length: int = 30) -> list[dict[str, Any]]:
    """One answer per context: ``{"text", "score", "start", "end"}`` (character offsets; text "" and score None
    when no window offers a valid span)."""
    best: list[dict[str, Any]] = [{"text": "", "score": None, "start": -1, "end": -1} for _ in contexts]
    for window, example in enumerate(features.example):
        offsets = features.offsets[window]
        inside = np.array([i for i, span in enumerate(offsets) if span is not None], dtype=int)
        if not len(inside):
            continue
        starts = _top(start_logits[window], inside, n_best)
        ends = _top(end_logits[window], inside, n_best)
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[window][s] + end_logits[window][e])
                current = best[example]["score"]
                if current is None or score > current:
                    first, last = offsets[s][0], offsets[e][1]
                    best[example] = {"text": contexts[example][first:last], "score": score, "start": first,
                                     "end": last}
    return best


def _top(logits: np.ndarray, candidates: np.ndarray, k: int) -> list[int]:
    """The ``k`` candidate positions with the highest logits, best first."""
    order = np.argsort(-logits[candidates], kind="stable")[:k]
    return [int(i) for i in candidates[order]]
