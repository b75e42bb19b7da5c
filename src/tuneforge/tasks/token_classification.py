"""Token classification (NER): a BIO tag per word, scored by entity-level F1 against memorization (each word's most
frequent training tag).

sentences -> words tokenized into sub-tokens (the label sits on each word's first sub-token, the rest are -100) ->
the model with a token head sized from the tags -> validation entity F1 -> entity-level P/R/F1 on the test split
(read once) against the memorization baseline, with bootstrap intervals -> predictions.jsonl.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import RunConfig
from tuneforge.data.ner import NerData, prepare_ner
from tuneforge.io import atomic_write_text
from tuneforge.tasks.spec import Prepared, TaskSpec, TrainerParts, register, steps

HERE = "tuneforge.tasks.token_classification"

register(TaskSpec(
    name="token-classification",
    description="a BIO tag per word (named entities)",
    baselines=("memorization",),
    selection=("entity_f1", "loss"),
    headline=("entity_f1",),
    shown=("entity_f1", "entity_precision", "entity_recall", "token_accuracy"),
    auto_class="AutoModelForTokenClassification",
    next_token_loss=False,
    generates=False,
    inputs=("text",),
    peft_task_type="TOKEN_CLS",
    head_modules=("classifier", "score"),
    per_token_head=True,
    vocabulary_head=False,
    head_size=None,
    windows=False,
    labelled_head=True,
    report="tuneforge.evaluation.report_ner:ner_parts",
    augments=True,
    **steps(HERE, predictor="load_tag_predictor"),
    starter=("minilm", "offline:wnut16", "CoNLL (word TAB tag per line, blank line between sentences) or jsonl with "
                                       "tokens and tags lists"),
))


def prepare(config: RunConfig, tokenizer: Any, resolved: Any) -> Prepared:
    data = prepare_ner(config.data, config.train.seed)
    encoded = {split: encode(tokenizer, data, split, config.data.max_length) for split in ("train", "validation")}
    data.report["model"] = {"name": resolved.name, "path": resolved.path, "source": resolved.source}
    splits = ", ".join(f"{name} {len(part)}" for name, part in data.splits.items())
    summary = (f"data: {data.report['source']['rows_read']} sentences read, kept {splits}; "
               f"{len(data.labels)} tags ({len(data.labels) // 2} entity types)")
    return Prepared(encoded["train"], encoded["validation"], list(data.labels), data.report, summary, data)


def load_model(resolved: Any, prepared: Prepared, config: RunConfig, tokenizer: Any) -> Any:
    from tuneforge.methods.registry import load_kwargs
    from tuneforge.models.loading import load_token_classifier

    return load_token_classifier(resolved, prepared.labels, config.model.revision, config.model.trust_remote_code,
                                 **load_kwargs(config.method))


def trainer_parts(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig) -> TrainerParts:
    from transformers import DataCollatorForTokenClassification

    from tuneforge.evaluation.ner_metrics import eval_ner

    labels = prepared.labels
    return TrainerParts(collator=DataCollatorForTokenClassification(tokenizer),
                        metrics_fn=lambda ids, logits: eval_ner(ids, logits, labels), group_by_length=True)


def evaluate(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig, run_dir: Path,
             resolved: Any) -> dict[str, Any]:
    return evaluate_ner(model, tokenizer, prepared.data, config, run_dir)


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
