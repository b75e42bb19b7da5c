"""A sequence classifier that reads only the first token's final state computes only that position in its last
layer.

BERT- and RoBERTa-style classifiers pool ``hidden_states[:, 0]`` (the pooler, or the classification head on
``<s>``), so the last encoder layer's queries, attention output, feed-forward block and norms at every other
position are computed and thrown away. This patch runs the last layer's attention with the first token's query
against every key and value, then the rest of the layer on that one position: the same logits and gradients
(up to float rounding), about a sixth of the layer's cost at length 64, nothing changed in the weights or the
saved model. Layers that get a cache (prefix tuning) or are asked for attention weights run unchanged.
"""

from __future__ import annotations

import types
from typing import Any

import torch

# heads that read only position 0 of the last hidden state
FIRST_TOKEN_CLASSIFIERS = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                           "XLMRobertaForSequenceClassification")


def first_token_only(model: Any) -> bool:
    """Patch the last encoder layer of a supported classifier in place; True when it was patched."""
    if type(model).__name__ not in FIRST_TOKEN_CLASSIFIERS or getattr(model.config, "is_decoder", False):
        return False
    backbone = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not layers or not _bert_layer(layers[-1]):
        return False
    last = layers[-1]
    if hasattr(last, "_full_forward"):  # patched already (patching twice would make the fallback call itself)
        return True
    last._full_forward = last.forward
    last.forward = types.MethodType(_first_token_forward, last)
    return True


def _bert_layer(layer: Any) -> bool:
    attention = getattr(layer, "attention", None)
    self_attention = getattr(attention, "self", None)
    return (all(hasattr(self_attention, name) for name in ("query", "key", "value", "attention_head_size"))
            and hasattr(attention, "output") and hasattr(layer, "feed_forward_chunk")
            and not getattr(layer, "add_cross_attention", False))


def _first_token_forward(layer: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         *args: Any, **kwargs: Any) -> torch.Tensor:
    if kwargs.get("past_key_values") is not None or kwargs.get("output_attentions") or any(
            a is not None for a in args):
        return layer._full_forward(hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    heads = (-1, attention.attention_head_size)
    query = attention.query(first).view(batch, 1, *heads).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, *heads).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, *heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1, :]
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    context, _ = interface(attention, query, key, value, attention_mask,
                           dropout=attention.dropout.p if attention.training else 0.0, scaling=attention.scaling)
    context = context.reshape(batch, 1, -1).contiguous()
    return layer.feed_forward_chunk(layer.attention.output(context, first))
