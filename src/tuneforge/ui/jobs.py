"""The commands the UI starts: ``tuneforge train`` / ``tune`` / ``serve`` / ``config validate`` / ``estimate`` as
subprocesses in the workspace, exactly as typed in a terminal (so the page shows the CLI's own lines and errors);
what a running job's log and run folder say (progress with ETA, loss and validation curves); stop and resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.ui.workspace import Workspace, read_jsonl

STOP_GRACE_S = 30  # after Ctrl-C (SIGINT), how long a run may take to stop before it is killed
PROGRESS = re.compile(r"step\s+(\d+)/(\d+)\s*\|\s*epoch\s+([\d.]+)(?:.*?ETA\s+(\S+))?")
RUN_FOLDER = re.compile(r"^run folder: (.+?)(?: \(its previous run.*)?$", re.M)
SKIPPED_EVAL = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def cli(*args: str) -> list[str]:
    """The tuneforge command line, run by this Python (the UI's own environment)."""
    return [sys.executable, "-m", "tuneforge.cli", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "110"}


def run_cli(workspace: Workspace, *args: str, timeout: float = 600) -> tuple[int, str]:
    """A short command (validate, estimate) to its end: exit code and what it printed (an ``error:`` line on
    stderr for bad input, as in a terminal). Library noise on stderr (warnings) is left out."""
    done = subprocess.run(cli(*args), cwd=workspace.root, capture_output=True, text=True, timeout=timeout,
                          env=environment())
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    text = done.stdout.strip() if done.returncode == 0 else "\n".join(errors) or _last_line(done.stderr)
    return done.returncode, text


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed without a message"


@dataclass
class Job:
    id: str
    kind: str  # train, tune, resume, serve
    command: list[str]
    log: Path
    process: subprocess.Popen
    run_dir: Path | None = None
    port: int | None = None
    started: float = field(default_factory=time.time)
    stopping: bool = False

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def status(self) -> str:
        code = self.process.poll()
        if code is None:
            return "stopping" if self.stopping else "running"
        if self.stopping or code in (130, -signal.SIGINT, -signal.SIGKILL):
            return f"stopped (exit {code})"
        return "finished" if code == 0 else f"failed (exit {code})"

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(_readable(text).splitlines()[-lines:])

    def folder(self, workspace: Workspace) -> Path | None:
        """The run (or study) folder: given at launch, else the one the command printed."""
        if self.run_dir is None:
            found = RUN_FOLDER.findall(self.tail(400))
            if found:
                self.run_dir = workspace.inside(found[-1].strip(), "run folder")
        return self.run_dir


def _readable(text: str) -> str:
    """A log as a person reads it: carriage-return redraws collapsed to their last state."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


class Jobs:
    """The jobs this UI started (one registry per UI process); each writes its console to a log file."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        (workspace.state / "jobs").mkdir(parents=True, exist_ok=True)

    def start(self, kind: str, args: list[str], run_dir: Path | None = None, port: int | None = None) -> Job:
        with self.lock:
            job_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.jobs) + 1}"
            log = self.workspace.state / "jobs" / f"{job_id}.log"
            command = cli(*args)
            with open(log, "w", encoding="utf-8") as handle:
                handle.write(f"$ tuneforge {' '.join(args)}\n")
                handle.flush()
                process = subprocess.Popen(command, cwd=self.workspace.root, stdout=handle,
                                           stderr=subprocess.STDOUT, env=environment(), start_new_session=True)
            job = Job(job_id, kind, command, log, process, run_dir, port)
            self.jobs[job_id] = job
            return job

    def get(self, job_id: str | None) -> Job:
        if not job_id or job_id not in self.jobs:
            raise UserError("no job selected (launch a run first, or pick one from the list)")
        return self.jobs[job_id]

    def running_folders(self) -> set[Path]:
        return {job.run_dir.resolve() for job in self.jobs.values() if job.running and job.run_dir}

    def stop(self, job_id: str) -> str:
        """Ctrl-C for the job's process group (a run saves nothing half-written, and resumes from its last
        checkpoint); killed if it has not stopped after STOP_GRACE_S."""
        job = self.get(job_id)
        if not job.running:
            return f"{job.id}: not running ({job.status()})"
        job.stopping = True
        _signal(job.process, signal.SIGINT)
        threading.Thread(target=_kill_later, args=(job.process,), daemon=True).start()
        return f"{job.id}: stopping (Ctrl-C sent)"

    def stop_all(self) -> None:
        for job in self.jobs.values():
            if job.running:
                _signal(job.process, signal.SIGINT if job.kind != "serve" else signal.SIGTERM)
        deadline = time.time() + 10
        for job in self.jobs.values():
            try:
                job.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal(job.process, signal.SIGKILL)


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_later(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL)


