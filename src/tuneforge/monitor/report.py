"""monitor.html: one self-contained page with every signal over time (the reference's value and each rule's
threshold drawn in), the alerts, and the windows as a table, from the numbers ``monitor check`` computes."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tuneforge.io import atomic_write_text

PANELS = (  # (title, signals drawn together, y label)
    ("Embedding drift: MMD p-value (low = drift)", ("embedding_mmd_p",), "p"),
    ("Embedding drift: MMD", ("embedding_mmd",), "MMD²"),
    ("Domain classifier AUC (0.5 = indistinguishable)", ("domain_auc",), "AUC"),
    ("Input length", ("input_words_mean",), "words"),
    ("Out-of-vocabulary share", ("oov_share",), "share"),
    ("Prediction drift: PSI", ("prediction_psi",), "PSI"),
    ("Prediction drift: chi-square p-value", ("prediction_chi2_p",), "p"),
    ("Confidence", ("confidence_mean",), "mean top probability"),
    ("Accuracy on feedback (95% interval)", ("accuracy",), "accuracy"),
    ("Latency p95", ("latency_ms_p95",), "ms"),
)


def write_report(result: dict[str, Any], output: str | Path) -> Path:
    """The page for one model's check result (``monitor.check``'s return value)."""
    from tuneforge.evaluation.report import CSS

    alerts = result["alerts"]
    rotated = f", {result['rotated_out']} older ones rotated out" if result.get("rotated_out") else ""
    head = (f"<h1>Monitoring: {html.escape(result['model'])}</h1><p>Run {html.escape(result['run'])}; log "
            f"{html.escape(result['log'])}: {result['rows']} requests in {len(result['windows'])} windows "
            f"({result['window']}), {result['labelled']} with feedback"
            f"{rotated}. Reference: the run's validation split ({result['reference']['rows']} texts, validation accuracy "
            f"{result['reference']['accuracy']:.4f}).</p>")
    verdict = (f"<p id='verdict' class='verdict-worse'>{len(alerts)} alert(s)</p>" if alerts else
               "<p id='verdict' class='verdict-better'>No alerts</p>")
    parts = [head, verdict, "<h2>Alerts</h2>", _alerts_table(alerts), "<h2>Signals over time</h2>",
             _plots(result), "<h2>Windows</h2>", _windows_table(result["windows"])]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge monitor: "
            f"{html.escape(result['model'])}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(Path(output), page)


def _alerts_table(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "<p>No rule was broken.</p>"
    rows = "".join(f"<tr><td>{html.escape(a['rule'])}</td><td>{a['window']}</td><td>{a['window_start']}</td>"
                   f"<td>{a['value']:.4g}</td><td>{a['windows_in_a_row']}</td></tr>" for a in alerts)
    return ("<table id='alerts'><tr><th>rule</th><th>window</th><th>from</th><th>value</th><th>windows in a row</th>"
            f"</tr>{rows}</table>")


def _plots(result: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuneforge.evaluation.report import _img

    windows = result["windows"]
    panels = [p for p in PANELS if any(w["signals"].get(s) is not None for w in windows for s in p[1])]
    if not panels:
        return "<p>No window has enough requests yet.</p>"
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(11, 2.9 * rows), squeeze=False)
    for ax, (title, names, unit) in zip(axes.flat, panels):
        _panel(ax, windows, names, result)
        ax.set(title=title, xlabel="window", ylabel=unit)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return _img(fig)


def _panel(ax: Any, windows: list[dict[str, Any]], names: tuple[str, ...], result: dict[str, Any]) -> None:
    for name in names:
        alerted = {a["window"] for a in result["alerts"] if a["signal"] == name}
        points = [(w["window"], w["signals"][name]) for w in windows if w["signals"].get(name) is not None]
        xs, ys = zip(*points)
        ax.plot(xs, ys, "o-", ms=3, label=name)
        spans = [(w["window"], *w["intervals"][name]) for w in windows if name in w.get("intervals", {})]
        if spans:
            ax.fill_between([s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans], alpha=0.2)
        marked = [(x, y) for x, y in points if x in alerted]
        if marked:
            ax.plot(*zip(*marked), "x", color="crimson", ms=8, label="alert")
        baseline = result["reference"]["baseline"].get(name)
        if baseline is not None:
            ax.axhline(baseline, color="grey", ls=":", lw=1, label="reference")
        for rule in result["rules"]:
            if rule["signal"] == name:
                ax.axhline(rule["above"] if rule["above"] is not None else rule["below"], color="crimson", ls="--",
                           lw=1, label=f"rule: {rule['name']}")
    ax.legend(fontsize=7)


def _windows_table(windows: list[dict[str, Any]]) -> str:
    shown = ("embedding_mmd_p", "domain_auc", "input_words_mean", "oov_share", "prediction_psi", "confidence_mean",
             "accuracy")
    head = "".join(f"<th>{name}</th>" for name in shown)
    rows = "".join(f"<tr><td>{w['window']}</td><td>{w['rows']}</td>" + "".join(
        f"<td>{'' if w['signals'].get(n) is None else format(w['signals'][n], '.4g')}</td>" for n in shown) + "</tr>"
        for w in windows)
    return f"<table id='windows'><tr><th>window</th><th>requests</th>{head}</tr>{rows}</table>"
