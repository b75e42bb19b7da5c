"""Score the fine-tuned model and the baselines on the held-out test split (read once, here)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.prepare import PreparedData
from tuneforge.evaluation.baselines import embed, linear_probe, majority_baseline
from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics, paired_difference
from tuneforge.io import atomic_write_text
from tuneforge.models.assets import ResolvedModel
from tuneforge.training.engine import predict_logits


def evaluate_run(model: Any, tokenizer: Any, data: PreparedData, config: RunConfig, resolved: ResolvedModel,
                 run_dir: Path, state: Any) -> dict[str, Any]:
    texts, y_true = data.texts("test"), np.asarray(data.label_ids("test"))
    max_length = config.data.max_length
    logits = predict_logits(model, tokenizer, texts, max_length, description="test split")
    probabilities = _softmax(logits)
    y_pred = probabilities.argmax(axis=1)
    write_predictions(run_dir / "predictions.csv", data, probabilities)

    ev = config.evaluation
    indices = bootstrap_indices(len(y_true), ev.bootstrap_samples, config.train.seed)
    k = len(data.labels)
    baselines: dict[str, Any] = {}
    baseline_preds: dict[str, np.ndarray] = {}
    if "majority" in ev.baselines:
        baseline_preds["majority"] = majority_baseline(data.label_ids("train"), len(y_true))
    if "linear_probe" in ev.baselines:
        baseline_preds["linear_probe"], probe_info = _linear_probe(data, config, resolved, tokenizer)
    for name, pred in baseline_preds.items():
        baselines[name] = classification_metrics(y_true, pred, data.labels, indices, ev.confidence)
    if "linear_probe" in baselines:
        baselines["linear_probe"]["settings"] = probe_info

    best = best_checkpoint_info(state) if state is not None else None
    return {
        "test": {
            "finetuned": classification_metrics(y_true, y_pred, data.labels, indices, ev.confidence),
            "baselines": baselines,
            "finetuned_minus_baseline": {
                name: paired_difference(y_true, y_pred, pred, k, indices, ev.confidence)
                for name, pred in baseline_preds.items()
            },
            "confidence": ev.confidence,
            "bootstrap_samples": ev.bootstrap_samples,
        },
        **({"validation": best} if best is not None else {}),
    }


def _linear_probe(data: PreparedData, config: RunConfig, resolved: ResolvedModel,
                  tokenizer: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from tuneforge.models.loading import load_encoder

    encoder = load_encoder(resolved, config.model.revision, config.model.trust_remote_code)
    max_length = config.data.max_length
    train_x = embed(encoder, tokenizer, data.texts("train"), max_length, description="probe: train")
    val_texts = data.texts("validation")
    val_x = embed(encoder, tokenizer, val_texts, max_length, description="probe: validation") if val_texts else None
    test_x = embed(encoder, tokenizer, data.texts("test"), max_length, description="probe: test")
    return linear_probe(train_x, data.label_ids("train"), val_x, data.label_ids("validation") or None, test_x,
                        config.train.seed)


def best_checkpoint_info(state: Any) -> dict[str, Any]:
    """The best validation metric, which checkpoint it came from, and every validation metric at that point."""
    evals = [entry for entry in state.log_history if "eval_loss" in entry]
    best_step = int(Path(state.best_model_checkpoint).name.split("-")[-1]) if state.best_model_checkpoint else None
    at_best = next((e for e in evals if e.get("step") == best_step), evals[-1] if evals else {})
    return {"best_metric": state.best_metric,
            "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            "evaluations": len(evals),
            "metrics": {k[5:]: v for k, v in at_best.items() if k.startswith("eval_") and isinstance(v, float)
                        and not k.endswith(("_runtime", "_per_second"))}}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def write_predictions(path: Path, data: PreparedData, probabilities: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["source", "text", "label", "predicted", "correct",
                     *[f"prob_{label}" for label in data.labels]])
    for row, probs in zip(data.splits["test"], probabilities):
        predicted = data.labels[int(probs.argmax())]
        writer.writerow([row.where, row.text, row.label, predicted, predicted == row.label,
                         *[f"{p:.6f}" for p in probs]])
    atomic_write_text(path, buffer.getvalue())


def evaluate_saved_run(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """Score a finished run's saved model on the test split (for a search's best trial) the way its task scores
    a run, add the test figures to its metrics.json and write its report."""
    import json

    from tuneforge.evaluation.report import write_report
    from tuneforge.io import atomic_write_json
    from tuneforge.tasks.registry import task_spec

    task = task_spec(config.model.task)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(task=task.name, **task.call("evaluate_saved", run_dir, config))
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir)
    return metrics


def evaluate_saved_classification(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    from tuneforge.data.prepare import prepare_data
    from tuneforge.models.assets import resolve_model
    from tuneforge.pipelines.predict import load_predictor

    predictor = load_predictor(run_dir)
    data = prepare_data(config.data, config.train.seed)
    resolved = resolve_model(config.model.name, config.model.revision)
    return evaluate_run(predictor.model, predictor.tokenizer, data, config, resolved, run_dir, None)
