"""Report each validation score to the Optuna trial and stop the trial when the pruner says so."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class PruningCallback(TrainerCallback):
    """Every validation score becomes an intermediate value (step = evaluation number, so trials with the same
    schedule line up). The pruner is asked only once the trial has run ``prune_after`` of its training steps
    and been validated at least twice (a slow starter is not judged on its first scores), and no more after
    ``prune_until`` of them (a late stop saves little and a noisy score would cost a nearly finished run). With
    ``step_budget`` (what is left of the study's hpo.max_steps) the trial stops, pruned, when it has run that
    many steps."""

    def __init__(self, trial: Any, metric: str, prune: bool = True, prune_after: float = 0.25,
                 step_budget: int | None = None, report: bool = True, prune_until: float = 1.0):
        self.trial, self.metric, self.prune, self.prune_after = trial, metric, prune, prune_after
        self.prune_until = prune_until
        self.step_budget, self.report = step_budget, report  # multi-objective trials take no intermediate values
        self.evaluations = 0
        self.steps = 0  # optimizer steps run so far (what a trial that fails midway spent)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a trial resumed from its checkpoint (its worker was killed) counts on from the evaluations it had
        self.evaluations = sum(f"eval_{self.metric}" in entry for entry in state.log_history)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import optuna

        self.steps = state.global_step
        if self.step_budget is not None and state.global_step >= self.step_budget < state.max_steps:
            self.trial.set_user_attr("steps", state.global_step)
            self.trial.set_user_attr("stopped_by", "step budget")
            raise optuna.TrialPruned(f"the study's step budget ran out after {state.global_step} steps")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        import optuna

        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None or not self.report:
            return
        self.evaluations += 1
        if self.evaluations not in self.trial.storage.get_trial(self.trial._trial_id).intermediate_values:
            self.trial.report(float(value), step=self.evaluations)  # (a retried trial inherits the values it had)
        if not self.prune or not self.may_judge(state.global_step, state.max_steps):
            return
        if self.trial.should_prune():
            self.trial.set_user_attr("steps", state.global_step)
            raise optuna.TrialPruned(f"pruned after evaluation {self.evaluations} ({self.metric}={value:.4f})")

    def may_judge(self, step: int, max_steps: int) -> bool:
        return self.evaluations >= 2 and self.prune_after * max_steps <= step <= self.prune_until * max_steps
