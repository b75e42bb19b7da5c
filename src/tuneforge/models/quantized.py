"""Quantization that has no saved form in transformers (torch's dynamic int8), applied when a model loads, as its
folder's tuneforge.json records (``optimized.quantize`` with ``on_load``; written by ``tuneforge optimize``)."""

from __future__ import annotations

from typing import Any


def quantize_on_load(model: Any, meta: dict[str, Any]) -> Any:
    recipe = meta.get("optimized") or {}
    if not recipe.get("on_load"):
        return model
    import warnings

    import torch

    with warnings.catch_warnings():  # torch marks torch.ao deprecated (torchao's int8 configs are the saved kind)
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
