"""The run folder: where it is, whether it may be (re)used, and what it holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.errors import UserError

FILES = ("config.yaml", "data_report.json", "params.json", "train_log.jsonl", "metrics.json", "predictions.csv",
         "report.html", "model/")


def choose_run_dir(name: str, output: str | Path | None, resume: bool, root: str | Path = "runs") -> Path:
    """``output`` exactly when given; else ``runs/<name>-<timestamp>``, or with ``resume`` the newest
    unfinished ``runs/<name>-*``."""
    if output is not None:
        run_dir = Path(output)
        _refuse_if_busy(run_dir)  # a run writing there now is neither finished nor interrupted
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


class RunLock:
    """An exclusive lock on a run folder (``.lock``, holding the writer's PID), so two runs never write into one
    folder. The operating system releases it when the holder dies, however it dies: a lock file that still names
    a PID but is free was left by a killed run, and is taken over (``took_over`` says whose it was)."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        import fcntl
        import os

        self.path = Path(run_dir) / self.NAME
        self.handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(self.handle)
            self.handle.close()
            raise busy(run_dir, holder) from None
        previous = _read_pid(self.handle)
        self.took_over = previous if previous and previous != os.getpid() else None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()

    def release(self) -> None:
        """Clear the PID (an empty lock file means the last run ended normally) and let go."""
        if self.handle.closed:
            return
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.close()


def _refuse_if_busy(run_dir: Path) -> None:
    """Stop when another process holds the folder's lock (its content untouched: a killed run's PID stays)."""
    import fcntl
    import os

    path = run_dir / RunLock.NAME
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(handle)
            if holder != os.getpid():  # this process's own lock (taken before it checks the folder again)
                raise busy(run_dir, holder) from None
            return
        fcntl.flock(handle, fcntl.LOCK_UN)


def busy(run_dir: Path, holder: int | None) -> UserError:
    return UserError(f"{run_dir}: another run (PID {holder or 'unknown'}) is writing into this folder; wait for it "
                     f"to end or choose another --output")


def _read_pid(handle: Any) -> int | None:
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else None


SETTLED = ("train.precision", "train.gradient_checkpointing")  # auto in a config, decided when the run started

SAFE_ON_RESUME = ("name", "output_dir", "tracking", "evaluation", "hpo", "train.num_threads",
                  "train.save_total_limit")


def resumed_config(saved: RunConfig, given: RunConfig, source: Path) -> RunConfig:
    """The config a resumed run continues with: the saved one (which holds every ``auto`` as it was decided), with
    the settings that do not touch training (SAFE_ON_RESUME: names, tracking, evaluation, thread count, how many
    checkpoints to keep) taken from ``given``. Any other change is refused: the restored optimizer, schedule and
    data order belong to the saved settings."""
    from tuneforge.config.loader import load_config
    from tuneforge.tracking.base import flatten

    old_tree, new_tree = saved.model_dump(mode="json"), given.model_dump(mode="json")
    old, new = flatten(old_tree), flatten(new_tree)
    changed = [key for key in sorted(old.keys() | new.keys())
               if old.get(key) != new.get(key) and not _safe(key) and not (new.get(key) == "auto" and key in SETTLED)]
    if changed:
        diff = ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise UserError(f"{source}: --resume with a changed config ({diff}{more}); resume with the saved settings, "
                        f"or start a new run (only {', '.join(SAFE_ON_RESUME)} may change)")
    for safe in SAFE_ON_RESUME:
        *parents, leaf = safe.split(".")
        old_node, new_node = old_tree, new_tree
        for part in parents:
            old_node, new_node = old_node[part], new_node[part]
        old_node[leaf] = new_node[leaf]
    return load_config(old_tree)


def _safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in SAFE_ON_RESUME)
