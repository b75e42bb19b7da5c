"""The test split of a finished run, and what a run's validation found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig


def evaluate_saved_run(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """Score a finished run's saved model on the test split (for a search's best trial) the way its task scores
    a run: the task's predictor (in the run's precision), its data step and its test scoring; add the test figures
    to its metrics.json and write its report."""
    import json

    from tuneforge.io import atomic_write_json
    from tuneforge.models.assets import resolve_model
    from tuneforge.pipelines.predict import load_predictor
    from tuneforge.pipelines.report import write_report
    from tuneforge.tasks.registry import task_spec

    task = task_spec(config.model.task)
    predictor = load_predictor(run_dir)
    resolved = resolve_model(config.model.name, config.model.revision)
    prepared = task.call("prepare", config, predictor.tokenizer, resolved)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(task=task.name, **task.call("evaluate", predictor.model, predictor.tokenizer, prepared, config,
                                               run_dir, resolved))
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir)
    return metrics


def best_checkpoint_info(state: Any, metric: str | None = None) -> dict[str, Any]:
    """The best validation metric (``metric``: its name), which checkpoint it came from, and every validation
    metric at that point."""
    evals = [entry for entry in state.log_history if "eval_loss" in entry]
    best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1]) if state.best_model_checkpoint else None
    at_best = next((e for e in evals if e.get("step") == best_step), evals[-1] if evals else {})
    return {"best_metric": state.best_metric, "metric": (metric or "").removeprefix("eval_") or None,
            "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            "evaluations": len(evals),
            "metrics": {k[5:]: v for k, v in at_best.items() if k.startswith("eval_") and isinstance(v, float)
                        and not k.endswith(("_runtime", "_per_second"))}}
