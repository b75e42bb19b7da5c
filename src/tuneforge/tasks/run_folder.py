"""A trained run's model folder and its ``tuneforge.json`` (task, base model, labels, precision ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError


def read_model_meta(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The model folder of a run (or the folder itself) and its ``tuneforge.json``."""
    model_dir = Path(run_dir)
    if (model_dir / "model").is_dir():
        model_dir = model_dir / "model"
    meta_path = model_dir / "tuneforge.json"
    if not meta_path.exists():
        raise UserError(f"{run_dir}: not a tuneforge run folder (no model/tuneforge.json); give the folder that "
                        f"tuneforge train wrote")
    return model_dir, json.loads(meta_path.read_text())


def task_of(record: dict[str, Any]) -> str:
    """The task a run folder's ``tuneforge.json`` or ``metrics.json`` names; folders written before the task was
    recorded hold a classification run."""
    return str(record.get("task") or LEGACY_TASK)


LEGACY_TASK = "sequence-classification"
