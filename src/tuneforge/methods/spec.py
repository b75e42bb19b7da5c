"""What a method is: its spec and the call that registers it. Imports no torch, no method module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tuneforge.config.schema import MethodConfig


class TaskFacts(Protocol):
    """What a method reads of the task it is applied for (a ``tuneforge.tasks`` spec is handed in; methods never
    look at a task's name)."""

    name: str
    peft_task_type: str  # peft's TaskType name
    head_modules: tuple[str, ...]  # the task head: trained fully, never adapted
    per_token_head: bool  # the head reads every position
    vocabulary_head: bool  # an LM head (generative) rather than a small task head


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_class: type[MethodConfig]
    apply: str  # "module:function" (model, config, task facts) -> model, imported on first use
    description: str
    load: str | None = None  # "module:function" giving extra from_pretrained kwargs (e.g. quantization)
    packs: bool = True  # whether examples may share a packed row (not with virtual tokens prepended per row)
    save: str | None = None  # "module:function(model, folder)" when the method does not save with save_pretrained
    per_token_heads: bool = True  # False: it shifts positions (virtual tokens), so a per-token head cannot use it
    # train.learning_rate: auto -- (with a task head trained from scratch: classes, tags, answer spans; for a
    # generative model's language-model head). Common practice for the method, checked here where noted.
    learning_rates: tuple[float, float] = (2e-4, 2e-4)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> None:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is registered twice")
    METHODS[spec.name] = spec
