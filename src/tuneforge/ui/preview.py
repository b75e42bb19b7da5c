"""What the New-run page shows about a data file before any run: its detected file format and record layout, the
columns, the label counts and a few rows (read by tuneforge's own readers); and the full data report a run would
write (the task's data step: read, clean, split, leakage check, token lengths)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tuneforge.errors import DataError, UserError
from tuneforge.ui.workspace import OFFLINE_PREFIX, Workspace

SAMPLE_ROWS = 5


def data_path(workspace: Workspace, text: str) -> str:
    """A data.path from the page: an offline dataset name as it is, else a file or folder inside the workspace."""
    text = (text or "").strip()
    if text.startswith(OFFLINE_PREFIX):
        return text
    return str(workspace.inside(text, "data.path"))


def preview(workspace: Workspace, path_text: str, label_column: str = "label",
            columns: dict[str, str] | None = None) -> dict[str, Any]:
    """Format, layout, columns, label counts and sample rows of a data file (a problem: one line, raised)."""
    from tuneforge.packages import resolve_data_path

    from tuneforge.data.ner import CONLL_SUFFIXES

    path = Path(resolve_data_path(data_path(workspace, path_text)))
    if path.is_file() and path.suffix.lower() in CONLL_SUFFIXES:
        return _conll_preview(path)
    from tuneforge.data.sources import load_records

    records, file_format, bad = load_records(path, on_bad_rows="skip")
    keys = list(dict.fromkeys(key for record in records[:50] for key in record.fields))
    facts: dict[str, Any] = {"file format": file_format, "records": len(records), "layout": _layout(records[0].fields,
                                                                                                   columns or {}),
                             "columns": keys, "bad rows": len(bad)}
    if file_format == "folder":  # <label>/*.txt: the folder names are the labels
        from tuneforge.data.sources import load_rows

        counts = Counter(_label(row.label) for row in load_rows(path, "folder").rows)
        facts["layout"] = "labelled (a folder of texts per label; raw text for causal-lm)"
        facts["label counts"] = dict(counts.most_common())
    elif label_column in keys:
        counts = Counter(_label(r.fields.get(label_column)) for r in records)
        facts["label counts"] = dict(counts.most_common())
    facts["sample"] = [{key: _short(record.fields.get(key)) for key in keys} for record in records[:SAMPLE_ROWS]]
    return facts


def _layout(fields: dict[str, Any], columns: dict[str, str]) -> str:
    """The record layout tuneforge would detect (data.dataset_format: auto)."""
    from tuneforge.data import formats, preference

    try:
        return formats.detect(fields, columns)
    except DataError:  # chosen/rejected: preference pairs
        try:
            return preference.detect(fields, columns)
        except DataError as exc:
            return str(exc)


def _conll_preview(path: Path) -> dict[str, Any]:
    from tuneforge.data.ner import read_conll

    sentences, _ = read_conll(path)
    tags = Counter(tag for sentence in sentences for tag in sentence.tags)
    return {"file format": "conll (token<TAB>tag)", "records": len(sentences), "layout": "tagged tokens",
            "columns": ["tokens", "tags"], "label counts": dict(tags.most_common()),
            "sample": [{"tokens": _short(" ".join(s.tokens)), "tags": _short(" ".join(s.tags))}
                       for s in sentences[:SAMPLE_ROWS]]}


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "(empty)" if value is None or value == "" else str(value)


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def data_report(config: Any) -> tuple[str, dict[str, Any]]:
    """The console's data line and ``data_report.json`` that ``tuneforge train`` would write for ``config`` (the
    task's own data step, with the model's tokenizer); nothing is written."""
    from tuneforge.pipelines.finetune import read_inputs
    from tuneforge.tasks.registry import task_spec

    try:
        prepared = read_inputs(task_spec(config.model.task), config).data
    except (OSError, ValueError) as exc:  # UserError passes: it is already one line
        raise UserError(f"data.path {config.data.path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") \
            from None
    return prepared.summary, prepared.report
