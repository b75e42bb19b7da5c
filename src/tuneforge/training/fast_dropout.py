"""Dropout with a cheaper mask on CPU.

``torch.nn.functional.dropout`` on CPU draws its mask with ``bernoulli_``, which costs 30-40x the multiply it
gates; on a small encoder (MiniLM at length 64) the masks took about 15% of a training step. ``FastDropout`` draws
16-bit random integers instead (4x cheaper) and drops an element when its integer falls below
``round(p * 2**15)``: the drop rate is ``p`` to within 2**-16 and the kept values are scaled by ``1 / (1 - p')``
for the rate ``p'`` actually used, so the expectation is exact. Same module, same state dict; in eval mode and
at ``p = 0`` it is the identity, as before. CUDA keeps torch's fused dropout.

Attention dropout is inside ``scaled_dot_product_attention``, whose CPU kernels have no dropout: with it, sdpa
falls back to its math path and the slow mask. ``tuneforge_sdpa`` (registered with transformers' attention and
mask interfaces) is sdpa when nothing is dropped, and the same softmax attention with a FastDropout mask on the
probabilities in CPU training.
"""

from __future__ import annotations

from typing import Any

import torch

_LEVELS = 1 << 15


class FastDropout(torch.nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return fast_dropout(x, self.p)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    threshold = round(p * _LEVELS)
    if threshold == 0:
        return x
    drop = torch.empty(x.shape, dtype=torch.int16, device=x.device).random_(0, _LEVELS) < threshold
    # in place on masked_fill's own output (its backward needs only the mask): one float tensor, not two
    return x.masked_fill(drop, 0.0).mul_(_LEVELS / (_LEVELS - threshold))


ATTENTION = "tuneforge_sdpa"


def sdpa_fast_dropout(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (dropout == 0 or not module.training or query.device.type != "cpu" or key.shape[1] != query.shape[1]
            or getattr(module, "is_causal", False)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = (scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
                  if attention_mask.dtype == torch.bool else scores + attention_mask)
    probabilities = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionInterface.register(ATTENTION, sdpa_fast_dropout)
        AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"])


def use_fast_dropout(model: Any) -> int:
    """Turn every ``nn.Dropout`` of the model into a FastDropout in place, and an encoder's sdpa attention with
    dropout into ``tuneforge_sdpa``; the number of dropout sites changed."""
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout and module.p > 0 and not module.inplace:
            module.__class__ = FastDropout
            changed += 1
    config = getattr(model, "config", None)
    rate = getattr(config, "attention_probs_dropout_prob", 0) or getattr(config, "attention_dropout", 0)
    encoder = (config is not None and not getattr(config, "is_decoder", False)
               and not getattr(config, "is_encoder_decoder", False))
    if encoder and rate and config._attn_implementation == "sdpa":
        _register()
        config._attn_implementation = ATTENTION
        changed += 1
    return changed
