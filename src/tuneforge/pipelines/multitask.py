"""``tuneforge multitask``: several classification datasets trained together on one encoder, a head each, every
epoch mixed by the tasks' sampling weights, through the same engine (our Trainer, callbacks, early stopping,
progress). Each task is then scored on its own test split against its majority baseline, with intervals."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from tuneforge.config.schema import RunConfig
from tuneforge.errors import ConfigError
from tuneforge.io import atomic_write_json, atomic_write_text

METHODS = ("full", "freeze", "lora")
# what a method reads of the task it is applied for: a bare encoder, the heads live outside it
ENCODER_FACTS = SimpleNamespace(name="multitask", peft_task_type="FEATURE_EXTRACTION", head_modules=(),
                                per_token_head=False, vocabulary_head=False)


def multitask(config: RunConfig, output: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    from tuneforge.config.loader import dump_config
    from tuneforge.models.assets import resolve_model
    from tuneforge.models.loading import load_encoder, load_tokenizer, quiet_libraries
    from tuneforge.pipelines.run_dir import RunLock, choose_run_dir

    quiet_libraries()
    if config.multitask is None:
        raise ConfigError("multitask: the config has no multitask section (multitask.tasks: a name and data each)")
    if config.method.name not in METHODS:
        raise ConfigError(f"method: {config.method.name} does not apply to multitask yet ({', '.join(METHODS)})")
    started = time.time()
    resolved = resolve_model(config.model.name, config.model.revision)
    tokenizer = load_tokenizer(resolved, config.model.revision)
    tasks = [_prepare(config, task, index) for index, task in enumerate(config.multitask.tasks)]
    run_dir = choose_run_dir(config.name, output or config.output_dir, resume=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    try:
        log(f"run folder: {run_dir}")
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
        model, counts = _train(config, tasks, load_encoder(resolved, config.model.revision), tokenizer, run_dir, log)
        model_dir = run_dir / "model"
        model.save(model_dir, tokenizer, [{"name": t["name"], "labels": t["labels"]} for t in tasks],
                   config.data.max_length)
        from tuneforge.models.multitask import MultitaskPredictor

        predictor = MultitaskPredictor(model_dir)  # scored as it will be used: read back from the folder
        metrics = {"task": "multitask", "tasks": {t["name"]: _score(predictor, t, config, counts[i])
                                                  for i, t in enumerate(tasks)},
                   "seconds": round(time.time() - started, 1)}
        atomic_write_json(run_dir / "metrics.json", metrics)
        from tuneforge.evaluation.multitask_report import write_multitask_report

        write_multitask_report(run_dir, config.name, metrics)
    finally:
        lock.release()
    return {"run_dir": run_dir, **metrics}


def _prepare(config: RunConfig, task: Any, index: int) -> dict[str, Any]:
    """A task's splits, read as a run reads its data (its data keys over the run's)."""
    from pydantic import ValidationError

    from tuneforge.config.loader import describe_error
    from tuneforge.config.schema import DataConfig
    from tuneforge.data.prepare import prepare_data

    try:
        data_config = DataConfig.model_validate({**config.data.model_dump(), **task.data})
    except ValidationError as exc:
        raise ConfigError(f"multitask.tasks.{index}.data.{describe_error(exc)}") from None
    prepared = prepare_data(data_config, config.train.seed)
    return {"name": task.name, "weight": task.weight, "labels": prepared.labels, "index": index,
            **{split: [(row.text or "", prepared.labels.index(str(row.label))) for row in prepared.splits[split]]
               for split in ("train", "validation", "test")}}


def _train(config: RunConfig, tasks: list[dict[str, Any]], encoder: Any, tokenizer: Any, run_dir: Path,
           log: Callable[[str], None]) -> tuple[Any, list[int]]:
    from tuneforge.data.mixing import mix
    from tuneforge.methods.registry import apply_method
    from tuneforge.models.multitask import Collator, MultiHeadClassifier
    from tuneforge.training.engine import build_trainer

    model = MultiHeadClassifier(encoder, {t["name"]: len(t["labels"]) for t in tasks},
                                getattr(encoder.config, "hidden_dropout_prob", 0.1))
    model.encoder = apply_method(model.encoder, config.method, ENCODER_FACTS)
    offsets = list(model.offsets.values())
    encoded = [{split: _encode(t[split], t["index"], offsets[t["index"]], tokenizer, config.data.max_length)
                for split in ("train", "validation")} for t in tasks]
    train_set, counts = mix([e["train"] for e in encoded], [t["weight"] for t in tasks], config.train.seed)
    log("multitask: " + ", ".join(f"{t['name']} {c} rows per epoch ({len(t['train'])} distinct, weight "
                                  f"{t['weight']:g}, {len(t['labels'])} labels)" for t, c in zip(tasks, counts)))
    trainer = build_trainer(model, tokenizer, train_set, [row for e in encoded for row in e["validation"]],
                            config.train, sum(len(t["labels"]) for t in tasks), run_dir, collator=Collator(tokenizer),
                            metrics_fn=_metrics_fn(sum(len(t["labels"]) for t in tasks)))
    trainer.train()
    if hasattr(model.encoder, "merge_and_unload"):  # LoRA: folded in, so the encoder saves as a plain model
        model.encoder = model.encoder.merge_and_unload()
    return model, counts


def _encode(rows: list[tuple[str, int]], task: int, offset: int, tokenizer: Any, max_length: int) -> list[dict]:
    ids = tokenizer([text for text, _ in rows], truncation=True, max_length=max_length)["input_ids"]
    return [{"input_ids": i, "labels": offset + label, "task_ids": task} for i, (_, label) in zip(ids, rows)]


def _metrics_fn(total: int) -> Callable[[Any, Any], dict[str, float]]:
    def metrics(label_ids: Any, logits: Any) -> dict[str, float]:
        import numpy as np

        from tuneforge.evaluation.metrics import eval_metrics

        return eval_metrics(label_ids, np.argmax(logits, axis=-1), total)  # over every task's classes
    return metrics


def _score(predictor: Any, task: dict[str, Any], config: RunConfig, epoch_rows: int) -> dict[str, Any]:
    """The task's test split: the model and the majority class of its training split, with paired intervals."""
    from collections import Counter

    from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics, paired_difference

    texts, truth = [t for t, _ in task["test"]], [label for _, label in task["test"]]
    labels = task["labels"]
    predicted = [labels.index(p["label"]) for p in predictor.predict(texts, task["name"])]
    majority = [Counter(label for _, label in task["train"]).most_common(1)[0][0]] * len(truth)
    indices = bootstrap_indices(len(truth), config.evaluation.bootstrap_samples, config.train.seed)
    figures = {name: classification_metrics(truth, preds, labels, indices)
               for name, preds in (("finetuned", predicted), ("majority", majority))}
    return {"labels": labels, "weight": task["weight"], "train_rows": len(task["train"]), "epoch_rows": epoch_rows,
            "test_rows": len(truth), "finetuned": figures["finetuned"], "majority": figures["majority"],
            "finetuned_minus_majority": paired_difference(truth, predicted, majority, len(labels), indices)}
