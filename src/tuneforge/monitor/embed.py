"""Input embeddings for drift: sentence vectors (mean-pooled, unit length) from all-MiniLM-L6-v2, the sentence
encoder that ships offline, so that every run, whatever its task or size, is watched in the same space."""

from __future__ import annotations

import threading
from typing import Any

EMBEDDER = "minilm"
MAX_TOKENS = 128


class Embedder:
    """``embed(texts)`` -> float32 array (n, 384); one call at a time (the server calls it from many threads)."""

    def __init__(self, name: str = EMBEDDER, max_tokens: int = MAX_TOKENS):
        from transformers import AutoModel, AutoTokenizer

        from tuneforge.models.assets import resolve_model
        from tuneforge.models.loading import quiet_libraries

        quiet_libraries()
        path = resolve_model(name).path
        self.name, self.max_tokens = name, max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self._lock = threading.Lock()

    def embed(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np
        import torch

        vectors = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start:start + batch_size], truncation=True, max_length=self.max_tokens,
                                       padding=True, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                vectors.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
        return np.concatenate(vectors) if vectors else np.zeros((0, self.model.config.hidden_size), np.float32)
