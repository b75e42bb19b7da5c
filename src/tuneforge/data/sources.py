"""Read labelled text from csv, json, jsonl, parquet, a folder of <label>/*.txt, or a saved HF dataset.

Every row keeps where it came from (``file:line``) so that a problem can be named precisely. A malformed row
stops the load with that location, or, with ``on_bad_rows: skip``, is dropped and counted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tuneforge.errors import DataError
from tuneforge.packages import resolve_data_path

FORMATS_BY_SUFFIX = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
                     ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Row:
    text: str | None
    label: str | None
    where: str
    columns: dict[str, Any] = field(default_factory=dict)  # the record's other scalar fields (slices, fairness)


@dataclass
class Loaded:
    rows: list[Row]
    format: str
    bad_rows: list[str] = field(default_factory=list)  # "file:line: problem" for each skipped row
    lines: dict[str, int] = field(default_factory=dict)  # CSV: total = header + blank + in kept + in dropped rows
    warnings: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or \
                (path / "state.json").exists():
            return "hf"
        return "folder"
    fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot tell the format from the suffix {path.suffix!r} "
                        f"(use .csv/.json/.jsonl/.parquet, a folder, or set data.format)")
    return fmt


def load_rows(path: str | Path, fmt: str = "auto", text_column: str = "text", label_column: str = "label",
              on_bad_rows: str = "error", hf_split: str | None = None) -> Loaded:
    """Read every row of a data source into :class:`Row` objects (text and label as strings or None)."""
    path = Path(resolve_data_path(str(path))).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data path not found (set data.path to a file or folder)")
    fmt = detect_format(path) if fmt == "auto" else fmt
    reader = _Reader(path, text_column, label_column, on_bad_rows)
    if fmt == "folder":
        rows = list(reader.folder())
    elif fmt == "hf":
        rows = list(reader.records(_hf_records(path, hf_split, label_column), "row"))
    elif fmt == "csv":
        rows = list(reader.csv())
    elif fmt == "jsonl":
        rows = list(reader.jsonl())
    elif fmt == "json":
        rows = list(reader.records(_json_records(path), "record"))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        rows = list(reader.records(enumerate(pq.read_table(path).to_pylist(), start=1), "row"))
    else:
        raise DataError(f"data.format {fmt!r} is not supported")
    if not rows:
        raise DataError(f"{path}: no rows found")
    return Loaded(rows=rows, format=fmt, bad_rows=reader.bad, lines=reader.lines, warnings=reader.warnings)


@dataclass
class Record:
    """One record of a generative dataset, its fields as read (strings, lists, objects)."""

    fields: dict[str, Any]
    where: str


def load_records(path: str | Path, fmt: str = "auto", on_bad_rows: str = "error",
                 hf_split: str | None = None) -> tuple[list[Record], str, list[str]]:
    """Every record of a data source with its location; a folder holds documents (``**/*.txt``, field ``text``).
    Returns (records, file format, bad rows)."""
    path = Path(resolve_data_path(str(path))).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data path not found (set data.path to a file or folder)")
    fmt = detect_format(path) if fmt == "auto" else fmt
    reader = _RecordReader(path, "", "", on_bad_rows)
    if fmt == "folder":
        records = [Record({"text": _read_text_file(file)}, str(file)) for file in sorted(path.rglob("*.txt"))]
    elif fmt == "hf":
        records = list(reader.records(_hf_records(path, hf_split, ""), "row"))
    elif fmt in ("csv", "jsonl"):
        records = list(getattr(reader, fmt)())
    elif fmt == "json":
        records = list(reader.records(_json_records(path), "record"))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        records = list(reader.records(enumerate(pq.read_table(path).to_pylist(), start=1), "row"))
    else:
        raise DataError(f"data.format {fmt!r} is not supported")
    if not records:
        raise DataError(f"{path}: no records found")
    return records, fmt, reader.bad


def _read_text_file(file: Path) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # repaired by cleaning (ftfy)


class _Reader:
    def __init__(self, path: Path, text_column: str, label_column: str, on_bad_rows: str):
        self.path, self.text_column, self.label_column = path, text_column, label_column
        self.skip = on_bad_rows == "skip"
        self.bad: list[str] = []
        self.lines: dict[str, int] = {}  # line-based formats: where every physical line went
        self.warnings: list[str] = []
        self.columns_checked = False

    def reject(self, where: str, problem: str) -> None:
        if not self.skip:
            raise DataError(f"{where}: {problem} (fix the row, or set data.on_bad_rows=skip to drop and count it)")
        self.bad.append(f"{where}: {problem}")

    def check_columns(self, keys: list[str], where: str) -> None:
        if self.columns_checked:
            return
        for role, column in (("text_column", self.text_column), ("label_column", self.label_column)):
            if column not in keys:
                raise DataError(f"{where}: no column {column!r} (columns found: {', '.join(map(str, keys))}; "
                                f"set data.{role})")
        self.columns_checked = True

    def row(self, record: dict[str, Any], where: str) -> Row:
        return Row(text=_as_text(record.get(self.text_column)), label=_as_label(record.get(self.label_column)),
                   where=where, columns=_other_columns(record, (self.text_column, self.label_column)))

    def csv(self) -> Iterator[Row]:
        """Rows of a CSV/TSV file. Every physical line is accounted for in ``self.lines``: the header, blank lines,
        lines of kept rows and lines of dropped rows (a quoted field may span lines; an unclosed quote swallows the
        lines up to the next quote, and a dropped row names all of them)."""
        text = _read_utf8(self.path)
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        physical = list(io.StringIO(text, newline=""))  # lines split as the csv reader splits them
        self.lines = {"total": len(physical), "header": 0, "blank": 0, "in_kept_rows": 0, "in_dropped_rows": 0}
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{self.path}:1: malformed CSV header ({exc})") from None
        self.lines["header"] = reader.line_num
        self.check_columns(header, f"{self.path}:1")
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self._drop(start, max(reader.line_num, start), f"malformed CSV ({exc})")
                continue
            end = max(reader.line_num, start)
            if not values:
                self.lines["blank"] += 1
                continue  # a blank line is not a row
            if len(values) != len(header):
                self._drop(start, end, f"{len(values)} fields, the header has {len(header)} (quote fields that "
                           f"contain the delimiter)")
                continue
            self.lines["in_kept_rows"] += end - start + 1
            if end > start:
                self._check_span(physical[start:end - 1], start, end, len(header), delimiter)
            yield self.row(dict(zip(header, values)), f"{self.path}:{start}" if end == start
                           else f"{self.path}:{start}-{end}")

    def _check_span(self, middle: list[str], start: int, end: int, width: int, delimiter: str) -> None:
        """A quoted field may hold line breaks; but when lines inside it would each be a full row on their own, a
        quote was probably left open and rows were swallowed: say so (the row is valid CSV, so it is kept)."""
        rowlike = sum(1 for line in middle if len(next(csv.reader([line], delimiter=delimiter), [])) == width)
        if rowlike:
            self.warnings.append(f"{self.path}:{start}-{end} were read as one row, and {rowlike} of its lines look "
                                 f"like rows of their own: is a quote on line {start} left open? (the row is kept)")

    def _drop(self, start: int, end: int, problem: str) -> None:
        """Reject the row on lines ``start``..``end``; a row read across lines says so (an unclosed quote?)."""
        if end > start:
            problem += f"; lines {start}-{end} were read as one row: is a quote on line {start} left open?"
        self.reject(f"{self.path}:{start}" if end == start else f"{self.path}:{start}-{end}", problem)
        self.lines["in_dropped_rows"] += end - start + 1

    def jsonl(self) -> Iterator[Row]:
        for number, line in enumerate(_read_utf8(self.path).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{self.path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                self.reject(where, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                self.reject(where, f"expected a JSON object per line, got {type(record).__name__}")
                continue
            self.check_columns(list(record), where)
            yield self.row(record, where)

    def records(self, numbered: Iterator[tuple[int, Any]], unit: str) -> Iterator[Row]:
        for number, record in numbered:
            where = f"{self.path}:{unit} {number}"
            if not isinstance(record, dict):
                self.reject(where, f"expected an object with fields, got {type(record).__name__}")
                continue
            self.check_columns(list(record), where)
            yield self.row(record, where)

    def folder(self) -> Iterator[Row]:
        label_dirs = sorted(p for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not label_dirs:
            raise DataError(f"{self.path}: a folder dataset needs one sub-folder per label holding .txt files")
        for label_dir in label_dirs:
            for file in sorted(label_dir.glob("*.txt")):
                yield Row(text=_read_text_file(file), label=label_dir.name, where=str(file))


class _RecordReader(_Reader):
    """The same line-numbered reading, keeping whole records (the format decides which keys matter)."""

    def check_columns(self, keys: list[str], where: str) -> None:
        return None

    def row(self, record: dict[str, Any], where: str) -> Record:  # type: ignore[override]
        return Record(dict(record), where)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (re-save the file as UTF-8)") from None


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(_read_utf8(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                        f"for one object per line use .jsonl") from None
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON array of records (or an object with one list of records)")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records")
    return enumerate(data, start=1)


def _hf_records(path: Path, split: str | None, label_column: str) -> Iterator[tuple[int, Any]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            if split not in loaded:
                raise DataError(f"{path}: no split {split!r} (splits: {', '.join(loaded)}; set data.hf_split)")
            parts = [loaded[split]]
        else:
            parts = list(loaded.values())
    else:
        parts = [loaded]
    number = 0
    for part in parts:
        names = getattr(part.features.get(label_column), "names", None)  # ClassLabel ids -> names
        for record in part:
            number += 1
            value = record.get(label_column)
            if names is not None and isinstance(value, int) and value >= 0:
                record = {**record, label_column: names[value]}
            yield number, record


def _other_columns(record: dict[str, Any], taken: tuple[str, ...]) -> dict[str, Any]:
    """A record's scalar fields besides text and label (metadata such as source or a sensitive attribute)."""
    return {key: value for key, value in record.items()
            if key not in taken and (value is None or isinstance(value, (str, int, float, bool)))}


def _as_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _as_label(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    label = str(value).strip()
    if INTEGRAL.match(label):  # "2.0" is the class 2, as a float 2.0 is (one class, not two)
        label = label[:label.index(".")]
    return label or None


INTEGRAL = re.compile(r"^-?\d+\.0+$")
