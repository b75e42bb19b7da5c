"""The New-run form, generated from the config schema: one field per key (its description as help, its default
filled in), the method's keys per method, and what a form value means. A value is YAML text, read exactly as a
``key.sub=value`` override on the command line is; what the form does not cover goes in an "other settings" YAML
mapping. No Gradio here: the page (``tuneforge.ui.page_new``) lays these fields out."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tuneforge.config.help import _type_name
from tuneforge.config.loader import PRESETS, deep_merge, nest, parse_overrides, preset_path, read_yaml
from tuneforge.config.schema import MethodConfig, RunConfig
from tuneforge.errors import ConfigError

SECTIONS = ("model", "data", "method", "train", "evaluation", "tracking")  # the form's sections, in order
LEFT_TO_YAML = {"output_dir", "tracking.dir", "tracking.uri"}  # the UI decides these (inside the workspace)
DEFAULTS = "defaults"
NAME_PATTERN = next(m.pattern for m in RunConfig.model_fields["name"].metadata if getattr(m, "pattern", None))
DEFAULT_METHOD = RunConfig.model_fields["method"].get_default(call_default_factory=True).name


@dataclass(frozen=True)
class FormField:
    key: str  # dotted config key, e.g. train.epochs
    kind: str  # "bool" (a checkbox), "choice" (a dropdown of YAML texts) or "text" (YAML text)
    help: str
    default: Any = None  # JSON value; None also for a required key
    required: bool = False
    choices: tuple[str, ...] = ()
    methods: dict[str, Any] = field(default_factory=dict)  # method keys: method -> its default

    @property
    def section(self) -> str:
        return self.key.split(".")[0] if "." in self.key else ""

    def default_for(self, method: str | None) -> Any:
        return self.methods.get(method, self.default) if self.methods else self.default


def form_fields() -> list[FormField]:
    """Every key of the form's sections, in schema order; nested sections (split, clean, early_stopping ...) by
    dotted keys; a section whose default is null (augment, hpo) is left to the other-settings YAML."""
    fields = [_field("name", RunConfig.model_fields["name"])]
    for section in SECTIONS:
        annotation = RunConfig.model_fields[section].annotation
        if section == "method":
            fields += _method_fields()
        else:
            fields += _walk(_models_in(annotation)[0], f"{section}.")
    return [f for f in fields if f.key not in LEFT_TO_YAML]


def _walk(model: type[BaseModel], prefix: str) -> list[FormField]:
    fields = []
    for name, info in model.model_fields.items():
        nested = _models_in(info.annotation)
        if nested and not issubclass(nested[0], MethodConfig):
            if info.default_factory is not None:  # a section with defaults of its own: its keys are fields
                fields += _walk(nested[0], f"{prefix}{name}.")
            continue  # a section that is null by default: other settings
        fields.append(_field(f"{prefix}{name}", info))
    return fields


def _method_fields() -> list[FormField]:
    """method.name as a dropdown of the registered methods, then the union of their keys (each knows the methods
    that have it and its default in each)."""
    from tuneforge.methods.registry import available_methods, method_config_class

    methods = available_methods()
    name = FormField("method.name", "choice", RunConfig.model_fields["method"].description or "", DEFAULT_METHOD,
                     choices=tuple(methods))
    union: dict[str, FormField] = {}
    for method in methods:
        for key, info in method_config_class(method).model_fields.items():
            if key == "name" or _models_in(info.annotation):
                continue
            made = _field(f"method.{key}", info)
            known = union.get(made.key)
            union[made.key] = FormField(made.key, made.kind, made.help, made.default, made.required, made.choices,
                                        {**(known.methods if known else {}), method: made.default})
    return [name, *union.values()]


def _field(key: str, info: Any) -> FormField:
    required = info.default is PydanticUndefined and info.default_factory is None
    default = None if required else _jsonable(info.get_default(call_default_factory=True))
    kind, choices = _kind(info.annotation)
    help_text = " ".join((info.description or "").split())
    if kind == "text":  # a dropdown shows its choices; a text box says what it takes
        help_text += f" ({_type_name(info.annotation)})"
    return FormField(key, kind, help_text, default, required, choices)


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """bool: a checkbox; a union of literals, bools and None: a dropdown of their YAML texts; else YAML text."""
    if annotation is bool:
        return "bool", ()
    members = _members(annotation)
    values: list[Any] = []
    for member in members:
        if member is bool:
            values += [True, False]
        elif member is type(None):
            values.append(None)
        elif typing.get_origin(member) is typing.Literal:
            values += list(typing.get_args(member))
        else:
            return "text", ()
    return "choice", tuple(dict.fromkeys(as_text(v) for v in values))


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in list(candidates):
        candidates += typing.get_args(candidate)  # SerializeAsAny[...], Annotated[...]
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def as_text(value: Any) -> str:
    """A value as the form shows it: YAML flow text (``3``, ``auto``, ``[a, b]``, ``null``); a bool stays bool."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and value and yaml.safe_load(value) == value and ":" not in value:
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def field_value(form_field: FormField, value: Any) -> Any:
    """What a widget shows for ``value``: a bool for a checkbox, else its text ('' for a required key unset)."""
    if form_field.kind == "bool":
        return bool(value)
    if value is None and (form_field.required or form_field.kind == "text"):
        return ""
    return as_text(value)


