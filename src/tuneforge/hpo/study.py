"""A study: Optuna trials, each the same pipeline as ``train`` without the test split; then best.yaml and one
test evaluation of the best configuration."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.config.loader import deep_merge, load_config, nest
from tuneforge.config.schema import HpoConfig, RunConfig
from tuneforge.errors import ConfigError, UserError
from tuneforge.hpo.space import first_values, make_pruner, make_sampler, suggest

COSTS = ("trainable_params", "train_seconds")


@dataclass
class StudyHandle:
    study: Any
    storage_url: str
    study_dir: Path


def open_study(config: RunConfig, study_dir: Path, storage: str | None = None) -> StudyHandle:
    import optuna

    hpo = _hpo(config)
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or hpo.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"

    def connect() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(
                url, heartbeat_interval=hpo.heartbeat_seconds, grace_period=2 * hpo.heartbeat_seconds,
                heartbeat_stale_trial_callback=_retry_stale, engine_kwargs={"pool_pre_ping": True})
        return optuna.create_study(
            study_name=hpo.study_name or config.name, storage=rdb, load_if_exists=True, sampler=make_sampler(hpo),
            pruner=make_pruner(hpo), directions=[o.direction for o in hpo.objectives])

    return StudyHandle(study=_racing_other_workers(connect), storage_url=url, study_dir=study_dir)


def _racing_other_workers(connect: Any, attempts: int = 5) -> Any:
    """Workers on several machines started at once against an empty database each create Optuna's tables (and
    PostgreSQL's enum types): all but one fail with a duplicate. Connecting again finds them made."""
    import time

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            return connect()
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


STALE = "its worker stopped (killed or interrupted)"
MAX_RETRIES = 2  # a trial that kills its worker every time (out of memory, say) is not retried for ever


def _retry_stale(study: Any, trial: Any) -> None:
    """A trial whose worker was killed fails, and a new trial with its parameters is queued: it resumes from the
    killed trial's last checkpoint, so the study ends as it would have without the kill. A finished trial takes
    no more attributes: the reason is kept on the study."""
    import optuna

    study.set_user_attr(f"fail_reason_trial_{trial.number}", STALE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRIES, inherit_intermediate_values=True)(study, trial)


def fail_dead_workers(study: Any) -> None:
    """Trials left running by a worker of this machine that no longer exists fail now (and are retried), rather
    than after the heartbeat's grace period: what a study resumed at once after a kill needs."""
    import optuna

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
                _retry_stale(study, study._storage.get_trial(trial._trial_id))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def finished_trials(study: Any) -> list[Any]:
    """Trials that count toward n_trials: finished ones, except those whose killed worker got them retried."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", ())}
    return [t for t in trials if t.state in finished and t.number not in retried]


def _stop_at(n_trials: int) -> Callable[[Any, Any], None]:
    def check(study: Any, trial: Any) -> None:
        if len(finished_trials(study)) >= n_trials:
            study.stop()

    return check


def _hpo(config: RunConfig) -> HpoConfig:
    if config.hpo is None:
        raise ConfigError("tuneforge tune needs an hpo: section (search space, objectives, algorithm)")
    return config.hpo


def run_trials(config: RunConfig, base: dict[str, Any], handle: StudyHandle, run: Callable[..., Any],
               log: Callable[[str], None] = print) -> None:
    """Run trials until the study holds n_trials finished ones (shared across workers) or the timeout. ``run`` is
    the training recipe (``finetune``): a trial is one run of it without the test split."""
    import optuna

    hpo = _hpo(config)
    load_config(base, nest(first_values(hpo.space)))  # a wrong path in the space fails here, not in every trial
    study = handle.study
    study.set_user_attr("directions", [o.direction for o in hpo.objectives])
    fail_dead_workers(study)
    done = len(finished_trials(study))
    if done >= hpo.n_trials:
        log(f"study {study.study_name!r} already has {done} finished trials")
        return
    if hpo.max_steps is not None and spent_steps(study) >= hpo.max_steps:
        log(f"study {study.study_name!r} has spent its budget of {hpo.max_steps} training steps")
        return
    budget = f", within {hpo.max_steps} training steps" if hpo.max_steps else ""
    log(f"study {study.study_name!r}: {done} finished trials, aiming for {hpo.n_trials}{budget} ({hpo.algorithm}, "
        f"pruner {hpo.pruner}) in {handle.storage_url}")
    objective = _objective(config, base, handle.study_dir, run)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    callbacks = [_stop_at(hpo.n_trials), _progress(log)]
    if hpo.max_steps is not None:
        callbacks.append(_stop_when_spent(hpo.max_steps))
    quiet_clean_failures()
    study.optimize(objective, timeout=hpo.timeout, catch=(Exception,), callbacks=callbacks)


class _OneLineForUserErrors(logging.Filter):
    """A trial that stops with a UserError (a bad combination, a diverged loss) is one warning line, not a
    traceback: the reason is recorded with the trial. Unexpected errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
        return True


def quiet_clean_failures() -> None:
    logger = logging.getLogger("optuna.study._optimize")  # where optuna reports a failed trial
    if not any(isinstance(f, _OneLineForUserErrors) for f in logger.filters):
        logger.addFilter(_OneLineForUserErrors())


