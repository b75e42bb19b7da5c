"""Prefix tuning, prompt tuning and IA3, through peft (saved in peft's format, loadable by
``peft.PeftModel.from_pretrained``). Prefix and prompt tuning prepend virtual tokens to every sequence, so
they cannot share a packed row between examples: runs with them are not packed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tuneforge.config.schema import MethodConfig
from tuneforge.methods.spec import MethodSpec, TaskFacts, register

if TYPE_CHECKING:
    import torch


class PrefixConfig(MethodConfig):
    name: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(20, ge=1, description="Trained key/value vectors prepended in every layer.")
    prefix_projection: bool = Field(False, description="Reparameterize the prefix through a 2-layer MLP (more "
                                    "stable training; only the resulting prefix is needed at inference).")
    encoder_hidden_size: int | None = Field(None, ge=1, description="Width of that MLP (default: the model's hidden size).")


class PromptConfig(MethodConfig):
    name: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1, description="Trained embeddings prepended to the input.")
    init_text: str | None = Field(None, description="Initialise them from the embeddings of this text (e.g. "
                                  "'Classify the topic of this article:'); default random.")


class IA3Config(MethodConfig):
    name: Literal["ia3"] = "ia3"
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Modules whose activations get learned scaling vectors (default: peft's choice).")
    feedforward_modules: list[str] | None = Field(
        None, description="Which of them are feed-forward (scaled on their input); default: peft's choice.")
    modules_to_save: list[str] | None = Field(None, description="Extra modules trained fully and saved.")


def apply_prefix(model: torch.nn.Module, config: PrefixConfig, task: TaskFacts) -> torch.nn.Module:
    import peft

    return peft.get_peft_model(model, peft.PrefixTuningConfig(
        task_type=task.peft_task_type, num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.prefix_projection, encoder_hidden_size=config.encoder_hidden_size
        or model.config.hidden_size))


def apply_prompt(model: torch.nn.Module, config: PromptConfig, task: TaskFacts) -> torch.nn.Module:
    import peft

    options: dict = {"prompt_tuning_init": peft.PromptTuningInit.RANDOM}
    if config.init_text:
        options = {"prompt_tuning_init": peft.PromptTuningInit.TEXT, "prompt_tuning_init_text": config.init_text,
                   "tokenizer_name_or_path": model.config.name_or_path}
    return peft.get_peft_model(model, peft.PromptTuningConfig(
        task_type=task.peft_task_type, num_virtual_tokens=config.num_virtual_tokens, **options))


def apply_ia3(model: torch.nn.Module, config: IA3Config, task: TaskFacts) -> torch.nn.Module:
    import peft

    return peft.get_peft_model(model, peft.IA3Config(
        task_type=task.peft_task_type, target_modules=config.target_modules,
        feedforward_modules=config.feedforward_modules, modules_to_save=config.modules_to_save))


register(MethodSpec("prefix", PrefixConfig, "tuneforge.methods.peft_methods:apply_prefix",
                    "Prefix tuning: trained key/value prefixes in every attention layer (peft).", packs=False,
                    learning_rates=(1e-2, 1e-2)))
# virtual tokens before the input shift every position, which a per-token head (tags, answer start/end) cannot take
register(MethodSpec("prompt", PromptConfig, "tuneforge.methods.peft_methods:apply_prompt",
                    "Prompt tuning: trained virtual token embeddings before the input (peft).", packs=False,
                    per_token_heads=False, learning_rates=(3e-2, 3e-2)))  # peft's prompt-tuning examples: 3e-2
register(MethodSpec("ia3", IA3Config, "tuneforge.methods.peft_methods:apply_ia3",
                    "IA3: learned scaling of attention keys/values and feed-forward activations (peft).",
                    learning_rates=(3e-3, 3e-3)))  # the IA3 paper (T-Few): 3e-3
