"""Baselines on the same test split: the majority class, and a linear probe (logistic regression on the frozen
pretrained model's mean-pooled embeddings; C chosen on validation)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def majority_baseline(train_labels: list[int], n_test: int) -> np.ndarray:
    most_common = Counter(train_labels).most_common(1)[0][0]
    return np.full(n_test, most_common)


def embed(encoder: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 32,
          description: str = "embedding") -> np.ndarray:
    """Mean-pooled last hidden states of a frozen encoder (padding masked out), batched, with progress."""
    import torch
    from tqdm.auto import tqdm

    encoder.eval()
    order = np.argsort([len(text) for text in texts])  # similar lengths together: less padding
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc=description, leave=False, disable=None):
            batch_ids = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in batch_ids], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[batch_ids] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy()
    return out


def linear_probe(train_x: np.ndarray, train_y: list[int], val_x: np.ndarray | None, val_y: list[int] | None,
                 test_x: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    train_x, test_x = scaler.transform(train_x), scaler.transform(test_x)
    best_c, best_score = 1.0, -1.0
    if val_x is not None and val_y:
        val_x = scaler.transform(val_x)
        for c in (0.01, 0.1, 1.0, 10.0):
            probe = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(train_x, train_y)
            score = f1_score(val_y, probe.predict(val_x), average="macro")
            if score > best_score:
                best_c, best_score = c, score
    probe = LogisticRegression(C=best_c, max_iter=2000, random_state=seed).fit(train_x, train_y)
    return probe.predict(test_x), {"C": best_c, "validation_macro_f1": round(best_score, 4)}
