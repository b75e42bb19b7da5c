"""``tuneforge init``: a starter config for a task, every key commented with its description from the schema (so
nobody digs in the source for what a key does), valid as written."""

from __future__ import annotations

from typing import Any

import yaml

# what a starter points at: a model and data that work offline here, per task
STARTS = {
    "sequence-classification": ("minilm", "offline:bbc-news", "labelled text: csv/json/jsonl/parquet with text and "
                                "label columns, or a folder of <label>/*.txt"),
    "token-classification": ("minilm", "offline:wnut16", "CoNLL (word TAB tag per line, blank line between "
                             "sentences) or jsonl with tokens and tags lists"),
    "question-answering": ("minilm", "data/squad.jsonl", "SQuAD-style jsonl: question, context, answers {text, "
                           "answer_start}"),
    "causal-lm": ("smollm2-135m", "offline:chatterbot", "chat data (messages, sharegpt, alpaca, prompt/completion) "
                  "or raw text"),
    "seq2seq": ("minilm+minilm", "data/pairs.jsonl", "prompt/completion pairs (or alpaca) in jsonl"),
}
SHOWN = {  # the keys a starter writes, per section (config show prints every one)
    "model": ("name", "task"),
    "data": ("path", "max_length", "split", "on_bad_rows"),
    "method": ("name", "r", "alpha", "dropout"),
    "train": ("epochs", "batch_size", "learning_rate", "early_stopping", "precision", "seed"),
    "evaluation": ("baselines", "bootstrap_samples", "confidence"),
}


def starter_config(task: str) -> str:
    from tuneforge.config.loader import load_config
    from tuneforge.errors import ConfigError

    if task not in STARTS:
        raise ConfigError(f"--task {task!r}: one of {', '.join(STARTS)}")
    model, path, data_help = STARTS[task]
    config = load_config({"name": f"my-{task}", "model": {"name": model, "task": task}, "data": {"path": path},
                          **({"train": {"class_weights": "auto"}} if task == "sequence-classification" else {})})
    values = config.model_dump(mode="json")
    lines = [f"# A tuneforge run config for {task} (written by tuneforge init). Every key with its description:",
             "# tuneforge train --help; every default: tuneforge config show THIS_FILE. Validate before training:",
             "# tuneforge config validate THIS_FILE.", f"name: {values['name']}"]
    for section, keys in SHOWN.items():
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
        if section == "train" and task == "sequence-classification":
            lines.append(f"  class_weights: auto  # {_one_line(fields['class_weights'].description)}")
    return "\n".join(lines) + "\n"


def _inline(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _one_line(text: str) -> str:
    return " ".join(text.split())

