"""model/README.md: a model card written from the run folder's files (what the model is, the data, the method,
the test metrics with intervals beside the baselines, the verdict, how to load it), in place of peft's empty
template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tuneforge.evaluation.figures import with_interval
from tuneforge.io import atomic_write_text


def write_model_card(run_dir: Path) -> Path:
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import task_of

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    data = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8"))
    meta = json.loads((run_dir / "model" / "tuneforge.json").read_text(encoding="utf-8"))
    task = task_spec(task_of(metrics))
    base = (meta.get("base") or {}).get("name") or meta["base_model"]
    adapter = (run_dir / "model" / "adapter_config.json").exists()
    test = metrics.get("test", {})
    lines = ["---", f"library_name: {'peft' if adapter else 'transformers'}", f"base_model: {base}",
             f"tags: [tuneforge, {task.name}, {meta['method']}]", "---", "",
             f"# {config.get('name', run_dir.name)}", "",
             f"{task.description[0].upper()}{task.description[1:]} (`{task.name}`): `{base}` fine-tuned with "
             f"`{meta['method']}` by tuneforge{', saved as an adapter' if adapter else ''}.", ""]
    if metrics.get("verdict"):
        lines += [f"**Verdict:** {metrics['verdict']['line']}.", ""]
        shown = metrics["verdict"]["warnings"] + metrics["verdict"].get("weak_slices", [])
        lines += [f"**Warning:** {w}" for w in shown] + [""] * bool(shown)
    lines += _results(test, task)
    lines += ["## Data", "", f"`{config['data']['path']}`: {data.get('source', {}).get('rows_read', '?')} rows read, "
              f"{data.get('rows_kept', '?')} kept; splits " + ", ".join(
                  f"{name} {part.get('rows', '?')}" for name, part in data.get("splits", {}).items()) +
              (f"; labels: {', '.join(meta['labels'])}" if meta.get("labels") else "") + ".", ""]
    train = config["train"]
    training = metrics.get("training", {})
    lines += ["## Training", "", f"{training.get('epochs_run', '?')} epochs ({training.get('global_steps', '?')} "
              f"steps), learning rate {train['learning_rate']}, batch {train['batch_size']}, precision "
              f"{meta.get('precision', 'fp32')}, {training.get('train_seconds', '?')} s; method settings: "
              f"`{json.dumps(meta.get('method_config', {}))}`.", ""]
    lines += _usage(run_dir, task, adapter, base)
    return atomic_write_text(run_dir / "model" / "README.md", "\n".join(lines) + "\n")


def _results(test: dict[str, Any], task: Any) -> list[str]:
    if not test.get("finetuned"):
        return []
    models = {"fine-tuned": test["finetuned"], **test.get("baselines", {})}
    shown = [m for m in task.shown if test["finetuned"].get(m) is not None]
    count = test.get("n_prompts") or test["finetuned"].get("n") or test.get("n_perplexity") or "?"
    rows = ["| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for metric in shown:
        rows.append(f"| {metric} | " + " | ".join(with_interval(f.get(metric), f.get(f"{metric}_ci"))
                                                  for f in models.values()) + " |")
    return [f"## Results (test split, {count} examples, {int(100 * test.get('confidence', 0.95))}% bootstrap "
            f"intervals)", "", *rows, ""]


def _usage(run_dir: Path, task: Any, adapter: bool, base: str) -> list[str]:
    command = (f"tuneforge chat {run_dir}" if task.generates else
               f"tuneforge predict {run_dir} --question '...' --context '...'" if len(task.inputs) > 1 else
               f"tuneforge predict {run_dir} --text '...'")
    lines = ["## How to use", "", "```bash", command, f"tuneforge serve {run_dir}   # an OpenAI-compatible API",
             "```", ""]
    if adapter:
        lines += ["With peft alone:", "", "```python", "from peft import PeftModel",
                  f"from transformers import {task.auto_class}", "",
                  f"base = {task.auto_class}.from_pretrained({base!r})  # the base this adapter was trained on",
                  f"model = PeftModel.from_pretrained(base, {str(run_dir / 'model')!r})", "```", ""]
    return lines