def launch_args(command: str, config_file: str, run_dir: str | None, resume: bool = False) -> list[str]:
    """``train CONFIG --output DIR [--resume]`` or ``tune CONFIG --output DIR``."""
    args = [command, config_file]
    if run_dir:
        args += ["--output", run_dir]
    return args + (["--resume"] if resume else [])


def new_run_dir(workspace: Workspace, config: dict[str, Any]) -> Path:
    """Where a new run goes: ``runs/<name>-<timestamp>`` as tuneforge train names it."""
    from tuneforge.pipelines.run_dir import choose_run_dir

    return choose_run_dir(config["name"], None, False, root=workspace.runs)


def study_dir(workspace: Workspace, config: dict[str, Any]) -> Path:
    """Where a search goes: ``runs/hpo/<study>`` as tuneforge tune names it (started again, it continues)."""
    return workspace.runs / "hpo" / str((config.get("hpo") or {}).get("study_name") or config["name"])


def resumable(workspace: Workspace, busy: set[Path]) -> list[str]:
    """Run folders that were stopped with a checkpoint and no result, not running now."""
    return [name for name, folder in workspace.run_folders().items()
            if (folder / "checkpoints").is_dir() and not (folder / "metrics.json").exists()
            and folder.resolve() not in busy]


def progress(log_text: str) -> dict[str, Any]:
    """The last progress line of a run's console: step, total, epoch and ETA."""
    found = PROGRESS.findall(log_text)
    if not found:
        return {}
    step, total, epoch, eta = found[-1]
    return {"step": int(step), "total": int(total), "epoch": float(epoch), "eta": eta or ""}


def progress_line(facts: dict[str, Any], status: str) -> str:
    if not facts:
        return f"{status}: starting (reading the data, loading the model)" if status == "running" else status
    share = facts["step"] / facts["total"] if facts["total"] else 0.0
    eta = f", ETA {facts['eta']}" if facts["eta"] and status == "running" else ""
    return f"{status}: step {facts['step']}/{facts['total']} ({share:.0%}), epoch {facts['epoch']:.2f}{eta}"


def curves(run_dir: Path | None, metric: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Points of the loss curves (training and validation loss) and of the validation metric, from
    ``train_log.jsonl``: rows of step, value and series."""
    if run_dir is None:
        return [], []
    rows = read_jsonl(run_dir / "train_log.jsonl")
    metric = metric or _validation_metric(run_dir, rows)
    loss = [{"step": r["step"], "value": r["loss"], "series": "training loss"} for r in rows
            if _number(r.get("loss"))]
    loss += [{"step": r["step"], "value": r["eval_loss"], "series": "validation loss"} for r in rows
             if _number(r.get("eval_loss"))]
    valid = [{"step": r["step"], "value": r[metric], "series": f"validation {metric.removeprefix('eval_')}"}
             for r in rows if metric and _number(r.get(metric))]
    return loss, valid


def _validation_metric(run_dir: Path, rows: list[dict[str, Any]]) -> str | None:
    """The metric that selects checkpoints (the run's train.early_stopping.metric), else the first one logged."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        chosen = ((saved.get("train") or {}).get("early_stopping") or {}).get("metric")
    except (OSError, yaml.YAMLError, AttributeError):
        chosen = None
    logged = [k for r in rows for k in r if k.startswith("eval_") and k not in SKIPPED_EVAL]
    if chosen and f"eval_{chosen}" in logged:
        return f"eval_{chosen}"
    return logged[0] if logged else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
