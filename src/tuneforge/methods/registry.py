"""The method registry: a name -> (config class, apply function). No scanning, no magic imports.

A method module defines a pydantic config (subclass of :class:`MethodConfig`) and an ``apply(model, config,
task)`` function that returns the model ready to train, then registers a :class:`~tuneforge.methods.spec.MethodSpec`.
The built-in method modules are imported here, explicitly; they import no torch (configs validate instantly and
``train --help`` stays light): ``apply`` functions import what they need when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from pydantic import ValidationError

from tuneforge.config.schema import MethodConfig
from tuneforge.methods import adapter, freeze, full, lora, peft_methods, qlora  # noqa: F401  (each registers itself)
from tuneforge.methods.spec import METHODS as _METHODS, MethodSpec, TaskFacts, register  # noqa: F401

if TYPE_CHECKING:
    import torch

ApplyFn = Callable[["torch.nn.Module", MethodConfig, str], "torch.nn.Module"]


def available_methods() -> list[str]:
    return sorted(_METHODS)


def spec_for(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r} (allowed: {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


def method_config_class(name: str) -> type[MethodConfig]:
    return spec_for(name).config_class


def validate_method(value: dict[str, Any]) -> MethodConfig:
    """Validate a ``method:`` mapping against its method's own config class, errors in one line."""
    spec = spec_for(str(value.get("name", "")))
    try:
        return spec.config_class.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(spec.config_class.model_fields)
            raise ValueError(f".{field}: unknown key for method {spec.name!r} (allowed: {allowed})") from None
        raise ValueError(f".{field}: {error['msg']} (got {error.get('input')!r})") from None


def apply_method(model: torch.nn.Module, config: MethodConfig, task: TaskFacts) -> torch.nn.Module:
    """The model ready to train with the method; ``task`` is the task's spec (its head type and modules)."""
    spec = spec_for(config.name)
    if task.per_token_head and not spec.per_token_heads:
        can = [m for m, s in sorted(_METHODS.items()) if s.per_token_heads]
        raise ValueError(f"method {spec.name!r} does not apply to task {task.name!r}: its virtual tokens shift the "
                         f"positions that the task's head reads (methods that do: {', '.join(can)})")
    module_name, _, function = spec.apply.partition(":")
    apply: ApplyFn = getattr(importlib.import_module(module_name), function)
    return apply(model, config, task)


def save_trained(model: torch.nn.Module, config: MethodConfig, folder: Any) -> None:
    """Save what the method trained: its own format, or ``save_pretrained`` (peft adapters, full models)."""
    spec = spec_for(config.name)
    if spec.save is None:
        model.save_pretrained(folder)
        return
    module_name, _, function = spec.save.partition(":")
    getattr(importlib.import_module(module_name), function)(model, folder)


def load_kwargs(config: MethodConfig) -> dict[str, Any]:
    """What the base model's ``from_pretrained`` needs for this method (QLoRA: a quantization config)."""
    spec = spec_for(config.name)
    if spec.load is None:
        return {}
    module_name, _, function = spec.load.partition(":")
    return getattr(importlib.import_module(module_name), function)(config)
