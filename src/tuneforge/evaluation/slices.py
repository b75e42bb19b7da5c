"""Per-slice test figures: every model (fine-tuned and baselines) scored on each slice with bootstrap intervals
(the same resamples for every model of a slice), each slice's gap to the fine-tuned model's overall figure, and the
worst slice flagged when its interval lies wholly below the overall value. A task hands a scorer; this module knows
nothing of what a task predicts.

Slices by true label are judged on ``label_metric`` (a classifier's accuracy there is the label's recall; macro
averages over one true class say little)."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from tuneforge.evaluation.metrics import bootstrap_indices

# (model name, the slice's row positions, bootstrap resamples of positions within the slice) -> that model's figures
Scorer = Callable[[str, np.ndarray, np.ndarray], dict[str, Any]]


def slice_figures(slices: list[Any], models: list[str], score: Scorer, overall: dict[str, float], metric: str,
                  label_metric: str, samples: int, confidence: float, seed: int, min_rows: int) -> dict[str, Any]:
    """``slices`` (name, kind, rows) scored for each of ``models``; ``overall``: the fine-tuned model's figures on the
    whole split (the reference of every gap)."""
    table = []
    for number, part in enumerate(slices):
        judged = label_metric if part.kind == "label" else metric
        indices = bootstrap_indices(len(part.rows), samples, seed + number)
        figures = {model: score(model, part.rows, indices) for model in models}
        mine = figures[models[0]]
        low, high = mine[f"{judged}_ci"]
        reference = overall[judged]
        enough = len(part.rows) >= min_rows
        table.append({"name": part.name, "kind": part.kind, "n": int(len(part.rows)), "judged_by": judged,
                      "overall": reference, "gap": round(mine[judged] - reference, 4),
                      "below_overall": bool(enough and high < reference),
                      "above_overall": bool(enough and low > reference), "models": figures})
    judged_slices = [row for row in table if row["n"] >= min_rows]
    worst = min(judged_slices, key=lambda row: row["gap"], default=None)
    return {"metric": metric, "label_metric": label_metric, "min_rows": min_rows, "confidence": confidence,
            "bootstrap_samples": samples, "slices": table,
            "worst": None if worst is None else {"name": worst["name"], "gap": worst["gap"],
                                                 "judged_by": worst["judged_by"], "flagged": worst["below_overall"]},
            "flagged": [row["name"] for row in table if row["below_overall"]]}


def warnings(figures: dict[str, Any]) -> list[str]:
    """One line per flagged slice: a weak spot the overall figure hides."""
    return [f"slice {row['name']!r} ({row['n']} test rows): {row['judged_by']} {_value(row):.4f}, {-row['gap']:.4f} "
            f"below the overall {row['overall']:.4f}; its interval excludes the overall figure"
            for row in figures["slices"] if row["below_overall"]]


def _value(row: dict[str, Any]) -> float:
    """The fine-tuned model's figure on a slice (the first model of its table)."""
    return next(iter(row["models"].values()))[row["judged_by"]]


def tracked(test: dict[str, Any]) -> dict[str, float]:
    """The fine-tuned model's figure on each slice, and the worst slice's gap, for the tracker (names the tracker
    accepts: letters, digits, _ - . / and spaces)."""
    figures = test.get("slices")
    if not figures:
        return {}
    out = {}
    for row in figures["slices"]:
        name = re.sub(r"[^A-Za-z0-9_.\- ]", "_", row["name"])
        out[f"slice/{name}/{row['judged_by']}"] = _value(row)
    if figures["worst"] is not None:
        out["slice_worst_gap"] = figures["worst"]["gap"]
    return out
