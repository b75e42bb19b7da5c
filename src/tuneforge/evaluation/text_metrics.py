"""Generation metrics (exact match, BLEU, chrF, ROUGE, METEOR) and perplexity, with bootstrap confidence intervals.

Pure functions over strings and arrays, in the style of :mod:`tuneforge.evaluation.metrics`: every scalar is
reported as ``name`` beside ``name_ci = [low, high]`` (percentile bootstrap over the given resample ``indices``,
shape samples x n, e.g. from ``bootstrap_indices``). BLEU and chrF are corpus-level (sacrebleu, 0-100): per-sentence
sufficient statistics are extracted once and summed over each resample. ROUGE and METEOR are per-example means
(0-1). METEOR needs WordNet (``scripts/ensure-wordnet.sh``); without it METEOR is ``None``, never computed without
synonyms.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

GENERATION_SCALARS = ("exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "meteor")
METEOR_UNAVAILABLE = "WordNet not installed (run scripts/ensure-wordnet.sh)"
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def meteor_available() -> bool:
    """Whether nltk can load WordNet, which METEOR needs for its synonym matches."""
    try:
        from nltk.corpus import wordnet

        return bool(wordnet.synsets("dog"))
    except (ImportError, LookupError, OSError, ValueError, AssertionError):
        return False


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lowercase, drop punctuation and articles (a/an/the), collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class _PerExample:
    """Per-example figures: corpus statistics for BLEU/chrF (n x k) and per-example scores (n) for the rest."""

    bleu_stats: np.ndarray
    chrf_stats: np.ndarray
    means: dict[str, np.ndarray]  # exact_match, rouge1, rouge2, rougeL and, with WordNet, meteor


@lru_cache(maxsize=1)
def _corpus_metrics() -> tuple[Any, Any]:
    """sacrebleu's BLEU and chrF with their defaults (as ``corpus_bleu`` / ``corpus_chrf``), built once."""
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(), CHRF()


def _per_example(predictions: list[str], references: list[str]) -> _PerExample:
    from rouge_score.rouge_scorer import RougeScorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    predictions, references = [p or "" for p in predictions], [r or "" for r in references]
    bleu_metric, chrf_metric = _corpus_metrics()
    bleu = np.asarray(bleu_metric._extract_corpus_statistics(predictions, [references]), dtype=np.int64)
    chrf = np.asarray(chrf_metric._extract_corpus_statistics(predictions, [references]), dtype=np.int64)
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    means = {
        "exact_match": np.array([normalize_answer(p) == normalize_answer(r)
                                 for p, r in zip(predictions, references)], dtype=float),
        **{name: np.array([s[name].fmeasure for s in rouge]) for name in ("rouge1", "rouge2", "rougeL")},
    }
    if meteor_available():
        from nltk.translate.meteor_score import meteor_score

        means["meteor"] = np.array([meteor_score([_tokens(r)], _tokens(p))
                                    for p, r in zip(predictions, references)])
    return _PerExample(bleu, chrf, means)


def _scores(data: _PerExample, idx: np.ndarray | None = None) -> dict[str, float]:
    """All scalar metrics on the examples ``idx`` (all of them when None)."""
    bleu_metric, chrf_metric = _corpus_metrics()

    def pick(values: np.ndarray) -> np.ndarray:
        return values if idx is None else values[idx]

    out = {name: float(pick(values).mean()) for name, values in data.means.items()}
    out["bleu"] = float(bleu_metric._compute_score_from_stats(pick(data.bleu_stats).sum(axis=0).tolist()).score)
    out["chrf"] = float(chrf_metric._compute_score_from_stats(pick(data.chrf_stats).sum(axis=0).tolist()).score)
    return out


def _interval(values: np.ndarray | list[float], confidence: float) -> list[float]:
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    return [round(float(np.nanpercentile(values, lo)), 4), round(float(np.nanpercentile(values, hi)), 4)]


def _report(point: dict[str, float], boot: list[dict[str, float]], n: int, confidence: float) -> dict[str, Any]:
    result: dict[str, Any] = {"n": n}
    for name in GENERATION_SCALARS:
        if name not in point:  # METEOR without WordNet
            result[name], result[f"{name}_ci"] = None, None
            result[f"{name}_unavailable"] = METEOR_UNAVAILABLE
            continue
        result[name] = round(point[name], 4)
        result[f"{name}_ci"] = _interval([b[name] for b in boot], confidence)
    return result


def generation_metrics(predictions: list[str], references: list[str], indices: np.ndarray,
                       confidence: float = 0.95) -> dict[str, Any]:
    """Exact match, BLEU, chrF, ROUGE-1/2/L and METEOR of ``predictions`` against ``references`` (one each), each
    with a percentile bootstrap interval over ``indices`` (shape: samples x n)."""
    data = _per_example(predictions, references)
    boot = [_scores(data, idx) for idx in np.asarray(indices)]
    return _report(_scores(data), boot, len(predictions), confidence)


def paired_generation_difference(pred_a: list[str], pred_b: list[str], references: list[str], indices: np.ndarray,
                                 confidence: float = 0.95) -> dict[str, Any]:
    """a - b for each generation metric, with a paired bootstrap interval (same resamples for both)."""
    a, b = _per_example(pred_a, references), _per_example(pred_b, references)
    point_a, point_b = _scores(a), _scores(b)
    diff = {name: point_a[name] - point_b[name] for name in point_a}
    boot = []
    for idx in np.asarray(indices):
        sa, sb = _scores(a, idx), _scores(b, idx)
        boot.append({name: sa[name] - sb[name] for name in sa})
    result = _report(diff, boot, len(references), confidence)
    del result["n"]
    return result


def perplexity(nll_sums: np.ndarray, token_counts: np.ndarray, indices: np.ndarray,
               confidence: float = 0.95) -> dict[str, Any]:
    """Corpus perplexity exp(sum of NLL / sum of tokens) from per-example summed negative log-likelihoods (natural
    log) and label-token counts, with a bootstrap interval that resamples examples."""
    nll, tokens = np.asarray(nll_sums, dtype=float), np.asarray(token_counts, dtype=float)
    if nll.shape != tokens.shape or nll.ndim != 1:
        raise ValueError("nll_sums and token_counts must be 1-d arrays of the same length")
    if tokens.sum() <= 0:
        raise ValueError("no label tokens to compute perplexity over")
    idx = np.asarray(indices)
    boot_tokens = tokens[idx].sum(axis=1)
    boot_nll = np.divide(nll[idx].sum(axis=1), boot_tokens, out=np.full(len(idx), np.nan), where=boot_tokens > 0)
    per_token = float(nll.sum() / tokens.sum())
    return {
        "perplexity": round(float(np.exp(per_token)), 4),
        "perplexity_ci": _interval(np.exp(boot_nll), confidence),
        "nll_per_token": round(per_token, 4),
        "tokens": int(tokens.sum()),
    }
