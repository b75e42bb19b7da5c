"""Sequence classification: a label per text, scored by macro-F1 against the majority class and a linear probe on
the frozen base model's embeddings.

data (labelled text -> clean -> stratified split) -> tokens -> the model with a classification head sized from the
labels -> validation metrics from the argmax -> the test split (read once, here) against the baselines, with
bootstrap intervals -> predictions.csv; the predictor gives a label and probabilities per text.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.tasks.spec import Prepared, TaskSpec, TrainerParts, register, steps

HERE = "tuneforge.tasks.sequence_classification"

register(TaskSpec(
    name="sequence-classification",
    description="a label per text (topics, sentiment, intent)",
    baselines=("majority", "linear_probe"),
    selection=("macro_f1", "accuracy", "weighted_f1", "loss"),
    headline=("macro_f1",),
    shown=("accuracy", "macro_f1", "weighted_f1"),
    auto_class="AutoModelForSequenceClassification",
    next_token_loss=False,
    generates=False,
    inputs=("text",),
    peft_task_type="SEQ_CLS",
    head_modules=("classifier", "score"),
    per_token_head=False,
    vocabulary_head=False,
    head_size=None,
    windows=False,
    labelled_head=True,
    report="tuneforge.evaluation.report:classification_parts",
    class_weighted=True,
    augments=True,
    slices=True,
    monitored=True,
    **steps(HERE, predictor="load_label_predictor"),
    variant_outputs="tuneforge.tasks.variants:classification_outputs",
    variant_figures="tuneforge.tasks.variants:classification_figures",
    starter=("minilm", "offline:bbc-news", "labelled text: csv/json/jsonl/parquet with text and label columns, or a "
                                         "folder of <label>/*.txt"),
))


def prepare(config: Any, tokenizer: Any, resolved: Any) -> Prepared:
    from tuneforge.data.prepare import prepare_data

    from tuneforge.tasks.augment_tools import augment_tools

    data = prepare_data(config.data, config.train.seed, augment_tools(config, tokenizer, resolved))
    if config.evaluation.slices is not None:  # before training: a slice's column must exist
        from tuneforge.data.slicing import check_slice_columns

        check_slice_columns([row for part in data.splits.values() for row in part], config.evaluation.slices,
                            config.data.path, data.labels)
    datasets, lengths = _tokenize_splits(data, tokenizer, config.data.max_length)
    data.report["token_lengths"] = lengths
    data.report["model"] = {"name": resolved.name, "path": resolved.path, "source": resolved.source}
    from tuneforge.data.prepare import truncation_warning

    cut = truncation_warning(lengths["train"], config.data.max_length)
    if cut:
        data.report["warnings"].append(cut)
    return Prepared(datasets["train"], datasets["validation"], list(data.labels), data.report,
                    _data_summary(data.report), data, warnings=list(data.report["warnings"]))


def load_model(resolved: Any, prepared: Prepared, config: Any, tokenizer: Any) -> Any:
    from tuneforge.methods.registry import load_kwargs
    from tuneforge.models.loading import load_classifier

    return load_classifier(resolved, prepared.labels, tokenizer, config.model.revision, config.model.trust_remote_code,
                           **load_kwargs(config.method))


def trainer_parts(model: Any, tokenizer: Any, prepared: Prepared, config: Any) -> TrainerParts:
    weights = class_weights(config.train.class_weights, prepared.labels, prepared.data.label_ids("train"))
    prepared.training["class_weights"] = dict(zip(prepared.labels, weights)) if weights else None
    return TrainerParts(num_labels=len(prepared.labels), class_weights=weights)


IMBALANCE = 3.0  # train.class_weights auto: balanced from this ratio of the largest to the smallest class


def class_weights(setting: Any, labels: list[str], train_ids: list[int]) -> list[float] | None:
    """The loss weight of each label (label order), or None for an unweighted loss. balanced: n / (classes x count),
    sklearn's rule, so a class's total weight is the same for every class; auto: balanced when the training split
    is imbalanced (largest class >= IMBALANCE x the smallest)."""
    from collections import Counter

    from tuneforge.errors import ConfigError

    counts = Counter(train_ids)
    sizes = [counts.get(i, 0) for i in range(len(labels))]
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(labels))
        if unknown:
            raise ConfigError(f"train.class_weights: {', '.join(map(repr, unknown))} not among the labels "
                              f"({', '.join(labels)})")
        return [float(setting.get(label, 1.0)) for label in labels]
    if setting == "none" or (setting == "auto" and max(sizes) < IMBALANCE * max(1, min(sizes))):
        return None
    return [round(len(train_ids) / (len(labels) * max(1, size)), 6) for size in sizes]


def evaluate(model: Any, tokenizer: Any, prepared: Prepared, config: Any, run_dir: Path,
             resolved: Any) -> dict[str, Any]:
    """The fine-tuned model and the baselines on the test split (read once, here)."""
    import numpy as np

    from tuneforge.evaluation.baselines import majority_baseline
    from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics, paired_difference

    data = prepared.data
    y_true = np.asarray(data.label_ids("test"))
    probabilities = _softmax(predict_logits(model, tokenizer, data.texts("test"), config.data.max_length,
                                            description="test split"))
    y_pred = probabilities.argmax(axis=1)
    write_predictions(run_dir / "predictions.csv", data, probabilities)
    ev = config.evaluation
    indices = bootstrap_indices(len(y_true), ev.bootstrap_samples, config.train.seed)
    predictions: dict[str, Any] = {}
    if "majority" in ev.baselines:
        predictions["majority"] = majority_baseline(data.label_ids("train"), len(y_true))
    if "linear_probe" in ev.baselines:
        predictions["linear_probe"], probe_info = _linear_probe(data, config, resolved, tokenizer)
    baselines = {name: classification_metrics(y_true, pred, data.labels, indices, ev.confidence)
                 for name, pred in predictions.items()}
    if "linear_probe" in baselines:
        baselines["linear_probe"]["settings"] = probe_info
    finetuned = classification_metrics(y_true, y_pred, data.labels, indices, ev.confidence)
    sliced = _slices_and_fairness(data, y_true, {"finetuned": y_pred, **predictions}, finetuned, config) \
        if ev.slices is not None else {}
    return {"test": {
        "finetuned": finetuned,
        "baselines": baselines,
        "finetuned_minus_baseline": {name: paired_difference(y_true, y_pred, pred, len(data.labels), indices,
                                                             ev.confidence) for name, pred in predictions.items()},
        "prediction_spread": prediction_spread(y_true, y_pred, data.labels),
        "confidence": ev.confidence, "bootstrap_samples": ev.bootstrap_samples, **sliced}}


def _slices_and_fairness(data: Any, y_true: Any, predictions: dict[str, Any], overall: dict[str, Any],
                         config: Any) -> dict[str, Any]:
    """Every model's headline figures on each slice of the test split, the flagged weak slices, and the group
    fairness figures of each sensitive column."""
    import numpy as np

    from tuneforge.data.slicing import define_slices, group_values
    from tuneforge.evaluation.fairness import group_fairness
    from tuneforge.evaluation.metrics import scalar_scores
    from tuneforge.evaluation.slices import slice_figures

    ev, rows, k = config.evaluation, data.splits["test"], len(data.labels)
    names = ("macro_f1", "accuracy")

    def score(model: str, positions: Any, indices: Any) -> dict[str, Any]:
        return scalar_scores(y_true[positions], np.asarray(predictions[model])[positions], k, indices, names,
                             ev.confidence)

    settings = ev.slices
    out: dict[str, Any] = {"slices": slice_figures(
        define_slices(rows, settings), list(predictions), score, overall, "macro_f1", "accuracy",
        ev.bootstrap_samples, ev.confidence, config.train.seed, settings.min_rows)}
    if settings.sensitive:
        out["fairness"] = {column: {model: group_fairness(y_true, predicted, group_values(rows, column), data.labels,
                                                          settings.positive_label, ev.bootstrap_samples,
                                                          ev.confidence, config.train.seed)
                                    for model, predicted in predictions.items()}
                           for column in settings.sensitive}
    return out


def prediction_spread(y_true: Any, y_pred: Any, labels: list[str]) -> dict[str, Any]:
    """The label predicted most often, its share of the predictions and its true share (a model that collapsed
    to one class predicts it for nearly everything)."""
    import numpy as np

    counts = np.bincount(np.asarray(y_pred), minlength=len(labels))
    top = int(counts.argmax())
    return {"top_label": labels[top], "top_share": round(float(counts[top] / max(1, len(y_pred))), 4),
            "true_share": round(float(np.mean(np.asarray(y_true) == top)) if len(y_true) else 0.0, 4)}


@dataclass
class Predictor:
    """A classification run's model: ``predict(texts)`` gives a label and its probabilities per text."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        probs = _softmax(predict_logits(self.model, self.tokenizer, texts, self.max_length, batch_size))
        return [{"label": self.labels[int(p.argmax())],
                 "probabilities": {label: round(float(x), 6) for label, x in zip(self.labels, p)}}
                for p in probs]


