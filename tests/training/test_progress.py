"""The training display: a live bar with an ETA in a terminal, one aligned line per log step elsewhere."""

from __future__ import annotations

import io
from types import SimpleNamespace

from tuneforge.training.progress import ProgressDisplay


def state(step, epoch, max_steps=300):
    return SimpleNamespace(global_step=step, epoch=epoch, max_steps=max_steps)


def test_plain_lines_are_aligned_numbers_with_an_eta():
    lines: list[str] = []
    display = ProgressDisplay(live=False, write=lines.append)
    display.on_train_begin(None, state(0, 0.0), None)
    display.started -= 10  # 10 s for the first 20 of 300 steps
    display.on_log(None, state(20, 0.67), None, logs={"loss": 1.09304, "learning_rate": 2e-4, "tokens_per_s": 5915.2,
                                                       "grad_norm": 0.34, "epoch": 0.67})
    display.on_log(None, state(30, 1.0), None, logs={"eval_loss": 1.1012, "eval_macro_f1": 0.16667, "epoch": 1.0})
    assert lines[0] == "step  20/300 | epoch  0.67 | loss 1.0930 | lr 2.00e-04 |   5,915 tok/s | ETA 2m20s"
    assert lines[1] == "step  30/300 | epoch  1.00 | validation loss 1.1012 | macro_f1 0.1667"


def test_live_display_shows_steps_eta_loss_speed_and_validation():
    from rich.console import Console

    buffer = io.StringIO()
    display = ProgressDisplay(live=True, console=Console(file=buffer, force_terminal=True, width=160))
    display.on_train_begin(None, state(0, 0.0), None)
    for step in range(1, 41):
        display.on_step_end(None, state(step, step / 30), None)
    display.on_log(None, state(40, 1.33), None, logs={"loss": 0.5, "tokens_per_s": 1234.0})
    display.on_log(None, state(40, 1.33), None, logs={"eval_loss": 0.4, "eval_macro_f1": 0.875})
    display.on_train_end(None, state(40, 1.33), None)
    shown = buffer.getvalue()
    for piece in ("training", "40/300", "ETA", "loss 0.5000", "1,234 tok/s", "val macro_f1 0.8750"):
        assert piece in shown, piece
