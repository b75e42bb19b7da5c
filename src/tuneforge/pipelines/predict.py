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
    from tuneforge.tasks.run_folder import loading, task_of

    model_dir, meta = read_model_meta(run_dir)
    with loading(model_dir):
        return task_spec(task_of(meta)).call("predictor", model_dir, meta, precision)


def predict_file(predictor: Predictor, source: str | Path, output: str | Path, text_column: str = "text",
                 overwrite: bool = False) -> int:
    """Read a CSV, add ``predicted`` and ``prob_<label>`` columns, write it atomically; returns the row count. An
    existing ``output`` is replaced only with ``overwrite`` (never the source itself)."""
    source, output = Path(source), Path(output)
    if not source.is_file():
        raise DataError(f"{source}: file not found")
    if output.exists() and (output.resolve() == source.resolve() or output.is_dir() or not overwrite):
        raise DataError(f"{output}: already exists" + ("" if output.is_dir() or output.resolve() == source.resolve()
                                                       else "; choose another --output or add --overwrite"))
    rows = list(csv.DictReader(io.StringIO(utf8_text(source), newline="")))
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


def utf8_text(path: Path) -> str:
    """A text file's contents; a file in another encoding is one line naming where it stops being UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8, e.g. "
                        f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}") from None