def parse_value(form_field: FormField, shown: Any) -> Any:
    """A widget's value as the config value it sets (YAML text read like an override); '' is unset (None)."""
    if form_field.kind == "bool":
        return bool(shown)
    text = "" if shown is None else str(shown)
    return parse_overrides([f"v={text}"])["v"] if text.strip() else None


def start_options(workspace_configs: list[str]) -> list[str]:
    """Where a new config starts: the defaults, each task's ``tuneforge init`` template, the presets, and the
    workspace's YAML files."""
    from tuneforge.tasks.registry import available_tasks

    return [DEFAULTS, *(f"init: {task}" for task in available_tasks()),
            *(f"preset: {p.stem}" for p in sorted(PRESETS.glob("*.yaml"))), *(f"file: {f}" for f in workspace_configs)]


def start_config(option: str, workspace: Any) -> dict[str, Any]:
    """The config mapping a start option stands for (``file:`` a YAML file inside ``workspace``)."""
    kind, _, name = option.partition(": ")
    if kind == "init":
        from tuneforge.tasks.starter import starter_config

        return yaml.safe_load(starter_config(name))
    if kind == "preset":
        return read_yaml(preset_path(name))
    if kind == "file":
        return read_yaml(workspace.inside(name, "config file"))
    return {}


def form_values(config: dict[str, Any], fields: list[FormField]) -> tuple[dict[str, Any], str]:
    """Each field's widget value for ``config`` (its default where the config has none), and the rest of the
    config as the other-settings YAML."""
    method = str((config.get("method") or {}).get("name", DEFAULT_METHOD)) if isinstance(config.get("method"), dict) \
        else str(config.get("method") or DEFAULT_METHOD)
    flat = _flatten(config)
    keys = {f.key for f in fields}
    values = {f.key: field_value(f, flat.pop(f.key, f.default_for(method))) for f in fields}
    values["method.name"] = method
    rest = {k: v for k, v in flat.items() if k not in keys and not (k == "method" and isinstance(v, str))}
    return values, (yaml.safe_dump(nest(rest), sort_keys=False, allow_unicode=True) if rest else "")


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys down to the values (a mapping value that is a field's value, e.g. data.columns, stays whole
    when its key is a form field; the caller pops those first by key)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted not in _MAPPING_KEYS:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


_MAPPING_KEYS = {f.key for f in form_fields() if isinstance(f.default, dict)}


def config_from_form(values: dict[str, Any], other_yaml: str, fields: list[FormField]) -> dict[str, Any]:
    """The config mapping the form stands for: the keys whose values differ from their defaults (and the ones a
    config must name), the other-settings YAML merged in. Bad YAML or a bad value: one line, as the CLI says it."""
    method = str(values.get("method.name") or DEFAULT_METHOD)
    overrides: dict[str, Any] = {}
    for form_field in fields:
        if form_field.methods and method not in form_field.methods:
            continue
        value = parse_value(form_field, values.get(form_field.key))
        named = form_field.key in ("model.task", "method.name")  # a config reads better naming these
        if value is not None and (named or value != form_field.default_for(method)):
            overrides[form_field.key] = value
    config = nest(overrides)
    if other_yaml.strip():
        try:
            extra = yaml.safe_load(other_yaml)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(f"other settings{f' line {mark.line + 1}' if mark else ''}: not valid YAML "
                              f"({getattr(exc, 'problem', exc)})") from None
        if extra is not None and not isinstance(extra, dict):
            raise ConfigError("other settings: a YAML mapping of config sections (e.g. hpo: {...})")
        config = deep_merge(config, extra or {})
    return config


def to_yaml(config: dict[str, Any]) -> str:
    order = ["name", "model", "data", "method", "train", "evaluation", "tracking"]
    ordered = {k: config[k] for k in order if k in config} | {k: v for k, v in config.items() if k not in order}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110)
