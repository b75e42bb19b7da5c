"""Extractive question answering: the answer's span in a context, scored by SQuAD F1 and exact match against the
sliding-window baseline (the context sentence sharing the most words with the question).

SQuAD-style records (answers checked against their contexts, split by context) -> windows of question + context
with the answer's start/end token -> the encoder with a span head (``qa_outputs``) -> validation F1 after
post-processing -> exact match and F1 on the test split (read once) against the baseline, with bootstrap intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config.schema import DataConfig, RunConfig
from tuneforge.data.qa import QaData, QaExample, prepare_qa
from tuneforge.data.qa_features import Features, build_features
from tuneforge.io import atomic_write_text
from tuneforge.tasks.spec import Prepared, TaskSpec, TrainerParts, register, steps

LABEL_NAMES = ["start_positions", "end_positions"]
HERE = "tuneforge.tasks.question_answering"

register(TaskSpec(
    name="question-answering",
    description="the answer's span in a context (extractive QA)",
    baselines=("sliding_window",),
    selection=("f1", "exact_match", "loss"),
    headline=("f1",),
    shown=("exact_match", "f1"),
    auto_class="AutoModelForQuestionAnswering",
    next_token_loss=False,
    generates=False,
    inputs=("question", "context"),
    peft_task_type="QUESTION_ANS",
    head_modules=("qa_outputs",),
    per_token_head=True,
    vocabulary_head=False,
    head_size=2,
    windows=True,
    labelled_head=False,
    report="tuneforge.evaluation.report_qa:qa_parts",
    **steps(HERE, predictor="load_qa_predictor"),
    starter=("minilm", "data/squad.jsonl", "SQuAD-style jsonl: question, context, answers {text, answer_start}"),
))


def prepare(config: RunConfig, tokenizer: Any, resolved: Any) -> Prepared:
    data = prepare_qa(config.data, config.train.seed)
    train, validation = (encode(tokenizer, data.splits[split], config.data, labelled=True)
                         for split in ("train", "validation"))
    data.report["windows"] = {name: {"questions": len(data.splits[name]), "windows": len(part.inputs),
                                     "windows_without_answer": part.unanswerable_windows(),
                                     "questions_truncated": part.questions_truncated}
                              for name, part in (("train", train), ("validation", validation))}
    data.report["model"] = {"name": resolved.name, "path": resolved.path, "source": resolved.source}
    ev = config.evaluation
    return Prepared(train.inputs, validation.inputs, [], data.report, _data_line(data, train), data,
                    meta={"doc_stride": config.data.doc_stride, "n_best": ev.n_best,
                          "max_answer_length": ev.max_answer_length},
                    extra={"validation_features": validation})


def load_model(resolved: Any, prepared: Prepared, config: RunConfig, tokenizer: Any) -> Any:
    from tuneforge.methods.registry import load_kwargs
    from tuneforge.models.loading import load_question_answerer

    return load_question_answerer(resolved, config.model.revision, config.model.trust_remote_code,
                                  **load_kwargs(config.method))


def trainer_parts(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig) -> TrainerParts:
    from transformers import DataCollatorWithPadding

    ev, examples = config.evaluation, prepared.data.splits["validation"]
    validation = prepared.extra["validation_features"]

    def validation_scores(_label_ids: Any, logits: Any) -> dict[str, float]:
        from tuneforge.evaluation.qa_metrics import score_answers
        from tuneforge.evaluation.qa_postprocess import best_spans

        spans = best_spans(logits[..., 0], logits[..., 1], validation, [e.context for e in examples], ev.n_best,
                           ev.max_answer_length)
        em, f1 = score_answers([s["text"] for s in spans], [e.answers for e in examples])
        return {"exact_match": float(em.mean()), "f1": float(f1.mean())}

    return TrainerParts(collator=DataCollatorWithPadding(tokenizer), metrics_fn=validation_scores, setup=span_trainer)


def evaluate(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig, run_dir: Path,
             resolved: Any) -> dict[str, Any]:
    return evaluate_qa(model, tokenizer, prepared.data, config, run_dir)


def encode(tokenizer: Any, examples: list[QaExample], data: DataConfig, labelled: bool = False) -> Features:
    answers = [(e.starts[0], e.answers[0]) for e in examples] if labelled else None
    return build_features(tokenizer, [e.question for e in examples], [e.context for e in examples], data.max_length,
                          data.doc_stride, answers)


def span_trainer(trainer: Any) -> None:
    """The Trainer reads the span labels (for the validation loss) and hands metrics both logits, stacked."""
    import torch

    trainer.label_names = list(LABEL_NAMES)
    trainer.preprocess_logits_for_metrics = lambda logits, _labels: torch.stack(logits[:2], dim=-1)


def span_logits(model: Any, tokenizer: Any, features: Features, batch_size: int = 32) -> tuple[Any, Any]:
    """Start and end logits per window (windows x longest window; padding positions hold -1e4)."""
    import numpy as np
    import torch

    model.eval()
    device = next(model.parameters()).device
    width = max((len(item["input_ids"]) for item in features.inputs), default=0)
    start, end = np.full((2, len(features.inputs), width), -1e4, dtype=np.float32)
    with torch.inference_mode():
        for first in range(0, len(features.inputs), batch_size):
            items = [{k: v for k, v in item.items() if k not in LABEL_NAMES}
                     for item in features.inputs[first:first + batch_size]]
            batch = tokenizer.pad(items, return_tensors="pt").to(device)
            out = model(**batch)
            length = batch["input_ids"].shape[1]
            start[first:first + len(items), :length] = out.start_logits.float().cpu().numpy()
            end[first:first + len(items), :length] = out.end_logits.float().cpu().numpy()
    return start, end


def answer_questions(model: Any, tokenizer: Any, questions: list[str], contexts: list[str], max_length: int,
                     stride: int, n_best: int = 20, max_answer_length: int = 30) -> list[dict[str, Any]]:
    """The best span of each context for its question: ``{"text", "score", "start", "end"}``."""
    from tuneforge.evaluation.qa_postprocess import best_spans

    features = build_features(tokenizer, questions, contexts, max_length, stride)
    start, end = span_logits(model, tokenizer, features)
    return best_spans(start, end, features, contexts, n_best, max_answer_length)


def evaluate_qa(model: Any, tokenizer: Any, data: QaData, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    from tuneforge.evaluation.metrics import bootstrap_indices
    from tuneforge.evaluation.qa_metrics import paired_qa_difference, qa_metrics, score_answers, \
        sliding_window_baseline

    ev, test = config.evaluation, data.splits["test"]
    questions, contexts, golds = [e.question for e in test], [e.context for e in test], [e.answers for e in test]
    spans = answer_questions(model, tokenizer, questions, contexts, config.data.max_length, config.data.doc_stride,
                             ev.n_best, ev.max_answer_length)
    predicted = [s["text"] for s in spans]
    scores = score_answers(predicted, golds)
    baselines = {"sliding_window": sliding_window_baseline(questions, contexts)} \
        if "sliding_window" in ev.baselines else {}
    baseline_scores = {name: score_answers(answers, golds) for name, answers in baselines.items()}
    indices = bootstrap_indices(len(test), ev.bootstrap_samples, config.train.seed)
    write_predictions(run_dir / "predictions.jsonl", test, spans, scores, baselines)
    return {"test": {
        "finetuned": qa_metrics(*scores, indices, ev.confidence),
        "baselines": {name: qa_metrics(*s, indices, ev.confidence) for name, s in baseline_scores.items()},
        "finetuned_minus_baseline": {name: paired_qa_difference(scores, s, indices, ev.confidence)
                                     for name, s in baseline_scores.items()},
        "contexts": len({e.context_id for e in test}),
        "confidence": ev.confidence, "bootstrap_samples": ev.bootstrap_samples}}


def write_predictions(path: Path, test: list[QaExample], spans: list[dict[str, Any]], scores: tuple[Any, Any],
                      baselines: dict[str, list[str]]) -> None:
    lines = []
    for n, (example, span) in enumerate(zip(test, spans)):
        lines.append(json.dumps({
            "id": example.id, "source": example.where, "question": example.question,
            "context_id": example.context_id, "context_snippet": snippet(example.context, example.starts[0],
                                                                         len(example.answers[0])),
            "gold": example.answers, "predicted": span["text"], "predicted_start": span["start"],
            "score": span["score"], "exact_match": scores[0][n], "f1": round(float(scores[1][n]), 4),
            "baselines": {name: answers[n] for name, answers in baselines.items()}}, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n" if lines else "")


def snippet(context: str, start: int, length: int, around: int = 80) -> str:
    """The context around the gold answer, with ... where it was cut."""
    first, last = max(0, start - around), min(len(context), start + length + around)
    return ("..." if first else "") + context[first:last] + ("..." if last < len(context) else "")


def _data_line(data: QaData, train: Features) -> str:
    splits = ", ".join(f"{name} {len(part)}" for name, part in data.splits.items())
    dropped = ", ".join(f"{reason} {count}" for reason, count in data.report["cleaning"]["dropped"].items())
    repaired = data.report["cleaning"]["modified"].get("answer_start_repaired", 0)
    return (f"data: {data.report['source']['rows_read']} questions read, kept {splits} (split by context); "
            f"answer offsets repaired {repaired}; removed: {dropped or 'nothing'}; "
            f"{len(train.inputs)} training windows ({train.unanswerable_windows()} without the answer)")


@dataclass
class QaPredictor:
    """A trained QA run's model: ``answer(questions, contexts)``."""

    model: Any
    tokenizer: Any
    max_length: int
    doc_stride: int
    n_best: int = 20
    max_answer_length: int = 30

    def answer(self, questions: list[str], contexts: list[str]) -> list[dict[str, Any]]:
        return answer_questions(self.model, self.tokenizer, questions, contexts, self.max_length, self.doc_stride,
                                self.n_best, self.max_answer_length)


def load_qa_predictor(model_dir: Path, meta: dict[str, Any], precision: str | None = None) -> QaPredictor:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tuneforge.methods.trained import load_trained

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the base's load report calls the span head "missing": the run's weights follow
    try:
        model = load_trained(model_dir, meta, AutoModelForQuestionAnswering, precision)
    finally:
        hf_logging.set_verbosity(verbosity)
    return QaPredictor(model.eval(), tokenizer, meta["max_length"], meta.get("doc_stride", 32),
                       meta.get("n_best", 20), meta.get("max_answer_length", 30))
