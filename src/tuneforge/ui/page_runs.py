"""The Runs page: the tracked runs with headline metrics and intervals, several compared side by side (metrics as
rows, runs as columns, curves overlaid), a run's report.html, and the searches with their trials."""

from __future__ import annotations

from typing import Any

import gradio as gr

from tuneforge.errors import UserError
from tuneforge.ui import runs as data
from tuneforge.ui.shared import Context, file_link, frame, guarded, points


def build(ctx: Context) -> dict[str, Any]:
    with gr.Row():
        refresh = gr.Button("Refresh", elem_id="runs-refresh", scale=1)
        status = gr.Markdown("", elem_id="runs-status")
    table = gr.Dataframe(label="tracked runs (newest first)", interactive=False, elem_id="runs-table", wrap=True)
    with gr.Row():
        chosen = gr.CheckboxGroup(choices=[], label="runs to compare", elem_id="runs-choose", scale=4)
        compare = gr.Button("Compare", variant="primary", elem_id="runs-compare", scale=1)
    compared = gr.Dataframe(label="side by side: metrics (95% intervals) and the settings that differ",
                            interactive=False, visible=False, elem_id="runs-compared", wrap=True)
    with gr.Row():
        loss = gr.LinePlot(None, x="step", y="value", color="series", title="loss", elem_id="runs-loss",
                           height=280, visible=False)
        valid = gr.LinePlot(None, x="step", y="value", color="series", title="validation metric",
                            elem_id="runs-valid", height=280, visible=False)
    with gr.Row():
        report_run = gr.Dropdown(choices=[], label="a run's report", elem_id="runs-report-run", scale=3)
        report_link = gr.HTML("", elem_id="runs-report-link")
    with gr.Row():
        study = gr.Dropdown(choices=[], label="search (study)", elem_id="runs-study", scale=3)
        study_link = gr.HTML("", elem_id="runs-study-link")
    trials = gr.Dataframe(label="trials", interactive=False, visible=False, elem_id="runs-trials", wrap=True)
    listed = [status, table, chosen, report_run, study]
    refreshed = guarded(5)(lambda: _list(ctx))
    refresh.click(refreshed, [], listed)
    compare.click(guarded(4)(lambda names: _compare(ctx, names)), [chosen], [status, compared, loss, valid])
    report_run.input(lambda name: _report(ctx, name, "report.html"), [report_run], [report_link])
    study.input(guarded(3)(lambda name: _study(ctx, name)), [study], [status, trials, study_link])
    return {"refresh": refreshed, "outputs": listed}


def _list(ctx: Context) -> tuple[Any, ...]:
    rows = data.tracked_runs(ctx.workspace)
    headers, table = data.runs_table(rows)
    names = list(dict.fromkeys(r["name"] for r in rows if r["name"]))
    with_report = [n for n in names if data.report_path(ctx.workspace, n)]
    line = f"{len(rows)} runs in {ctx.workspace.relative(ctx.workspace.tracking_dir)}" if rows else \
        "no tracked runs yet: launch one from New run"
    return (line, frame(headers, table), gr.update(choices=names), gr.update(choices=with_report),
            gr.update(choices=data.studies(rows)))


def _compare(ctx: Context, names: list[str]) -> tuple[Any, ...]:
    if len(names or []) < 2:
        raise UserError("runs compare needs at least two runs: tick them above")
    headers, table = data.compare_table(ctx.workspace, names)
    loss, valid = data.overlaid_curves(ctx.workspace, names)
    return (f"comparing {', '.join(names)}", gr.update(value=frame(headers, table), visible=True),
            gr.update(value=points(loss), visible=True), gr.update(value=points(valid), visible=bool(valid)))


def _report(ctx: Context, name: str | None, kind: str) -> str:
    path = data.report_path(ctx.workspace, name, kind) if name else None
    return file_link(path, f"open {name}'s {kind}") if path else ""


def _study(ctx: Context, name: str | None) -> tuple[Any, ...]:
    if not name:
        return "", gr.update(visible=False), ""
    headers, table = data.study_table(ctx.workspace, name)
    return (f"study {name}: {len(table)} trials", gr.update(value=frame(headers, table), visible=True),
            _report(ctx, name, "hpo_report.html"))
