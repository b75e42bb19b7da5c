"""``tuneforge predict``: label new text with a trained run's model (label + probabilities), or answer a question
from a context with a question-answering run."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError, UserError
from tuneforge.io import atomic_write_text


@dataclass
class Predictor:
    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        import numpy as np

        from tuneforge.training.engine import predict_logits

        logits = predict_logits(self.model, self.tokenizer, texts, self.max_length, batch_size)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [{"label": self.labels[int(p.argmax())],
                 "probabilities": {label: round(float(x), 6) for label, x in zip(self.labels, p)}}
                for p in probs]


def read_model_meta(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The model folder of a run (or the folder itself) and its ``tuneforge.json`` (task, base model, labels)."""
    model_dir = Path(run_dir)
    if (model_dir / "model").is_dir():
        model_dir = model_dir / "model"
    meta_path = model_dir / "tuneforge.json"
    if not meta_path.exists():
        raise UserError(f"{run_dir}: not a tuneforge run folder (no model/tuneforge.json); give the folder that "
                        f"tuneforge train wrote")
    return model_dir, json.loads(meta_path.read_text())


def load_predictor(run_dir: str | Path, precision: str | None = None) -> Any:
    """Load ``RUN_DIR/model`` (or a model folder itself) as its task's predictor: a peft adapter on its base, or a
    full model, computing in the run's precision unless ``precision`` says otherwise. A classification run gives a
    :class:`Predictor` (``predict``), a token-classification run a tagger (``tag``), a question-answering run a
    :class:`~tuneforge.pipelines.question_answering.QaPredictor` (``answer``), a generative run a generator
    (``generate``)."""
    from tuneforge.tasks.registry import task_spec

    model_dir, meta = read_model_meta(run_dir)
    return task_spec(meta.get("task", "sequence-classification")).call("predictor", model_dir, meta, precision)


def load_label_predictor(model_dir: Path, meta: dict[str, Any], precision: str | None = None) -> Predictor:
    """A sequence-classification run's model: ``predict(texts)`` gives a label and probabilities per text."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = meta["labels"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    from tuneforge.methods.trained import load_trained

    model = load_trained(model_dir, meta, AutoModelForSequenceClassification, precision, num_labels=len(labels),
                         id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
                         pad_token_id=tokenizer.pad_token_id)
    return Predictor(model=model.eval(), tokenizer=tokenizer, labels=labels, max_length=meta["max_length"])


def predict_file(predictor: Predictor, source: str | Path, output: str | Path, text_column: str = "text") -> int:
    """Read a CSV, add ``predicted`` and ``prob_<label>`` columns, write it atomically; returns the row count."""
    source = Path(source)
    if not source.is_file():
        raise DataError(f"{source}: file not found")
    rows = list(csv.DictReader(io.StringIO(source.read_text(encoding="utf-8-sig"), newline="")))
    if rows and text_column not in rows[0]:
        raise DataError(f"{source}:1: no column {text_column!r} (columns: {', '.join(rows[0])}; "
                        f"use --text-column)")
    results = predictor.predict([row[text_column] or "" for row in rows]) if rows else []
    buffer = io.StringIO()
    fields = [*(rows[0].keys() if rows else [text_column]), "predicted",
              *[f"prob_{label}" for label in predictor.labels]]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row, result in zip(rows, results):
        writer.writerow({**row, "predicted": result["label"],
                         **{f"prob_{k}": f"{v:.6f}" for k, v in result["probabilities"].items()}})
    atomic_write_text(output, buffer.getvalue())
    return len(rows)
