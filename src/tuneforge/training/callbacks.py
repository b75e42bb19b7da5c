"""Trainer callbacks: the JSONL training log (flushed line by line, so a killed run keeps its history)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tuneforge.io import append_jsonl


class JsonlLogCallback(TrainerCallback):
    """Append every Trainer log (training loss, learning rate, validation metrics) to ``train_log.jsonl``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.start = time.time()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        append_jsonl(self.path, {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                                 "time_s": round(time.time() - self.start, 2), **logs})


class TrackingCallback(TrainerCallback):
    """Send the Trainer's logs (loss, learning rate, validation metrics) to the run's tracker, step by step."""

    def __init__(self, tracker: Any):
        self.tracker = tracker

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            self.tracker.log_metrics({("train_" + k if not k.startswith(("eval_", "train_")) else k): v
                                      for k, v in logs.items()}, step=state.global_step)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class NanGuardCallback(TrainerCallback):
    """Stop at once when the training loss is NaN/inf instead of training on garbage."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        import math

        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise TrainingDiverged(f"training loss became {loss} at step {state.global_step}; lower "
                                   f"train.learning_rate or check the data")
