"""report.html of a multi-task run: per task, the model against its majority class on its own test split (with
intervals), how much of every epoch it took, and a chart of each task's macro-F1 beside its baseline."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tuneforge.io import atomic_write_text


def write_multitask_report(run_dir: Path, name: str, metrics: dict[str, Any]) -> Path:
    from tuneforge.evaluation.report import CSS

    rows = []
    for task, figures in metrics["tasks"].items():
        model, majority, gain = figures["finetuned"], figures["majority"], figures["finetuned_minus_majority"]
        rows.append(f"<tr><td>{html.escape(task)}</td><td>{len(figures['labels'])}</td><td>{figures['weight']:g}</td>"
                    f"<td>{figures['epoch_rows']} ({figures['train_rows']} distinct)</td><td>{figures['test_rows']}</td>"
                    f"<td>{_cell(model, 'accuracy')}</td><td>{_cell(model, 'macro_f1')}</td>"
                    f"<td>{_cell(majority, 'macro_f1')}</td><td>{_cell(gain, 'macro_f1', '+.4f')}</td></tr>")
    table = ("<table id='tasks'><tr><th>task</th><th>labels</th><th>weight</th><th>rows per epoch</th><th>test rows</th>"
             "<th>accuracy</th><th>macro-F1</th><th>majority macro-F1</th><th>model - majority</th></tr>"
             + "".join(rows) + "</table>")
    parts = [f"<h1>Multi-task run: {html.escape(name)}</h1>",
             f"<p>One encoder, a head per task; every epoch mixed by the tasks' weights. Each task scored on its own "
             f"test split; 95% bootstrap intervals. Run time {metrics['seconds']} s.</p>", table, _chart(metrics)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge: {html.escape(name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(run_dir / "report.html", page)


def _cell(figures: dict[str, Any], metric: str, form: str = ".4f") -> str:
    low, high = figures[f"{metric}_ci"]
    return f"{format(figures[metric], form)} <span class='ci'>[{format(low, form)}, {format(high, form)}]</span>"


def _chart(metrics: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tuneforge.evaluation.report import _img

    names = list(metrics["tasks"])
    fig, ax = plt.subplots(figsize=(1.8 * len(names) + 2.5, 3.4))
    for shift, key, colour in ((-0.2, "finetuned", "tab:blue"), (0.2, "majority", "tab:gray")):
        values = np.array([metrics["tasks"][n][key]["macro_f1"] for n in names])
        spans = np.array([metrics["tasks"][n][key]["macro_f1_ci"] for n in names]).T
        ax.bar(np.arange(len(names)) + shift, values, 0.4, color=colour, label="model" if key == "finetuned" else key,
               yerr=[values - spans[0], spans[1] - values], capsize=3)
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="test macro-F1", ylim=(0, 1), title="Each task against its majority class")
    ax.legend()
    fig.tight_layout()
    return _img(fig)
