"""A token-classification (NER) run, top to bottom: sentences -> words tokenized into sub-tokens (the label
sits on each word's first sub-token, the rest are -100) -> model with a token head sized from the tags ->
method -> train (validation entity F1) -> evaluate entity-level P/R/F1 on the test split (read once) against
the memorization baseline, with bootstrap intervals."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.config.schema import RunConfig
from tuneforge.data.ner import NerData, prepare_ner
from tuneforge.errors import ConfigError
from tuneforge.io import atomic_write_json, atomic_write_text


def run_token_classification(config: RunConfig, run_dir: Path, resume: bool, log: Callable[[str], None],
                             evaluate_test: bool, callbacks: list[Any], tracker: Any, quiet: bool = False) -> dict:
    from transformers import DataCollatorForTokenClassification, set_seed

    from tuneforge.evaluation.ner_metrics import eval_ner
    from tuneforge.methods.registry import apply_method, load_kwargs
    from tuneforge.models.assets import resolve_model
    from tuneforge.models.inspection import count_parameters, parameter_line
    from tuneforge.models.loading import load_token_classifier, load_tokenizer
    from tuneforge.pipelines.evaluate import best_checkpoint_info
    from tuneforge.pipelines.finetune import save_model, train_with_resume

    data = prepare_ner(config.data, config.train.seed)
    resolved = resolve_model(config.model.name, config.model.revision)
    tokenizer = load_tokenizer(resolved, config.model.revision, config.model.trust_remote_code)
    encoded = {split: encode(tokenizer, data, split, config.data.max_length) for split in ("train", "validation")}
    data.report["model"] = {"name": resolved.name, "path": resolved.path, "source": resolved.source}
    atomic_write_json(run_dir / "data_report.json", data.report)
    splits = ", ".join(f"{name} {len(part)}" for name, part in data.splits.items())
    log(f"data: {data.report['source']['rows_read']} sentences read, kept {splits}; "
        f"{len(data.labels)} tags ({len(data.labels) // 2} entity types)")

    set_seed(config.train.seed)
    model = load_token_classifier(resolved, data.labels, config.model.revision, config.model.trust_remote_code,
                                  **load_kwargs(config.method))
    try:
        model = apply_method(model, config.method, "token-classification")
    except ValueError as exc:
        raise ConfigError(f"method: {exc}") from None
    params = count_parameters(model)
    atomic_write_json(run_dir / "params.json", params)
    log(parameter_line(params, config.method.name))
    trainer, train_seconds = train_with_resume(
        model, tokenizer, encoded["train"], encoded["validation"], config, run_dir, resume, log, callbacks, tracker,
        quiet, collator=DataCollatorForTokenClassification(tokenizer),
        metrics_fn=lambda ids, logits: eval_ner(ids, logits, data.labels))
    model = trainer.model
    save_model(model, tokenizer, run_dir / "model", resolved.path, config, data.labels)
    training = {"global_steps": trainer.state.global_step, "epochs_run": round(trainer.state.epoch or 0.0, 3),
                "max_epochs": config.train.epochs, "method": config.method.name,
                "train_seconds": round(train_seconds, 2), "params_trainable": params["trainable"],
                "speed": trainer.speed_summary}
    result = {"task": "token-classification", "validation": best_checkpoint_info(trainer.state), "training": training}
    if evaluate_test:
        result.update(evaluate_ner(model, tokenizer, data, config, run_dir))
    return result


def encode(tokenizer: Any, data: NerData, split: str, max_length: int) -> list[dict[str, Any]]:
    sentences = data.splits[split]
    batch = tokenizer([s.tokens for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    items = []
    for n, ids in enumerate(data.tag_ids(split)):
        labels, previous = [], None
        for word in batch.word_ids(n):
            labels.append(-100 if word is None or word == previous else ids[word])
            previous = word
        items.append({"input_ids": batch["input_ids"][n], "attention_mask": batch["attention_mask"][n],
                      "labels": labels})
    return items


def predict_tags(model: Any, tokenizer: Any, sentences: list[list[str]], labels: list[str], max_length: int,
                 batch_size: int = 32) -> list[list[str]]:
    """One tag per word (from its first sub-token); words cut off by max_length get O."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            words = sentences[start:start + batch_size]
            batch = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt").to(device)
            predicted = model(**batch).logits.argmax(-1).cpu().numpy()
            for n, sentence in enumerate(words):
                tags, previous = ["O"] * len(sentence), None
                for position, word in enumerate(batch.word_ids(n)):
                    if word is not None and word != previous:
                        tags[word] = labels[int(predicted[n, position])]
                    previous = word
                out.append(tags)
    return out


def evaluate_ner(model: Any, tokenizer: Any, data: NerData, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    from tuneforge.evaluation.metrics import bootstrap_indices
    from tuneforge.evaluation.ner_metrics import memorization_baseline, ner_metrics, paired_ner_difference

    ev, test = config.evaluation, data.splits["test"]
    words, gold = [s.tokens for s in test], [s.tags for s in test]
    predicted = predict_tags(model, tokenizer, words, data.labels, config.data.max_length)
    types = sorted({label[2:] for label in data.labels if label != "O"})
    indices = bootstrap_indices(len(test), ev.bootstrap_samples, config.train.seed)
    baselines = {}
    if "memorization" in ev.baselines:
        train = data.splits["train"]
        baselines["memorization"] = memorization_baseline([s.tokens for s in train], [s.tags for s in train], words)
    lines = [json.dumps({"source": s.where, "tokens": s.tokens, "gold": s.tags, "predicted": p}, ensure_ascii=False)
             for s, p in zip(test, predicted)]
    atomic_write_text(run_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    return {"test": {
        "finetuned": ner_metrics(gold, predicted, types, indices, ev.confidence),
        "baselines": {name: ner_metrics(gold, tags, types, indices, ev.confidence) for name, tags in baselines.items()},
        "finetuned_minus_baseline": {name: paired_ner_difference(gold, predicted, tags, types, indices, ev.confidence)
                                     for name, tags in baselines.items()},
        "confidence": ev.confidence, "bootstrap_samples": ev.bootstrap_samples}}


@dataclass
class TagPredictor:
    """A trained token-classification run's model: ``tag(sentences)`` gives a tag per word; ``predict(texts)``
    splits each text on whitespace first."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int

    def tag(self, sentences: list[list[str]]) -> list[list[str]]:
        return predict_tags(self.model, self.tokenizer, sentences, self.labels, self.max_length)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        words = [text.split() for text in texts]
        return [{"tokens": w, "tags": t} for w, t in zip(words, self.tag(words))]


def load_tag_predictor(model_dir: Path, meta: dict[str, Any], precision: str | None = None) -> TagPredictor:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tuneforge.methods.trained import load_trained

    labels = meta["labels"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = load_trained(model_dir, meta, AutoModelForTokenClassification, precision, num_labels=len(labels),
                         id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    return TagPredictor(model.eval(), tokenizer, labels, meta["max_length"])


def evaluate_saved_ner(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """The test scoring of a finished run's saved model (a search's best trial)."""
    from tuneforge.pipelines.predict import read_model_meta

    model_dir, meta = read_model_meta(run_dir)
    predictor = load_tag_predictor(model_dir, meta)
    data = prepare_ner(config.data, config.train.seed)
    return evaluate_ner(predictor.model, predictor.tokenizer, data, config, run_dir)
