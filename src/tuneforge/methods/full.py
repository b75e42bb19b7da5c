"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal


from tuneforge.config.schema import MethodConfig
from tuneforge.methods.spec import MethodSpec, register

if TYPE_CHECKING:
    import torch


class FullConfig(MethodConfig):
    name: Literal["full"] = "full"


def apply(model: torch.nn.Module, config: FullConfig, task: Any) -> torch.nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


register(MethodSpec("full", FullConfig, "tuneforge.methods.full:apply",
                    "Train every parameter.", learning_rates=(3e-5, 2e-5)))  # BERT: 2e-5..5e-5; LLM SFT: ~2e-5
