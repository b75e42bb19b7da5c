"""``tuneforge init``: a starter config for a task, every key commented with its description from the schema (so
nobody digs in the source for what a key does), valid as written."""

from __future__ import annotations

from typing import Any

import yaml

SHOWN = {  # the keys a starter writes, per section (config show prints every one)
    "model": ("name", "task"),
    "data": ("path", "max_length", "split", "on_bad_rows"),
    "method": ("name", "r", "alpha", "dropout"),
    "train": ("epochs", "batch_size", "learning_rate", "early_stopping", "precision", "seed"),
    "evaluation": ("baselines", "bootstrap_samples", "confidence"),
}


def starter_config(task: str) -> str:
    """The starter of ``task``: the model and data its spec names (``starter``: ones that work offline here)."""
    from tuneforge.config.loader import load_config
    from tuneforge.errors import ConfigError
    from tuneforge.tasks.registry import available_tasks, task_spec

    if task not in available_tasks():
        raise ConfigError(f"--task {task!r}: one of {', '.join(available_tasks())}")
    spec = task_spec(task)
    model, path, data_help = spec.starter
    config = load_config({"name": f"my-{task}", "model": {"name": model, "task": task}, "data": {"path": path},
                          **spec.starter_settings})
    values = config.model_dump(mode="json")
    lines = [f"# A tuneforge run config for {task} (written by tuneforge init). Every key with its description:",
             "# tuneforge train --help; every default: tuneforge config show THIS_FILE. Validate before training:",
             "# tuneforge config validate THIS_FILE.", f"name: {values['name']}"]
    shown = {**SHOWN, **{section: tuple(keys) for section, keys in spec.starter_settings.items()}}
    for section, keys in shown.items():
        lines.append(f"{section}:")
        fields = type(getattr(config, section)).model_fields
        for key in keys:
            if key not in fields:
                continue
            value = values[section][key]
            if section == "train" and key == "learning_rate":
                value = "auto"  # decided from the method and the task's head when the config is read
            note = data_help if (section, key) == ("data", "path") else fields[key].description or ""
            lines.append(f"  {key}: {_inline(value)}" + (f"  # {_one_line(note)}" if note else ""))
        if section == "train" and spec.class_weighted:
            lines.append(f"  class_weights: auto  # {_one_line(fields['class_weights'].description)}")
    return "\n".join(lines) + "\n"


def _inline(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _one_line(text: str) -> str:
    return " ".join(text.split())

