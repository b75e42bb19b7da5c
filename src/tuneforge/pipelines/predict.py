"""``tuneforge predict``: label new text with a trained run's model (label + probabilities), or answer a question
from a context with a question-answering run."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError
from tuneforge.io import atomic_write_text
from tuneforge.tasks.run_folder import read_model_meta
from tuneforge.tasks.sequence_classification import Predictor

__all__ = ["Predictor", "load_predictor", "predict_file", "read_model_meta"]


def load_predictor(run_dir: str | Path, precision: str | None = None) -> Any:
    """Load ``RUN_DIR/model`` (or a model folder itself) as its task's predictor: a peft adapter on its base, or a
    full model, computing in the run's precision unless ``precision`` says otherwise. A classification run gives a
    :class:`Predictor` (``predict``), a token-classification run a tagger (``tag``), a question-answering run a
    :class:`~tuneforge.tasks.question_answering.QaPredictor` (``answer``), a generative run a generator
    (``generate``)."""
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import task_of

    model_dir, meta = read_model_meta(run_dir)
    return task_spec(task_of(meta)).call("predictor", model_dir, meta, precision)


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
