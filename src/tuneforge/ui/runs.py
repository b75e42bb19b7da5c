"""The Runs page's tables, from the tracking store as ``tuneforge runs list | compare`` read it: the runs with
their headline metrics and intervals, several side by side (metrics as rows, runs as columns), their curves
overlaid, and the searches (studies) with their trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.ui.jobs import curves
from tuneforge.ui.workspace import Workspace


def _tracking(workspace: Workspace) -> Any:
    from tuneforge.config.schema import TrackingConfig

    return TrackingConfig(dir=str(workspace.tracking_dir))


def _figure(row: dict[str, Any], metric: str) -> str:
    from tuneforge.evaluation.figures import with_interval

    return with_interval(row["metrics"].get(metric), row.get("intervals", {}).get(metric), missing="", plain=".4g")


def _label(metric: str) -> str:
    from tuneforge.summary import SHORT

    return SHORT.get(metric, metric.removeprefix("test_"))


def tracked_runs(workspace: Workspace, study: str | None = None) -> list[dict[str, Any]]:
    """Runs of the workspace's store, newest first (``tuneforge runs list``); none when nothing was tracked yet."""
    if not (workspace.tracking_dir / "mlflow.db").exists():
        return []
    from tuneforge.tracking import query

    return query.list_runs(_tracking(workspace), study=study, limit=500)


def runs_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: run, status, started, study/trial, and each headline metric some run has, with its
    interval when the run folder is here."""
    from tuneforge.tracking.query import headline_columns

    metrics = [m for m in headline_columns() if any(m in r["metrics"] for r in rows)]
    searches = any(r["study"] for r in rows)  # study and trial columns only when some run is a trial
    headers = ["run", "status", "started", *(["study", "trial"] if searches else []), *(_label(m) for m in metrics)]
    table = [[r["name"] or r["run_id"][:8], r["status"], r["started"],
              *([r["study"] or "", r["trial"] or ""] if searches else []), *(_figure(r, m) for m in metrics)]
             for r in rows]
    return headers, table


def compare_table(workspace: Workspace, names: list[str]) -> tuple[list[str], list[list[str]]]:
    """``tuneforge runs compare``: a column per run, a row per metric (with its interval) and per parameter that
    differs between them."""
    from tuneforge.tracking import query

    rows = query.compare(_tracking(workspace), names)
    metrics = [m for m in query.headline_columns() if any(m in r["metrics"] for r in rows)]
    metrics += sorted({k for r in rows for k in r["metrics"] if k.startswith("eval_")})[:4]
    headers = ["", *((r["name"] or r["run_id"][:8]) + (f" (trial {r['trial']})" if r["trial"] else "")
                     for r in rows)]
    table = [["status", *(r["status"] for r in rows)]]
    table += [[_label(m), *(_figure(r, m) for r in rows)] for m in metrics]
    table += [[p, *(str(r["params"].get(p, "")) for r in rows)] for p in query.differing_params(rows)]
    return headers, table


def overlaid_curves(workspace: Workspace, names: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each run's loss and validation-metric curves, series named by run."""
    folders = workspace.run_folders()
    loss: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for name in names:
        run_loss, run_valid = curves(folders.get(name))
        loss += [{**p, "series": f"{name}: {p['series']}"} for p in run_loss]
        valid += [{**p, "series": f"{name}: {p['series']}"} for p in run_valid]
    return loss, valid


def studies(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["study"] for r in rows if r["study"]})


def study_table(workspace: Workspace, study: str) -> tuple[list[str], list[list[str]]]:
    """Every trial of a search side by side (``tuneforge runs compare --study``): trial, status, the objective's
    validation figure and the parameters the search varied."""
    from tuneforge.tracking import query

    rows = query.compare(_tracking(workspace), [], study=study)
    varied = query.differing_params(rows)
    validation = sorted({k for r in rows for k in r["metrics"] if k in ("validation_best",) or
                         k.startswith("eval_") and not k.endswith(("runtime", "per_second"))})[:3]
    headers = ["trial", "run", "status", *(_label(m) for m in validation), *varied]
    table = [[r["trial"] or "", r["name"] or "", r["status"], *(_figure(r, m) for m in validation),
              *(str(r["params"].get(p, "")) for p in varied)] for r in rows]
    return headers, table


def report_path(workspace: Workspace, name: str, kind: str = "report.html") -> Path | None:
    """A run's report.html, or a study's hpo_report.html (its folder's study.json names it), in the workspace."""
    from tuneforge.ui.workspace import read_json

    if kind == "hpo_report.html":
        folders = [p.parent for p in (workspace.runs / "hpo").glob("*/study.json")
                   if read_json(p).get("study") == name]
    else:
        folders = [f for f in [workspace.run_folders().get(name)] if f is not None]
    found = [f / kind for f in folders if (f / kind).exists()]
    return found[0] if found else None
