"""What a person watching a run sees: in a terminal, one live display (steps, epoch, elapsed, ETA, loss, tokens/s,
the last validation metric); elsewhere (CI, a log file), one compact aligned line per log step, numbers as
numbers. Replaces transformers' printed dicts of strings and its training bar."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from transformers import TrainerCallback

SHOWN_METRICS = ("eval_macro_f1", "eval_entity_f1", "eval_f1", "eval_exact_match", "eval_accuracy")


class ProgressDisplay(TrainerCallback):
    def __init__(self, live: bool | None = None, write: Callable[[str], None] | None = None, console: Any = None):
        self.live = sys.stdout.isatty() if live is None else live
        self.console = console  # rich's Console (default: the terminal)
        self.write = write or (lambda line: print(line, flush=True))
        self.progress: Any = None
        self.task: Any = None
        self.started = 0.0
        self.first_step = 0
        self.fields = {"loss": "", "speed": "", "valid": ""}

    # --- the Trainer's events

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.first_step = time.time(), state.global_step
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("epoch {task.fields[epoch]}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[loss]} {task.fields[speed]} {task.fields[valid]}"),
                                     transient=False, console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                               epoch="0.00", **self.fields)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, epoch=f"{state.epoch or 0:.2f}")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.fields["loss"] = f"loss {_num(logs['loss'])}"
            if isinstance(logs.get("tokens_per_s"), (int, float)):
                self.fields["speed"] = f"{logs['tokens_per_s']:,.0f} tok/s"
        metric = next((k for k in SHOWN_METRICS if k in logs), None)
        if "eval_loss" in logs:
            self.fields["valid"] = "val " + (f"{metric[5:]} {_num(logs[metric])}" if metric else
                                             f"loss {_num(logs['eval_loss'])}")
        if self.progress is not None:
            self.progress.update(self.task, **self.fields)
        elif "loss" in logs or "eval_loss" in logs:
            self.write(self.line(state, logs, metric))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
        self.close()

    def close(self) -> None:
        """Give the terminal back (also when training raised: a diverged loss, Ctrl-C)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    # --- the plain line

    def line(self, state: Any, logs: dict[str, Any], metric: str | None) -> str:
        total = state.max_steps or 0
        head = f"step {state.global_step:>{len(str(total))}}/{total} | epoch {state.epoch or 0:5.2f}"
        if "eval_loss" in logs:
            shown = f" | {metric[5:]} {_num(logs[metric])}" if metric else ""
            return f"{head} | validation loss {_num(logs['eval_loss'])}{shown}"
        parts = [head, f"loss {_num(logs['loss'])}"]
        if isinstance(logs.get("learning_rate"), (int, float)):
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if isinstance(logs.get("tokens_per_s"), (int, float)):
            parts.append(f"{logs['tokens_per_s']:>7,.0f} tok/s")
        parts.append(f"ETA {_duration(self.eta(state))}")
        return " | ".join(parts)

    def eta(self, state: Any) -> float:
        done = state.global_step - self.first_step
        left = max(0, (state.max_steps or 0) - state.global_step)
        return (time.time() - self.started) / done * left if done > 0 else float("nan")


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: not measured yet
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
