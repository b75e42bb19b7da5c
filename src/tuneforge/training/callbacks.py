"""Trainer callbacks: the JSONL training log (flushed line by line, so a killed run keeps its history)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tuneforge.errors import UserError
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


class TrainingDiverged(UserError):
    """The training loss, the gradient norm or the validation loss became NaN or infinite: the run stops with one
    line (exit 1: the run failed; the fix is in the config)."""

    exit_code = 1


class NanGuardCallback(TrainerCallback):
    """Stop at once when training produces NaN/inf instead of training on garbage: the logged training loss (the
    Trainer's NaN filter is off, so one bad step shows), the gradient norm (an infinite norm means no update was
    made; under fp16 loss scaling a few are expected, so only ``patience`` in a row count) and the validation
    loss."""

    def __init__(self, fp16: bool = False, patience: int = 5):
        self.patience = patience if fp16 else 1
        self.bad_norms = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        loss = logs.get("loss")
        if _non_finite(loss):
            raise TrainingDiverged(f"training loss became {loss} at step {state.global_step}; lower "
                                   f"train.learning_rate or the method's scale settings, or check the data")
        if "grad_norm" not in logs:  # validation and summary logs carry none
            return
        norm = logs["grad_norm"]
        self.bad_norms = self.bad_norms + 1 if _non_finite(norm) else 0
        if self.bad_norms >= self.patience:
            raise TrainingDiverged(f"gradient norm became {norm} at step {state.global_step}, so no update was "
                                   f"made; lower train.learning_rate or the method's scale settings (alpha, "
                                   f"init_scale)")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        loss = (metrics or {}).get("eval_loss")
        if _non_finite(loss):
            raise TrainingDiverged(f"validation loss became {loss} at step {state.global_step}: the model computes "
                                   f"NaN/inf; lower train.learning_rate or the method's scale settings")


def _non_finite(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not math.isfinite(value)
