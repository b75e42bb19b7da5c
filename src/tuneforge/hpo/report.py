"""hpo_report.html: optimization history, parameter importances, the trials table, slice plots."""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path
from typing import Any

from tuneforge.evaluation.report import CSS, _img
from tuneforge.io import atomic_write_text


def trials_table(study: Any) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append({"number": trial.number, "state": trial.state.name, "values": trial.values,
                     "params": trial.params, "steps": trial.user_attrs.get("steps"),
                     "run_dir": trial.user_attrs.get("run_dir"),
                     "worker": trial.user_attrs.get("worker"), "stopped_by": trial.user_attrs.get("stopped_by"),
                     "fail_reason": trial.user_attrs.get("fail_reason")
                     or study.user_attrs.get(f"fail_reason_trial_{trial.number}"),
                     "intermediate": dict(trial.intermediate_values),
                     "retry_of": (trial.system_attrs.get("retry_history") or [None])[-1],  # a trial whose worker was killed
                     "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None})
    return rows


def _figure(figures: dict[str, Any], name: str) -> str:
    value, interval = figures.get(name), figures.get(name + "_ci")
    if value is None:
        return ""
    return f"{value:.4f}" + (f" <span class='ci'>[{interval[0]:.4f}, {interval[1]:.4f}]</span>" if interval else "")


def write_hpo_report(study: Any, study_dir: Path, test_metrics: dict[str, Any] | None,
                     shown: tuple[str, ...] = ("accuracy", "macro_f1")) -> Path:
    """hpo_report.html; ``shown``: the task's test metrics for the best configuration's table."""
    trials = trials_table(study)
    parts = [f"<h1>tuneforge search: {html.escape(study.study_name)}</h1>",
             f"<p>{len(trials)} trials; objectives: "
             f"{html.escape(', '.join(d.name.lower() for d in study.directions))} "
             f"({html.escape(json.dumps(study.user_attrs.get('directions', [])))}). The search read validation "
             f"metrics only; the test split was scored once, for the best configuration.</p>"]
    if test_metrics:
        fine = test_metrics["finetuned"]
        rows = "".join(
            f"<tr><td>{name}</td><td>{_figure(fine, name)}</td>"
            + "".join(f"<td>{_figure(b, name)}</td>" for b in test_metrics["baselines"].values()) + "</tr>"
            for name in shown if fine.get(name) is not None)
        head = "".join(f"<th>baseline: {html.escape(n)}</th>" for n in test_metrics["baselines"])
        parts.append(f"<h2>Best configuration on the test split</h2><table id='test'><tr><th>metric</th>"
                     f"<th>best configuration</th>{head}</tr>{rows}</table>")
    parts += ["<h2>Optimization history, importances and slices</h2>", _plots(study),
              "<h2>Trials</h2>", _table(trials)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge search</title><style>{CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(study_dir / "hpo_report.html", page)


def _table(trials: list[dict[str, Any]]) -> str:
    names = sorted({k for t in trials for k in t["params"]})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for t in trials:
        mark = {"PRUNED": " style='color:#a66'", "FAIL": " style='color:#c00'"}.get(t["state"], "")
        values = ", ".join(f"{v:.4f}" for v in t["values"]) if t["values"] else ""
        cells = "".join(f"<td>{html.escape(str(t['params'].get(n, '')))}</td>" for n in names)
        state = t["state"].lower() + (f" ({t['stopped_by']})" if t.get("stopped_by") else "")
        rows.append(f"<tr{mark}><td>{t['number']}</td><td>{html.escape(state)}</td><td>{values}</td>{cells}"
                    f"<td>{t['steps'] or ''}</td><td>{t['seconds'] or ''}</td>"
                    f"<td>{html.escape(t['fail_reason'] or '')}</td></tr>")
    return (f"<table id='trials'><tr><th>trial</th><th>state</th><th>value(s)</th>{head}<th>steps</th>"
            f"<th>seconds</th><th>failure</th></tr>{''.join(rows)}</table>")


def _plots(study: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return "<p>No completed trial to plot.</p>"
    target = None if len(study.directions) == 1 else (lambda t: t.values[0])
    name = None if target is None else "objective 0"
    images = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for plot in (ovm.plot_optimization_history, ovm.plot_param_importances, ovm.plot_slice):
            try:
                axes = plot(study, target=target, target_name=name or "Objective Value")
            except (ValueError, RuntimeError) as exc:  # e.g. importances need 2+ trials with varied params
                images.append(f"<p class='ci'>{html.escape(plot.__name__)}: {html.escape(str(exc))}</p>")
                continue
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.get_figure()
            figure.set_size_inches(max(6, figure.get_size_inches()[0]), 4)
            figure.tight_layout()
            images.append(_img(figure))
    return f"<div class='grid'>{''.join(images)}</div>"
