"""What the throughput benchmarks share: each run in a fresh process, a step clock, and tuneforge's trainer kept
for inspection (its speed meter holds the statistics of every batch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def parse_or_work(parser: Any, run_worker: Any) -> Any:
    """Parse the command line; in a child process (``--worker NAME``) run that one run, print its RESULT line and
    return None."""
    import argparse

    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args.worker, args)), flush=True)
        return None
    return args


def run_child(script: Path, name: str, workdir: str, options: dict[str, Any], threads: int) -> dict[str, Any]:
    """``script --worker name`` in a fresh process; its result is the last stdout line starting with RESULT."""
    command = [sys.executable, str(script), "--worker", name, "--workdir", workdir]
    for key, value in options.items():
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    found = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    result = json.loads(found[-1][len("RESULT "):])
    result["process_seconds"] = round(time.time() - started, 1)
    return result


class StepClock:
    """A Trainer callback: the time at the end of every optimizer step; a step during whose interval the Trainer
    evaluated or saved is flagged and left out of the timing."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.ends.append(time.perf_counter())
                if clock.interrupted:
                    clock.flagged.add(len(clock.ends) - 1)
                    clock.interrupted = False

            def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.interrupted = True

            def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                clock.interrupted = True

        self.ends: list[float] = []
        self.flagged: set[int] = set()
        self.interrupted = False
        self.callback = _Callback()

    def intervals(self, warmup: int) -> list[tuple[int, float]]:
        """(step index, seconds) of every timed step: after the warm-up, not interrupted by evaluation."""
        warmup = max(warmup, 1)  # the first step's start is not clocked
        return [(i, self.ends[i] - self.ends[i - 1]) for i in range(warmup, len(self.ends)) if i not in self.flagged]


def finetune_keeping_trainer(config: Any, output: Path, clock: StepClock, **kwargs: Any) -> tuple[Any, Any]:
    """``tuneforge.finetune`` as a user runs it, with the clock; returns the TuneforgeTrainer and the result."""
    import tuneforge.training.trainer as trainer_module
    from tuneforge.pipelines.finetune import finetune

    captured: dict[str, Any] = {}
    original = trainer_module.TuneforgeTrainer.__init__

    def keep(self: Any, *a: Any, **k: Any) -> None:
        original(self, *a, **k)
        captured["trainer"] = self

    trainer_module.TuneforgeTrainer.__init__ = keep
    try:
        result = finetune(config, output=output, callbacks=[clock.callback],
                          log=lambda text: print(text, file=sys.stderr), **kwargs)
    finally:
        trainer_module.TuneforgeTrainer.__init__ = original
    return captured["trainer"], result
