"""Config keys as help text, generated from the schema's field descriptions (documented once)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tuneforge.config.schema import MethodConfig, RunConfig


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    candidates = [annotation, *typing.get_args(annotation)]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _type_name(annotation: Any) -> str:
    """``float | 'auto'``, ``list[str] | None``: what a person types, without pydantic's constraint wrappers."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _lines(model: type[BaseModel], prefix: str) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        if nested and not issubclass(nested[0], MethodConfig):
            lines.append(f"  {key}: {field.description or ''}")
            lines += _lines(nested[0], f"{key}.")
            continue
        if nested:  # the method section: one block per registered method
            from tuneforge.methods.registry import available_methods, method_config_class

            lines.append(f"  {key}: {field.description or ''} One of: {', '.join(available_methods())}.")
            for method in available_methods():
                options = _lines(method_config_class(method), f"{key}.")
                lines.append(f"    [{method}]")
                lines += ["  " + line for line in options if not line.strip().startswith(f"{key}.name ")]
            continue
        default = field.get_default(call_default_factory=True) if field.default is not PydanticUndefined or \
            field.default_factory else "required"
        lines.append(f"  {key} ({_type_name(field.annotation)}, default {default}): {field.description or ''}")
    return lines


def describe_keys() -> str:
    return "\n".join(_lines(RunConfig, "")) + "\n"
