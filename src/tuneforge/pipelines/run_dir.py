"""The run folder: where it is, whether it may be (re)used, and what it holds."""

from __future__ import annotations

import time
from pathlib import Path

from tuneforge.errors import UserError

FILES = ("config.yaml", "data_report.json", "params.json", "train_log.jsonl", "metrics.json", "predictions.csv",
         "report.html", "model/")


def choose_run_dir(name: str, output: str | Path | None, resume: bool, root: str | Path = "runs") -> Path:
    """``output`` exactly when given; else ``runs/<name>-<timestamp>``, or with ``resume`` the newest
    unfinished ``runs/<name>-*``."""
    if output is not None:
        run_dir = Path(output)
        if resume:
            if not (run_dir / "checkpoints").is_dir():
                raise UserError(f"{run_dir}: nothing to resume (no checkpoints/ folder); run without --resume")
        elif (run_dir / "metrics.json").exists():
            raise UserError(f"{run_dir}: holds a finished run; choose another --output")
        elif (run_dir / "checkpoints").is_dir():
            raise UserError(f"{run_dir}: holds an interrupted run; add --resume to continue it or choose "
                            f"another --output")
        return run_dir
    if resume:
        candidates = sorted((p for p in Path(root).glob(f"{name}-*")
                             if (p / "checkpoints").is_dir() and not (p / "metrics.json").exists()),
                            key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise UserError(f"no interrupted run named {name!r} under {root}/ to resume; give --output RUN_DIR")
        return candidates[-1]
    return Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
