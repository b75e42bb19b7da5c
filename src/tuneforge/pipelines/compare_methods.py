"""``tuneforge compare-methods cfg.yaml --methods full,lora,qlora,adapter``: the same task, data, split and
training settings with each method, each run in its own process so that its peak memory is its own; a table
and a plot of trainable parameters, peak memory, wall time and the test metric with its interval.

LoRA-family methods (lora, qlora) take r/alpha/dropout/target_modules from the config's method when it is one
of them; every other method runs with its defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from tuneforge.config.loader import dump_config
from tuneforge.config.schema import RunConfig
from tuneforge.io import atomic_write_json, atomic_write_text

LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


def compare_methods(config: RunConfig, methods: list[str], output: str | Path,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    from tuneforge.errors import ConfigError
    from tuneforge.methods.registry import spec_for

    for name in methods:  # unknown names fail before anything runs
        try:
            spec_for(name)
        except ValueError as exc:
            raise ConfigError(f"--methods: {exc}") from None
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    metric = headline_metric(config)
    rows = []
    for name in methods:
        log(f"compare-methods: {name}")
        rows.append(_run_one(config, name, output / name, metric))
        atomic_write_json(output / "compare.json", {"metric": metric, "runs": rows})  # partial results survive
    atomic_write_text(output / "compare.html", _page(rows, metric, config.name))
    return rows


def headline_metric(config: RunConfig) -> str:
    """The test metric the table compares: the task's headline (raw text, which has no generated answers, is
    compared by perplexity)."""
    from tuneforge.tasks.registry import task_spec

    task = task_spec(config.model.task)
    if task.generates and config.data.dataset_format == "text":
        return "perplexity"
    if task.headline[0] == "win_rate" and not config.preference.judge_run:  # no judge, no win rate
        return task.headline[1]
    return task.headline[0]


def _method_config(config: RunConfig, name: str) -> dict[str, Any]:
    current = config.method.model_dump(mode="json")
    method: dict[str, Any] = {"name": name}
    if name in ("lora", "qlora") and current["name"] in ("lora", "qlora"):
        method.update({key: current[key] for key in LORA_KEYS if key in current})
    return method


def _run_one(config: RunConfig, name: str, folder: Path, metric: str) -> dict[str, Any]:
    import psutil

    folder.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_load(dump_config(config))
    resolved.update(method=_method_config(config, name), name=f"{config.name}-{name}", output_dir=None)
    atomic_write_text(folder / "input.yaml", yaml.safe_dump(resolved, sort_keys=False))
    command = [sys.executable, "-m", "tuneforge.cli", "train", str(folder / "input.yaml"), "--output",
               str(folder / "run")]
    started = time.time()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss + sum(c.memory_info().rss for c in process.children(True)))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.time() - started
    log_text = child.stdout.read() if child.stdout else ""
    atomic_write_text(folder / "train.log", log_text)
    row: dict[str, Any] = {"method": name, "peak_memory_mib": round(peak / 2**20, 1), "wall_seconds": round(seconds, 1)}
    if child.returncode != 0:
        return {**row, "error": (log_text.strip().splitlines() or ["failed"])[-1]}
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    params = json.loads((folder / "run" / "params.json").read_text())
    finetuned = metrics["test"]["finetuned"]
    return {**row, "trainable_params": params["trainable"], "total_params": params["total"],
            metric: finetuned.get(metric), f"{metric}_ci": finetuned.get(f"{metric}_ci"),
            "train_seconds": metrics["training"]["train_seconds"], "run_dir": str(folder / "run")}


def _page(rows: list[dict[str, Any]], metric: str, name: str) -> str:
    import html

    from tuneforge.evaluation.report import CSS

    head = ["method", "trainable params", "peak memory (MiB)", "wall time (s)", f"test {metric} [95% CI]"]
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in _cells(row, metric)) + "</tr>" for row in rows)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>compare-methods: {html.escape(name)}</title>"
            f"<style>{CSS}</style></head><body><h1>Methods compared: {html.escape(name)}</h1>"
            f"<table id='methods'><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{body}</table>"
            f"{_plot(rows, metric)}</body></html>")


def _cells(row: dict[str, Any], metric: str) -> list[str]:
    if "error" in row:
        return [row["method"], "failed", str(row["peak_memory_mib"]), str(row["wall_seconds"]), row["error"]]
    low, high = row[f"{metric}_ci"] or (float("nan"), float("nan"))
    value = f"{row[metric]:.4f} [{low:.4f}, {high:.4f}]" if isinstance(row[metric], (int, float)) else "n/a"
    return [row["method"], f"{row['trainable_params']:,}", f"{row['peak_memory_mib']:.0f}", f"{row['wall_seconds']:.0f}",
            value]


def _plot(rows: list[dict[str, Any]], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuneforge.evaluation.report import _img

    done = [r for r in rows if "error" not in r]
    if not done:
        return "<p>No method finished.</p>"
    names = [r["method"] for r in done]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    panels = [("trainable params", [r["trainable_params"] for r in done], True),
              ("peak memory (MiB)", [r["peak_memory_mib"] for r in done], False),
              ("wall time (s)", [r["wall_seconds"] for r in done], False)]
    for ax, (title, values, log) in zip(axes, panels):
        ax.bar(names, values, color="#4c72b0")
        ax.set(title=title, yscale="log" if log else "linear")
        ax.tick_params(axis="x", rotation=45)
    values = [r[metric] for r in done]
    errors = [[v - r[f"{metric}_ci"][0] for v, r in zip(values, done)], [r[f"{metric}_ci"][1] - v for v, r in zip(values, done)]]
    axes[3].bar(names, values, yerr=errors, capsize=4, color="#55a868")
    axes[3].set(title=f"test {metric} (95% CI)")
    axes[3].tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return _img(fig)


def print_comparison(rows: list[dict[str, Any]], metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Methods compared (same data, split and training settings)")
    for head in ("method", "trainable params", "peak memory MiB", "wall s", f"test {metric} [95% CI]"):
        table.add_column(head, justify="left" if head == "method" else "right")
    for row in rows:
        table.add_row(*_cells(row, metric))
    Console().print(table)