def load_label_predictor(model_dir: Path, meta: dict[str, Any], precision: str | None = None) -> Predictor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.methods.trained import load_trained

    labels = meta["labels"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = load_trained(model_dir, meta, AutoModelForSequenceClassification, precision, num_labels=len(labels),
                         id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
                         pad_token_id=tokenizer.pad_token_id)
    return Predictor(model=model.eval(), tokenizer=tokenizer, labels=labels, max_length=meta["max_length"])


def predict_logits(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64,
                   description: str = "predicting") -> Any:
    """Logits for texts, batched by similar length, with a progress bar."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(text) for text in texts])
    logits: np.ndarray | None = None
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc=description, leave=False, disable=None):
            batch_ids = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in batch_ids], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt").to(device)
            out = model(**batch).logits.float().cpu().numpy()
            if logits is None:
                logits = np.zeros((len(texts), out.shape[-1]), dtype=np.float32)
            logits[batch_ids] = out
    assert logits is not None
    return logits


def write_predictions(path: Path, data: Any, probabilities: Any) -> None:
    from tuneforge.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["source", "text", "label", "predicted", "correct",
                     *[f"prob_{label}" for label in data.labels]])
    for row, probs in zip(data.splits["test"], probabilities):
        predicted = data.labels[int(probs.argmax())]
        writer.writerow([row.where, row.text, row.label, predicted, predicted == row.label,
                         *[f"{p:.6f}" for p in probs]])
    atomic_write_text(path, buffer.getvalue())


def _linear_probe(data: Any, config: Any, resolved: Any, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    from tuneforge.evaluation.baselines import embed, linear_probe
    from tuneforge.models.loading import load_encoder

    encoder = load_encoder(resolved, config.model.revision, config.model.trust_remote_code)
    max_length = config.data.max_length
    train_x = embed(encoder, tokenizer, data.texts("train"), max_length, description="probe: train")
    val_texts = data.texts("validation")
    val_x = embed(encoder, tokenizer, val_texts, max_length, description="probe: validation") if val_texts else None
    test_x = embed(encoder, tokenizer, data.texts("test"), max_length, description="probe: test")
    return linear_probe(train_x, data.label_ids("train"), val_x, data.label_ids("validation") or None, test_x,
                        config.train.seed)


def _softmax(logits: Any) -> Any:
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _tokenize_splits(data: Any, tokenizer: Any, max_length: int) -> tuple[dict[str, list[dict[str, Any]]], dict]:
    from tuneforge.data.prepare import token_length_stats

    datasets, lengths = {}, {}
    for split in ("train", "validation", "test"):
        texts = data.texts(split)
        full = tokenizer(texts, truncation=False, verbose=False)["input_ids"] if texts else []
        lengths[split] = token_length_stats([len(ids) for ids in full], max_length)
        if split == "test":
            continue  # the test split is tokenized at evaluation time, once
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        datasets[split] = [{"input_ids": ids, "attention_mask": mask, "labels": label}
                           for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"],
                                                       data.label_ids(split))]
    return datasets, lengths


def _data_summary(report: dict[str, Any]) -> str:
    splits = ", ".join(f"{name} {part['rows']}" for name, part in report["splits"].items())
    dropped = report["cleaning"]["dropped"]
    removed = ", ".join(f"{reason} {count}" for reason, count in dropped.items()) or "nothing"
    return (f"data: {report['source']['rows_read']} rows read, {report['rows_kept']} kept ({splits}); "
            f"removed: {removed}; {len(report['labels'])} classes")
