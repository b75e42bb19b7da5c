"""Elastic weight consolidation (Kirkpatrick et al., 2017) as a Trainer callback: before the first step, the diagonal
Fisher information of the trainable weights is estimated on the old data (the squared gradient of each old
example's log-likelihood of its true label, one example at a time), and the weights are anchored where they start;
before every optimizer step the penalty's gradient, ``strength * F * (w - w_anchor)``, is added to each weight's
gradient (after clipping, so the clip acts on the data's gradient alone). Same gradient as adding
``strength / 2 * sum F (w - w_anchor)^2`` to the loss; the logged loss is the data loss."""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback


class EwcCallback(TrainerCallback):
    def __init__(self, tokenizer: Any, texts: list[str], labels: list[int], max_length: int, strength: float):
        self.tokenizer, self.texts, self.labels, self.max_length = tokenizer, texts, labels, max_length
        self.strength = strength
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.penalty_at_end: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.fisher:  # a resumed run keeps the anchor it had (set again from the same old model only once)
            self.fisher = fisher_diagonal(model, self.tokenizer, self.texts, self.labels, self.max_length)
            self.anchor = {name: p.detach().clone() for name, p in model.named_parameters() if name in self.fisher}

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.grad is not None and name in self.fisher:
                    param.grad.add_(self.strength * self.fisher[name] * (param - self.anchor[name]))

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.penalty_at_end = float(penalty(model, self.fisher, self.anchor)) * self.strength / 2


def fisher_diagonal(model: Any, tokenizer: Any, texts: list[str], labels: list[int],
                    max_length: int) -> dict[str, torch.Tensor]:
    """Mean squared gradient of log p(true label | text) per trainable weight, with dropout off; the model's
    gradients and training mode are left as they were, and the global random state is not touched."""
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in trainable.items()}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for text, label in zip(texts, labels):
            model.zero_grad(set_to_none=True)
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt").to(device)
            log_probs = torch.log_softmax(model(**batch).logits.float(), dim=-1)
            (-log_probs[0, label]).backward()
            for name, p in trainable.items():
                if p.grad is not None:
                    total[name] += p.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: value / max(1, len(texts)) for name, value in total.items()}


def penalty(model: Any, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum F (w - w_anchor)^2 over the anchored weights."""
    with torch.no_grad():
        return sum((fisher[name] * (p - anchor[name]) ** 2).sum() for name, p in model.named_parameters()
                   if name in fisher) or torch.tensor(0.0)
