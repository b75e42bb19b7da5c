"""The Launch-and-watch page: the run started from New run (or any job of this UI), its live console, progress
with ETA, loss and validation curves growing from ``train_log.jsonl``; stop (Ctrl-C, as in a terminal) and
resume a stopped run from its last checkpoint."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from tuneforge.ui.jobs import curves, launch_args, progress, progress_line, resumable
from tuneforge.ui.shared import Context, file_link, guarded, points
from tuneforge.ui.workspace import read_json

TICK_S = 2.0


def build(ctx: Context) -> dict[str, Any]:
    """The page; returns the components New run drives (the job list, the timer)."""
    timer = gr.Timer(TICK_S, active=False)
    with gr.Row():
        jobs = gr.Dropdown(choices=list(ctx.jobs.jobs), value=None, label="job", elem_id="watch-job", scale=3)
        stop = gr.Button("Stop", variant="stop", elem_id="watch-stop", scale=1)
        runs = gr.Dropdown(choices=resumable(ctx.workspace, ctx.jobs.running_folders()), value=None,
                           label="stopped run", info="a run stopped with a checkpoint", elem_id="watch-resumable",
                           scale=3)
        resume = gr.Button("Resume", elem_id="watch-resume", scale=1)
    status = gr.Markdown("", elem_id="watch-status")
    bar = gr.HTML("", elem_id="watch-progress")
    count = gr.Markdown("", elem_id="watch-points")
    with gr.Row():
        loss = gr.LinePlot(None, x="step", y="value", color="series", title="loss", elem_id="watch-loss",
                           height=280)
        valid = gr.LinePlot(None, x="step", y="value", color="series", title="validation metric",
                            elem_id="watch-valid", height=280)
    result = gr.HTML("", elem_id="watch-result")
    log = gr.Textbox(label="console", lines=14, max_lines=14, autoscroll=True, interactive=False,
                     elem_id="watch-log")
    seen = gr.State({})  # what this browser shows already: a tick sends only what changed (plots redraw slowly)
    shown = [bar, count, loss, valid, log, result, timer, runs, seen]
    timer.tick(lambda job_id, last: _tick(ctx, job_id, last), [jobs, seen], shown, show_progress="hidden")
    jobs.input(lambda job_id: _tick(ctx, job_id, {}), [jobs], shown)
    stop.click(guarded(2)(lambda job_id: (ctx.jobs.stop(job_id), gr.Timer(active=True))), [jobs], [status, timer])
    resume.click(guarded(4)(lambda name: _resume(ctx, name)), [runs], [status, jobs, timer, runs])
    return {"jobs": jobs, "timer": timer}


def _tick(ctx: Context, job_id: str | None, last: dict[str, Any]) -> tuple[Any, ...]:
    """What the page shows of a job, read afresh (only what changed since ``last`` is sent); the timer stops once
    the job has ended."""
    if not job_id or job_id not in ctx.jobs.jobs:
        return ("", "", gr.skip(), gr.skip(), "", "", gr.Timer(active=False), gr.skip(), {})
    job = ctx.jobs.jobs[job_id]
    text, status, running = job.tail(400), job.status(), job.running
    facts = progress(text)
    folder = job.folder(ctx.workspace)
    loss, valid = curves(_log_folder(folder))
    share = facts["step"] / facts["total"] if facts.get("total") else 0.0
    values = {
        "bar": f'<div class="tf-progress"><progress max="1" value="{share:.3f}"></progress> '
               f'<span id="watch-progress-text">{html.escape(progress_line(facts, status))}</span></div>',
        "count": f"curve points: {sum(p['series'] == 'training loss' for p in loss)} training loss, "
                 f"{sum(p['series'] == 'validation loss' for p in loss)} validation loss, {len(valid)} validation "
                 f"metric",
        "loss": (job_id, len(loss)), "valid": (job_id, len(valid)),
        "log": "\n".join(text.splitlines()[-60:]), "result": _result(folder, status)}
    sent = {"loss": points(loss), "valid": points(valid)}

    def changed(key: str) -> Any:
        return gr.skip() if last.get(key) == values[key] else sent.get(key, values[key])

    return (*(changed(k) for k in ("bar", "count", "loss", "valid", "log", "result")),
            gr.Timer(active=running) if not last or not running else gr.skip(),  # a job just picked: tick if it runs
            gr.skip() if running else gr.update(choices=resumable(ctx.workspace, ctx.jobs.running_folders())),
            values)


def _log_folder(folder: Path | None) -> Path | None:
    """A run's folder, or a search's newest trial (whose curves are being drawn)."""
    if folder is None or (folder / "train_log.jsonl").exists():
        return folder
    trials = sorted(folder.glob("*/train_log.jsonl"), key=lambda p: p.stat().st_mtime)
    return trials[-1].parent if trials else folder


def _result(folder: Path | None, status: str) -> str:
    """When the run has finished: its verdict and a link to report.html (a search: its hpo_report.html)."""
    if folder is None or status in ("running", "stopping"):
        return ""
    for name in ("report.html", "hpo_report.html"):
        if (folder / name).exists():
            verdict = (read_json(folder / "metrics.json").get("verdict") or {}).get("line", "")
            line = f"<b>{html.escape(status)}</b>" + (f": {html.escape(verdict)}" if verdict else "")
            return f"{line} &nbsp; {file_link(folder / name, 'open ' + name)}"
    return ""


def _resume(ctx: Context, name: str | None) -> tuple[Any, ...]:
    from tuneforge.errors import UserError

    if not name:
        raise UserError("pick a stopped run to resume")
    folder = ctx.workspace.run_folder(name)
    relative = ctx.workspace.relative(folder)
    job = ctx.jobs.start("resume", launch_args("train", f"{relative}/config.yaml", relative, resume=True),
                         run_dir=folder)
    return (f"resuming {name} as {job.id}", gr.update(choices=list(ctx.jobs.jobs), value=job.id),
            gr.Timer(active=True), gr.update(value=None))
