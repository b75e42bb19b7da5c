"""Load a run config from YAML, apply ``key.sub=value`` overrides, and turn validation errors into one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError

PRESETS = Path(__file__).parent / "presets"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=1", "method.r=4"]`` -> nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key.sub=value, e.g. train.epochs=1")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is set to a value and also used as a section")
            node = child
        node[leaf] = value
    return nested


def nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"train.learning_rate": 1e-4} -> {"train": {"learning_rate": 1e-4}} (values kept as they are)."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (give the path to a YAML run config)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a run config is a YAML mapping (name:, model:, data:, ...)")
    return data


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | dict[str, Any] | None = None
) -> RunConfig:
    """Read, override and validate a run config. Raises :class:`ConfigError` with one actionable line."""
    if isinstance(source, dict):
        data, origin, base_dir = dict(source), "config", None
    else:
        data, origin, base_dir = read_yaml(source), str(source), Path(source).resolve().parent
    extra: dict[str, Any] = {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        before = data.get("method")
        data = deep_merge(data, extra)
        new_method = extra.get("method")
        if isinstance(new_method, dict) and isinstance(before, dict) and \
                new_method.get("name", before.get("name")) != before.get("name"):
            data["method"] = new_method  # another method: the old method's options do not carry over
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{_blamed(exc, extra, origin)}: {describe_error(exc)}") from None
    except ValueError as exc:  # raised by a nested validator outside pydantic's wrapping
        raise ConfigError(f"{origin}: {exc}") from None
    if base_dir is not None:
        _resolve_relative_paths(config, base_dir)
    return config


def _resolve_relative_paths(config: RunConfig, base_dir: Path) -> None:
    """A relative data path means relative to the config file, as users expect; keep it if it exists from cwd."""
    data_path = Path(config.data.path).expanduser()
    if not data_path.is_absolute() and not data_path.exists() and (base_dir / data_path).exists():
        config.data.path = str(base_dir / data_path)


def _blamed(exc: ValidationError, overrides: dict[str, Any], origin: str) -> str:
    """Where the bad value came from: the command line when an override set that very field, else the config."""
    node: Any = overrides
    for part in _field_path(exc.errors()[0]["loc"]) or ("",):
        if not isinstance(node, dict) or part not in node:
            return origin
        node = node[part]
    return "command line" if origin != "config" else "overrides"


_UNION_MEMBER = re.compile(r"^(constrained-\w+|float|int|str|bool|none|.*\[.*\])$")


def _field_path(loc: tuple[Any, ...]) -> tuple[str, ...]:
    """The config path of an error location, without the union member names pydantic adds (constrained-float,
    literal['auto'], ...)."""
    parts = [str(part) for part in loc]
    while parts and _UNION_MEMBER.match(parts[-1]):
        parts.pop()
    return tuple(parts)


def describe_error(exc: ValidationError) -> str:
    """The first error as ``field.path: what is wrong (allowed: ...)``."""
    error = exc.errors()[0]
    loc = ".".join(_field_path(error["loc"]))
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _section_for(error["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else ""
        return f"{loc}: unknown key (allowed here: {allowed})"
    if kind == "missing":
        return f"{loc}: required field is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    value = error.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    if message.startswith("."):  # a nested section validated by its own class names its sub-field
        loc, message = loc + message.split(":", 1)[0], message.split(":", 1)[1].strip()
    return f"{loc}: {message}{shown}" if loc else f"{message}{shown}"


def _section_for(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model_types = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not model_types:
            return None
        model = model_types[0]
    return model


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML: every default written out, the full record of a run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def preset_path(name: str) -> Path:
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ConfigError(f"preset {name!r} not found (known presets: {known})")
    return path
