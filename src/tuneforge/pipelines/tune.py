"""``tuneforge tune``: search hyperparameters on validation, then write best.yaml and score the best
configuration on the test split, once."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from tuneforge.config.loader import load_config
from tuneforge.config.schema import RunConfig
from tuneforge.io import atomic_write_json, atomic_write_text


@dataclass
class TuneResult:
    study_dir: Path
    best_params: dict[str, Any]
    best_values: list[float]
    test_metrics: dict[str, Any] | None
    trials: list[dict[str, Any]]
    task: str


def tune(config: RunConfig, output: str | Path | None = None, storage: str | None = None,
         n_trials: int | None = None, workers: int = 1, worker_only: bool = False,
         log: Callable[[str], None] = print) -> TuneResult | None:
    from tuneforge.hpo.study import open_study, run_trials, wait_for_running

    if config.hpo is None:
        from tuneforge.errors import ConfigError

        raise ConfigError("tuneforge tune needs an hpo: section (search space, objectives, algorithm)")
    if n_trials:
        config.hpo.n_trials = n_trials
    study_dir = Path(output or f"runs/hpo/{config.hpo.study_name or config.name}")
    handle = open_study(config, study_dir, storage)
    config_path = study_dir / "study_config.yaml"
    base = config.model_dump(mode="json")
    if config.train._auto_learning_rate:  # each trial's method decides its own rate (lora's would wreck full)
        base["train"]["learning_rate"] = "auto"
    if not worker_only:
        atomic_write_text(config_path, yaml.safe_dump(base, sort_keys=False, allow_unicode=True))
    helpers = [subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "tune", str(config_path), "--storage",
                                 handle.storage_url, "--output", str(study_dir), "--worker-only"])
               for _ in range(max(0, workers - 1))]
    from tuneforge.pipelines.finetune import finetune

    run_trials(config, base, handle, finetune, log)
    for helper in helpers:
        helper.wait()
    if worker_only:
        return None
    waiting = wait_for_running(handle, log=log)
    while waiting:  # trials whose workers were killed meanwhile, queued again: run them here
        run_trials(config, base, handle, finetune, log)
        waiting, before = wait_for_running(handle, log=log), waiting
        if waiting >= before:  # nothing ran (the step budget or the timeout is spent): they stay queued
            break
    return finalize(config, base, handle, log)


def finalize(config: RunConfig, base: dict[str, Any], handle: Any, log: Callable[[str], None]) -> TuneResult:
    import optuna

    from tuneforge.hpo.report import trials_table, write_hpo_report
    from tuneforge.hpo.study import best_config, best_trial

    assert config.hpo is not None
    study = handle.study
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    trials = trials_table(study)
    atomic_write_json(handle.study_dir / "trials.json", trials)
    if not completed:
        write_hpo_report(study, handle.study_dir, None)
        from tuneforge.errors import UserError

        raise UserError(f"study {study.study_name!r}: no trial completed (see {handle.study_dir / 'trials.json'} "
                        f"for each failure's reason)")
    best = best_trial(study)
    retried = {t["retry_of"] for t in trials} - {None}
    primary = config.hpo.objectives[0].metric
    best_yaml = best_config(base, best, primary)
    import yaml

    atomic_write_text(handle.study_dir / "best.yaml", yaml.safe_dump(best_yaml, sort_keys=False))
    log(f"best trial {best.number}: {best.values} with {best.params} -> {handle.study_dir / 'best.yaml'}")
    # the test split, once, for the best configuration
    test_metrics = _test_best(config, best, best_yaml, handle.study_dir, log)
    from tuneforge.tasks.registry import task_spec

    write_hpo_report(study, handle.study_dir, test_metrics, task_spec(config.model.task).shown)
    summary = {"study": study.study_name, "storage": handle.storage_url, "best_trial": best.number,
               "best_params": best.params, "best_values": best.values, "test": test_metrics,
               "trials": {state: sum(t["state"] == state and t["number"] not in retried for t in trials)
                          for state in ("COMPLETE", "PRUNED", "FAIL")},
               "killed_and_retried": len(retried),
               "total_steps": sum(t.get("steps") or 0 for t in trials)}
    atomic_write_json(handle.study_dir / "study.json", summary)
    return TuneResult(handle.study_dir, best.params, list(best.values), test_metrics, trials, config.model.task)


def _test_best(config: RunConfig, best: Any, best_yaml: dict[str, Any], study_dir: Path,
               log: Callable[[str], None]) -> dict[str, Any]:
    from tuneforge.pipelines.evaluate import evaluate_saved_run
    from tuneforge.pipelines.finetune import finetune

    best_config = load_config(best_yaml)
    best_config.tracking = config.tracking
    if config.hpo is not None and config.hpo.retrain_best:
        log("retraining the best configuration from scratch")
        result = finetune(best_config, output=study_dir / "best", log=log)
        return result.metrics["test"]
    run_dir = Path(best.user_attrs["run_dir"])
    return evaluate_saved_run(run_dir, best_config)["test"]
