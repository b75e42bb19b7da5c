"""Layer freezing: freeze the embeddings, the first N transformer layers and/or parameters matching patterns.

The task head always trains; layer norms stay trainable unless ``train_norms`` is false (they are few and
let frozen layers adapt their scale, as in BitFit-style tuning).
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tuneforge.config.schema import MethodConfig
from tuneforge.methods.spec import MethodSpec, register

if TYPE_CHECKING:
    import torch

_NORM = re.compile(r"(^|\.)(layer_?norm|ln_?\w*|norm\w*|\w*_norm)(\.|$)", re.IGNORECASE)


class FreezeConfig(MethodConfig):
    name: Literal["freeze"] = "freeze"
    embeddings: bool = Field(True, description="Freeze the embedding layer.")
    layers: int = Field(0, ge=0, description="Freeze the first N transformer layers (counted from the input).")
    patterns: list[str] = Field(default_factory=list, description="Also freeze parameters whose names match "
                                "these glob patterns, e.g. '*.attention.*'.")
    train_norms: bool = Field(True, description="Keep layer norms trainable inside frozen parts.")


def apply(model: torch.nn.Module, config: FreezeConfig, task: Any) -> torch.nn.Module:
    layer_prefixes = _layer_prefixes(model)
    if config.layers > len(layer_prefixes):
        raise ValueError(f"method.layers={config.layers} but the model has {len(layer_prefixes)} layers")
    frozen_prefixes = layer_prefixes[: config.layers]
    head = _head_prefixes(model)
    for name, parameter in model.named_parameters():
        freeze = (
            (config.embeddings and (".embeddings." in f".{name}" or "embed_tokens" in name))
            or any(name.startswith(prefix) for prefix in frozen_prefixes)
            or any(fnmatch.fnmatch(name, pattern) for pattern in config.patterns)
        )
        if any(name.startswith(prefix) for prefix in head):
            freeze = False
        elif config.train_norms and _NORM.search(name):
            freeze = False
        parameter.requires_grad_(not freeze)
    return model


def _layer_prefixes(model: torch.nn.Module) -> list[str]:
    """Name prefixes of the transformer blocks, input first: the longest ModuleList of the model."""
    import torch

    best: tuple[str, torch.nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        return []
    return [f"{best[0]}.{index}." for index in range(len(best[1]))]


def _head_prefixes(model: torch.nn.Module) -> list[str]:
    """Top-level modules that are not the pretrained backbone (the task head)."""
    backbone = getattr(model, "base_model_prefix", "")
    return [f"{name}." for name, _ in model.named_children() if name != backbone]


register(MethodSpec("freeze", FreezeConfig, "tuneforge.methods.freeze:apply",
                    "Freeze embeddings, the first N layers or named parameters; train the rest.",
                    learning_rates=(1e-4, 2e-5)))  # the quickstart's freeze recipe learns BBC topics at 1e-4
