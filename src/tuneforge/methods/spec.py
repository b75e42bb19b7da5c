"""What a method is: its spec and the call that registers it. Imports no torch, no method module."""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.config.schema import MethodConfig


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_class: type[MethodConfig]
    apply: str  # "module:function", imported on first use
    tasks: tuple[str, ...]
    description: str
    load: str | None = None  # "module:function" giving extra from_pretrained kwargs (e.g. quantization)
    packs: bool = True  # whether examples may share a packed row (not with virtual tokens prepended per row)
    save: str | None = None  # "module:function(model, folder)" when the method does not save with save_pretrained


METHODS: dict[str, MethodSpec] = {}
ALL_TASKS = ("sequence-classification", "token-classification", "question-answering", "causal-lm", "seq2seq")


def register(spec: MethodSpec) -> None:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is registered twice")
    METHODS[spec.name] = spec