def spent_steps(study: Any) -> int:
    """Training steps the study's finished trials ran (pruned and failed ones up to where they stopped)."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(int(t.user_attrs.get("steps") or 0) for t in study.get_trials(deepcopy=False, states=finished))


def _stop_when_spent(max_steps: int) -> Callable[[Any, Any], None]:
    def check(study: Any, trial: Any) -> None:
        if spent_steps(study) >= max_steps:
            study.stop()

    return check


def _objective(config: RunConfig, base: dict[str, Any], study_dir: Path,
               finetune: Callable[..., Any]) -> Callable[[Any], Any]:
    from tuneforge.hpo.callbacks import PruningCallback

    hpo = _hpo(config)
    primary = hpo.objectives[0].metric
    single = len(hpo.objectives) == 1  # multi-objective trials take no intermediate values

    def objective(trial: Any) -> Any:
        import optuna

        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = suggest(trial, hpo.space)
        same = _finished_twin(trial)
        if same is not None:  # the sampler proposed a finished configuration again: reuse it, train nothing
            trial.set_user_attr("duplicate_of", same.number)
            trial.set_user_attr("steps", 0)
            if same.state == optuna.trial.TrialState.PRUNED:  # the same run would be pruned at the same point
                for step, value in same.intermediate_values.items():
                    trial.report(value, step)
                raise optuna.TrialPruned(f"the same configuration as pruned trial {same.number}")
            return same.values[0] if len(same.values) == 1 else same.values
        # a retried trial (its worker was killed) resumes from the checkpoint of the trial it retries
        retried = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
        folder = study_dir / f"trial-{trial.number if retried is None else retried:04d}"  # (checkpoints only if so)
        left = None if hpo.max_steps is None else max(1, hpo.max_steps - spent_steps(trial.study))
        pruning = PruningCallback(trial, primary, hpo.pruner != "none" and single, hpo.prune_after, left,
                                  report=single, prune_until=hpo.prune_until)
        try:
            trial_config = trial_config_for(base, values, primary)
            trial_config.tracking = config.tracking
            result = finetune(
                trial_config, output=folder, resume=(folder / "checkpoints").is_dir(), log=lambda _: None, evaluate_test=False,
                callbacks=[pruning], quiet=True,
                tags={"tuneforge.study": trial.study.study_name, "tuneforge.trial": str(trial.number)})
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            trial.set_user_attr("steps", pruning.steps)  # the steps it ran before failing count toward max_steps
            raise
        trial.set_user_attr("steps", result.metrics["training"]["global_steps"])
        trial.set_user_attr("run_dir", str(result.run_dir))
        if result.tracking_run_id:
            trial.set_user_attr("tracking_run_id", result.tracking_run_id)
        scores = [objective_value(result.metrics, o.metric) for o in hpo.objectives]
        return scores[0] if len(scores) == 1 else scores

    return objective


def _finished_twin(trial: Any) -> Any:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for other in trial.study.get_trials(deepcopy=False, states=states):
        if other.params == trial.params and "duplicate_of" not in other.user_attrs \
                and "stopped_by" not in other.user_attrs:  # one cut by the step budget was not judged
            return other
    return None


def trial_config_for(base: dict[str, Any], values: dict[str, Any], primary: str) -> RunConfig:
    """The run config of one trial: the base config with the sampled values (a new method starts clean)."""
    overrides = nest(values)
    data = deep_merge(base, overrides)
    if "method" in overrides and "name" in overrides["method"]:
        data["method"] = overrides["method"]
    data.pop("hpo", None)
    config = load_config(data)
    if config.train.early_stopping is not None:
        config.train.early_stopping.metric = primary  # select checkpoints by what the search optimizes
    return config


def objective_value(metrics: dict[str, Any], metric: str) -> float:
    if metric == "trainable_params":
        return float(metrics["training"]["params_trainable"])
    if metric == "train_seconds":
        return float(metrics["training"]["train_seconds"])
    return float(metrics["validation"]["metrics"][metric])


def _progress(log: Callable[[str], None]) -> Callable[[Any, Any], None]:
    def report(study: Any, trial: Any) -> None:
        value = trial.values if trial.values is None or len(trial.values) > 1 else trial.values[0]
        reason = trial.user_attrs.get("fail_reason", "")
        log(f"trial {trial.number}: {trial.state.name.lower()} {value if value is not None else ''} "
            f"{trial.params} {reason}".rstrip())

    return report


def wait_for_running(handle: StudyHandle, poll_seconds: float = 2.0, log: Callable[[str], None] = print) -> int:
    """Before the final evaluation, let trials that other workers are running finish (or go stale). Returns how
    many trials wait to be run again (their workers were killed)."""
    import optuna

    study = handle.study
    grace = 2 * study._storage.get_heartbeat_interval()
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        fail_dead_workers(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        now = datetime.datetime.now()
        for trial in running:
            # a worker killed between creating a trial and its first heartbeat leaves a trial that optuna never
            # sees as stale: give it a heartbeat, so that it goes stale after the grace period unless it is alive
            if trial.datetime_start and (now - trial.datetime_start).total_seconds() > grace:
                study._storage.record_heartbeat(trial._trial_id)
        log(f"waiting for {len(running)} running trial(s) of other workers")
        time.sleep(poll_seconds)


def best_trial(study: Any) -> Any:
    """Single objective: the best trial. Several: the Pareto-optimal trial best on the first objective."""
    if len(study.directions) == 1:
        return study.best_trial
    sign = 1 if study.directions[0].name == "MAXIMIZE" else -1
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def best_config(base: dict[str, Any], trial: Any, primary: str) -> dict[str, Any]:
    config = trial_config_for(base, trial.params, primary)
    config.name = f"{config.name}-best"
    return config.model_dump(mode="json", exclude={"hpo", "output_dir"})
