"""Slices of the test split (evaluation.slices): by metadata column values, by sensitive attributes, by true label,
by text length in words, and by named boolean expressions over a row's columns. Each slice is the list of its rows'
positions in the split; the evaluation scores every model on each of them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.config.expression import evaluate, names_in, parse_expression
from tuneforge.errors import DataError

BUILT_IN = ("text", "label", "words", "chars")  # names an expression may use besides the data's columns
MISSING = "(missing)"
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass(frozen=True)
class Slice:
    name: str  # "source=web", "label=sport", "words 50-199", or the name given in evaluation.slices.where
    kind: str  # column | sensitive | label | length | where
    rows: np.ndarray  # positions in the split


def check_slice_columns(rows: list[Any], settings: Any, source: str, labels: list[str]) -> None:
    """Before training: every column the slices name exists in the data, every name an expression uses is a column
    or one of ``BUILT_IN``, and the fairness positive label is a label; else one line naming the setting and what
    there is."""
    if settings.positive_label is not None and settings.positive_label not in labels:
        raise DataError(f"evaluation.slices.positive_label: {settings.positive_label!r} is not a label of {source} "
                        f"(labels: {', '.join(labels)})")
    found = sorted({key for row in rows for key in row.columns})
    listed = ", ".join(found) or "none besides text and label"
    for setting in ("columns", "sensitive"):
        for column in getattr(settings, setting):
            if column not in found:
                raise DataError(f"{source}: no column {column!r} for evaluation.slices.{setting} (columns found: "
                                f"{listed})")
    for name, text in settings.where.items():
        unknown = sorted(names_in(parse_expression(text, name)) - set(found) - set(BUILT_IN))
        if unknown:
            raise DataError(f"evaluation.slices.where.{name}: {', '.join(unknown)} is not a column of {source} "
                            f"(columns: {listed}; also {', '.join(BUILT_IN)})")


def define_slices(rows: list[Any], settings: Any) -> list[Slice]:
    """The slices of ``rows`` (a split's rows, each with text, label and columns) that ``settings`` asks for, in
    order: columns, sensitive columns, labels, length buckets, expressions. Empty slices are left out."""
    slices: list[Slice] = []
    for kind, columns in (("column", settings.columns), ("sensitive", settings.sensitive)):
        for column in columns:
            slices += _by_value([_shown(row.columns.get(column)) for row in rows], f"{column}=", kind)
    if settings.by_label:
        slices += _by_value([str(row.label) for row in rows], "label=", "label")
    if settings.length_buckets is not None:
        slices += length_slices([len((row.text or "").split()) for row in rows], settings.length_buckets)
    for name, text in settings.where.items():
        tree = parse_expression(text, name)
        chosen = np.asarray([i for i, row in enumerate(rows) if evaluate(tree, row_values(row))], dtype=int)
        slices.append(Slice(name, "where", chosen))
    return [s for s in slices if len(s.rows)]


def group_values(rows: list[Any], column: str) -> list[str]:
    """Each row's value of a sensitive column, as the group it belongs to."""
    return [_shown(row.columns.get(column)) for row in rows]


def length_slices(words: list[int], edges: list[int] | str) -> list[Slice]:
    """Buckets of text length in words: explicit ascending edges, or ``auto``: the split's terciles."""
    counts = np.asarray(words)
    if edges == "auto":
        edges = sorted({int(np.percentile(counts, q)) for q in (100 / 3, 200 / 3)} - {0}) if len(counts) else []
    bounds = [0, *edges, None]
    out = []
    for low, high in zip(bounds, bounds[1:]):
        inside = (counts >= low) & (counts < high if high is not None else True)
        name = f"words < {high}" if low == 0 else f"words >= {low}" if high is None else f"words {low}-{high - 1}"
        out.append(Slice(name, "length", np.flatnonzero(inside)))
    return out


def row_values(row: Any) -> dict[str, Any]:
    """What an expression sees of a row: its columns (numbers written as text read as numbers), text, label, and
    its length in words and characters."""
    values = {key: _number(value) for key, value in row.columns.items()}
    text = row.text or ""
    return {**values, "text": text, "label": str(row.label), "words": len(text.split()), "chars": len(text)}


def _by_value(values: list[str], prefix: str, kind: str) -> list[Slice]:
    array = np.asarray(values, dtype=object)
    return [Slice(f"{prefix}{value}", kind, np.flatnonzero(array == value)) for value in sorted(set(values))]


def _shown(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return MISSING
    return str(value).strip()


def _number(value: Any) -> Any:
    if isinstance(value, str) and NUMBER.match(value.strip()):
        return float(value) if "." in value else int(value)
    return value
