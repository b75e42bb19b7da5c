"""continual.html: the accuracy matrix of a continual-learning sequence as a heatmap and a table (each cell with its
bootstrap interval), and the summary figures: average accuracy, backward transfer, forgetting per stage."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tuneforge.io import atomic_write_text


def write_continual_report(result: dict[str, Any], path: Path) -> Path:
    from tuneforge.evaluation.report import CSS

    stages = result["stages"]
    bwt, average = result["backward_transfer"], result["average_accuracy"]
    verdict = ("forgot" if bwt["ci"][1] < 0 else "kept what it learned" if bwt["ci"][0] >= 0 else
               "no change in earlier stages that the interval can tell from none")
    parts = [f"<h1>Continual learning: {len(stages)} stages</h1>",
             f"<p>Replay {result['replay']:g} old rows per new row; EWC strength {result['ewc']:g}. Each cell: accuracy "
             "on a stage's test split after training a stage, with its 95% bootstrap interval.</p>",
             f"<p id='verdict'>Last model: average accuracy {_figure(average)}; backward transfer {_figure(bwt)} "
             f"({verdict}).</p>", "<h2>Accuracy matrix</h2>", _heatmap(result), _table(result),
             "<h2>Forgetting per stage (best earlier accuracy minus the last model's)</h2>",
             "<table><tr><th>stage</th><th>forgetting</th></tr>" + "".join(
                 f"<tr><td>{j}: {html.escape(stages[j])}</td><td>{_figure(f)}</td></tr>"
                 for j, f in enumerate(result["forgetting"])) + "</table>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge continual</title><style>{CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(path, page)


def _figure(figure: dict[str, Any]) -> str:
    return f"{figure['value']:+.4f} [{figure['ci'][0]:+.4f}, {figure['ci'][1]:+.4f}]"


def _table(result: dict[str, Any]) -> str:
    head = "".join(f"<th>test of stage {j}</th>" for j in range(len(result["stages"])))
    rows = "".join(f"<tr><td>after stage {i}</td>" + "".join(
        f"<td>{cell['value']:.4f} <span class='ci'>[{cell['ci'][0]:.4f}, {cell['ci'][1]:.4f}]</span></td>"
        for cell in row) + "</tr>" for i, row in enumerate(result["accuracy_matrix"]))
    return f"<table id='matrix'><tr><th></th>{head}</tr>{rows}</table>"


def _heatmap(result: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tuneforge.evaluation.report import _img

    values = np.array([[cell["value"] for cell in row] for row in result["accuracy_matrix"]])
    count = len(values)
    fig, ax = plt.subplots(figsize=(1.6 * count + 2, 1.3 * count + 1.2))
    ax.imshow(values, cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(count), [f"stage {j}" for j in range(count)])
    ax.set_yticks(range(count), [f"after {i}" for i in range(count)])
    ax.set(xlabel="test split", ylabel="model")
    for (i, j), value in np.ndenumerate(values):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value > 0.6 else "black")
    fig.tight_layout()
    return _img(fig)
