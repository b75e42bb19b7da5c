"""Drift statistics, pure functions over numbers and counts: what the serving log looks like against the run's
validation split.

Embeddings: the unbiased squared MMD with a Gaussian RBF kernel (median-heuristic bandwidth) and its permutation
test, and a domain classifier's cross-validated AUC (0.5 when the two sides cannot be told apart). Categories
(predicted labels, languages, ...): the population stability index and a chi-square test of homogeneity. Scalars
(lengths, confidences): the two-sample Kolmogorov-Smirnov p-value. Rates: the Wilson score interval. Text: word
tokens and the out-of-vocabulary share. numpy, scipy and scikit-learn only; everything seeded is deterministic.
"""

from __future__ import annotations

import math
import re

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import chi2_contingency, ks_2samp, norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

WORD = re.compile(r"[a-z0-9']+")


def _as_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """Rows as samples: a float 2-D array (a 1-D array is one feature per row)."""
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array, got shape {matrix.shape}")
    return matrix


def _pair(x: np.ndarray, y: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as matrices with the same number of features and at least `minimum` rows each."""
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature counts differ: {x.shape[1]} and {y.shape[1]}")
    if len(x) < minimum or len(y) < minimum:
        raise ValueError(f"each sample needs at least {minimum} rows, got {len(x)} and {len(y)}")
    return x, y


def _rbf_kernel(pooled: np.ndarray, bandwidth: float | None) -> np.ndarray:
    """The Gaussian kernel matrix exp(-d^2 / (2 bandwidth^2)) of the pooled rows; bandwidth None takes the median
    heuristic, the square root of the median squared pairwise distance (1.0 when that is 0)."""
    squared = pdist(pooled, metric="sqeuclidean")
    if bandwidth is None:
        median = float(np.median(squared)) if squared.size else 0.0
        bandwidth = math.sqrt(median) if median > 0 else 1.0
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    return np.exp(-squareform(squared) / (2.0 * bandwidth * bandwidth))


def _mmd_from_kernel(kernel: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The unbiased squared MMD for each row of `masks` (1 marks the first sample, 0 the second), all from one
    kernel matrix: within-sample sums without the diagonal, cross sums in full."""
    first = masks.astype(np.float64)
    second = 1.0 - first
    m, n = first.sum(axis=1), second.sum(axis=1)
    diagonal = np.diag(kernel)
    kernel_first, kernel_second = first @ kernel, second @ kernel
    within_first = np.einsum("pi,pi->p", kernel_first, first) - first @ diagonal
    within_second = np.einsum("pi,pi->p", kernel_second, second) - second @ diagonal
    cross = np.einsum("pi,pi->p", kernel_first, second)
    return within_first / (m * (m - 1)) + within_second / (n * (n - 1)) - 2.0 * cross / (m * n)


def mmd_rbf(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy between the rows of x and y under a Gaussian RBF kernel; about 0
    (and possibly slightly negative) when both come from one distribution. bandwidth None: the median heuristic on
    the pooled pairwise distances. Each sample needs at least 2 rows."""
    x, y = _pair(x, y, minimum=2)
    kernel = _rbf_kernel(np.vstack([x, y]), bandwidth)
    mask = np.zeros((1, len(x) + len(y)))
    mask[0, : len(x)] = 1.0
    return float(_mmd_from_kernel(kernel, mask)[0])


def mmd_test(reference: np.ndarray, current: np.ndarray, permutations: int = 200, seed: int = 0,
             max_reference: int = 500) -> tuple[float, float]:
    """(squared MMD, permutation p-value) of current against reference. The reference is subsampled (seeded) to at
    most max_reference rows; the kernel is computed once on the pooled rows with the bandwidth fixed there, and the
    sample labels are reshuffled `permutations` times: p = (1 + #(permuted >= observed)) / (1 + permutations)."""
    reference, current = _pair(reference, current, minimum=2)
    if permutations < 1 or max_reference < 2:
        raise ValueError(f"need permutations >= 1 and max_reference >= 2, got {permutations} and {max_reference}")
    rng = np.random.default_rng(seed)
    if len(reference) > max_reference:
        reference = reference[np.sort(rng.choice(len(reference), size=max_reference, replace=False))]
    kernel = _rbf_kernel(np.vstack([reference, current]), None)
    size, m = len(reference) + len(current), len(reference)
    masks = np.zeros((permutations + 1, size))
    masks[0, :m] = 1.0
    for row in range(1, permutations + 1):
        masks[row, rng.permutation(size)[:m]] = 1.0
    statistics = _mmd_from_kernel(kernel, masks)
    observed = float(statistics[0])
    exceed = int(np.count_nonzero(statistics[1:] >= observed))
    return observed, (1 + exceed) / (1 + permutations)


def _balance(reference: np.ndarray, current: np.ndarray, rng: np.random.Generator,
             ratio: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger side (seeded) to at most `ratio` times the smaller."""
    limit = ratio * min(len(reference), len(current))
    if len(reference) > limit:
        reference = reference[np.sort(rng.choice(len(reference), size=limit, replace=False))]
    if len(current) > limit:
        current = current[np.sort(rng.choice(len(current), size=limit, replace=False))]
    return reference, current


def domain_auc(reference: np.ndarray, current: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """How well a domain classifier tells current (1) from reference (0): the ROC AUC of a standardised logistic
    regression's out-of-fold probabilities (stratified, shuffled, seeded folds). About 0.5 when the two sides look
    alike, towards 1.0 as they drift apart; 0.5 when either side has fewer than 4 rows. The larger side is first
    subsampled to at most 3 times the smaller."""
    reference, current = _as_matrix(reference, "reference"), _as_matrix(current, "current")
    if len(reference) < 4 or len(current) < 4:
        return 0.5
    if reference.shape[1] != current.shape[1]:
        raise ValueError(f"feature counts differ: {reference.shape[1]} and {current.shape[1]}")
    rng = np.random.default_rng(seed)
    reference, current = _balance(reference, current, rng)
    features = np.vstack([reference, current])
    labels = np.concatenate([np.zeros(len(reference), dtype=int), np.ones(len(current), dtype=int)])
    splits = max(2, min(folds, len(reference), len(current)))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, probabilities))


def _shares(counts: dict[str, int], categories: list[str]) -> np.ndarray:
    """Each category's share of the total (all 0 when the total is 0)."""
    values = np.array([counts.get(category, 0) for category in categories], dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def psi(reference_counts: dict[str, int], current_counts: dict[str, int], epsilon: float = 1e-4) -> float:
    """Population stability index, sum (current - reference) * ln(current / reference) over the union of
    categories, shares floored at epsilon. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 a large shift."""
    categories = sorted(set(reference_counts) | set(current_counts))
    if not categories:
        return 0.0
    expected = np.maximum(_shares(reference_counts, categories), epsilon)
    actual = np.maximum(_shares(current_counts, categories), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def chi_square_p(reference_counts: dict[str, int], current_counts: dict[str, int]) -> float:
    """p-value of the chi-square test of homogeneity on the 2 x K table of counts over the union of categories
    (categories zero on both sides dropped); 1.0 when fewer than 2 categories remain or a side has no counts."""
    categories = sorted(set(reference_counts) | set(current_counts))
    table = np.array([[reference_counts.get(category, 0) for category in categories],
                      [current_counts.get(category, 0) for category in categories]], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or np.any(table.sum(axis=1) == 0):
        return 1.0
    return float(chi2_contingency(table).pvalue)


def ks_p(reference: np.ndarray | list[float], current: np.ndarray | list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (small when the two distributions differ); 1.0 if either is empty."""
    reference = np.asarray(reference, dtype=np.float64).ravel()
    current = np.asarray(current, dtype=np.float64).ravel()
    if reference.size == 0 or current.size == 0:
        return 1.0
    return float(ks_2samp(reference, current).pvalue)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a rate of successes / total at the given two-sided confidence; (0.0, 1.0) when
    total is 0."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if total == 0:
        return 0.0, 1.0
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    rate, z2 = successes / total, z * z
    denominator = 1.0 + z2 / total
    centre = (rate + z2 / (2.0 * total)) / denominator
    half = z * math.sqrt(rate * (1.0 - rate) / total + z2 / (4.0 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def words(text: str) -> list[str]:
    """Lowercase word tokens: runs of letters a-z, digits and apostrophes in the lowercased text."""
    return WORD.findall(text.lower())


def oov_share(texts: list[str], vocabulary: set[str]) -> float:
    """Share of the word tokens over all texts that are not in vocabulary; 0.0 when there are no tokens."""
    tokens = [token for text in texts for token in words(text)]
    if not tokens:
        return 0.0
    return sum(token not in vocabulary for token in tokens) / len(tokens)
