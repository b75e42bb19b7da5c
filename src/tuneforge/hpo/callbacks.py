"""Report each validation score to the Optuna trial and stop the trial when the pruner says so."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class PruningCallback(TrainerCallback):
    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric = trial, metric
        self.evaluations = 0

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        import optuna

        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None:
            return
        self.evaluations += 1
        self.trial.report(float(value), step=self.evaluations)
        if self.trial.should_prune():
            self.trial.set_user_attr("steps", state.global_step)
            raise optuna.TrialPruned(f"pruned after evaluation {self.evaluations} ({self.metric}={value:.4f})")
