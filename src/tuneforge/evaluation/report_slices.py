"""The per-slice and fairness sections of report.html: a chart of the fine-tuned model's figure on every slice with
its interval against the overall figure (flagged slices in red, baselines as markers), the table of every model on
every slice, and the group fairness figures of each sensitive column."""

from __future__ import annotations

import html
from typing import Any

from tuneforge.evaluation.figures import with_interval


def slice_parts(test: dict[str, Any]) -> list[str]:
    """The sections, or nothing when the run has no slices."""
    figures = test.get("slices")
    if not figures:
        return []
    from tuneforge.evaluation.report import _img

    worst = figures["worst"]
    line = "no slice has enough rows to judge" if worst is None else (
        f"worst slice: <b>{html.escape(worst['name'])}</b>, {worst['judged_by']} {worst['gap']:+.4f} from the overall "
        f"figure; " + ("<b class='lose'>flagged</b>: its interval lies wholly below the overall value"
                       if worst["flagged"] else "its interval includes the overall value (not flagged)"))
    parts = ["<h2>Per slice (test split)</h2>",
             f"<p>{line}. Slices with fewer than {figures['min_rows']} rows are shown, never flagged. Slices by "
             f"label are judged by {figures['label_metric']} (the label's recall), the others by "
             f"{figures['metric']}.</p>", _img(_slice_chart(figures)), _slice_table(figures)]
    for column, models in test.get("fairness", {}).items():
        parts += [f"<h2>Group fairness: {html.escape(column)}</h2>", _fairness_table(models)]
    return parts


def _slice_table(figures: dict[str, Any]) -> str:
    models = list(figures["slices"][0]["models"]) if figures["slices"] else []
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    rows = []
    for row in figures["slices"]:
        judged = row["judged_by"]
        cells = "".join(f"<td>{with_interval(f.get(judged), f.get(f'{judged}_ci'))}</td>" for f in row["models"].values())
        mark = " class='lose'" if row["below_overall"] else ""
        rows.append(f"<tr{mark}><td>{html.escape(row['name'])}</td><td>{row['kind']}</td><td>{row['n']}</td>"
                    f"<td>{judged}</td>{cells}<td>{row['gap']:+.4f}</td></tr>")
    return (f"<table id='slices'><tr><th>slice</th><th>by</th><th>rows</th><th>metric</th>{head}"
            f"<th>gap to overall (fine-tuned)</th></tr>{''.join(rows)}</table>")


def _slice_chart(figures: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = figures["slices"]
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(rows) + 1.4))
    for y, row in enumerate(rows):
        judged = row["judged_by"]
        models = list(row["models"].items())
        mine = models[0][1]
        low, high = mine[f"{judged}_ci"]
        colour = "#c62828" if row["below_overall"] else "#1565c0"
        ax.errorbar(mine[judged], y, xerr=[[mine[judged] - low], [high - mine[judged]]], fmt="o", color=colour,
                    capsize=3, label="fine-tuned" if y == 0 else None)
        for number, (name, other) in enumerate(models[1:]):
            ax.plot(other[judged], y, marker="x|+"[number % 3], color="grey", linestyle="none",
                    label=name if y == 0 else None)
        ax.axvline(row["overall"], color="black" if judged == figures["metric"] else "#888", linewidth=0.6,
                   ymin=(y + 0.1) / len(rows), ymax=(y + 0.9) / len(rows))
    ax.set_yticks(range(len(rows)), [f"{r['name']} ({r['n']})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("slice figure (bar: overall fine-tuned figure; red: interval below it)")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def _fairness_table(models: dict[str, Any]) -> str:
    """Differences per model, then each group's rates for the fine-tuned model (the label of its worst
    demographic parity difference)."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{with_interval(f['demographic_parity_difference'], f['demographic_parity_difference_ci'])}"
        f" <span class='ci'>({html.escape(f['demographic_parity_worst_label'])})</span></td>"
        f"<td>{with_interval(f['equalized_odds_difference'], f['equalized_odds_difference_ci'])} "
        f"<span class='ci'>({html.escape(f['equalized_odds_worst_label'])})</span></td></tr>"
        for name, f in models.items())
    mine = next(iter(models.values()))
    label = mine["demographic_parity_worst_label"]
    groups = mine["per_label"][label]["by_group"]
    rates = ("selection_rate", "true_positive_rate", "false_positive_rate", "false_negative_rate")
    group_rows = "".join(
        f"<tr><td>{html.escape(group)}</td><td>{mine['groups'].get(group, '?')}</td>"
        + "".join(f"<td>{with_interval(g[r], g[f'{r}_ci'])}</td>" for r in rates) + "</tr>"
        for group, g in groups.items())
    return (f"<table class='fairness'><tr><th>model</th><th>demographic parity difference (label)</th>"
            f"<th>equalized odds difference (label)</th></tr>{rows}</table>"
            f"<p>Fine-tuned model, label {html.escape(label)!s} one-vs-rest, per group:</p>"
            f"<table class='fairness'><tr><th>group</th><th>rows</th>{''.join(f'<th>{r}</th>' for r in rates)}</tr>"
            f"{group_rows}</table>")
