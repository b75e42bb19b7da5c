from __future__ import annotations

import json

import pytest

from tuneforge.data.sources import load_rows
from tuneforge.errors import DataError

ROWS = [{"text": "first text, with a comma", "label": "a"}, {"text": "second \"quoted\" text", "label": "b"},
        {"text": "third", "label": "a"}]


def as_pairs(loaded):
    return [(row.text, row.label) for row in loaded.rows]


EXPECTED = [(r["text"], r["label"]) for r in ROWS]


def test_csv(tmp_path):
    import csv

    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows({"id": i, **r} for i, r in enumerate(ROWS))
    loaded = load_rows(path)
    assert loaded.format == "csv" and as_pairs(loaded) == EXPECTED
    assert loaded.rows[0].where == f"{path}:2"


def test_tsv_and_column_mapping(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("body\ttopic\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS))
    assert as_pairs(load_rows(path, text_column="body", label_column="topic")) == EXPECTED


def test_json_array_and_wrapped(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS))
    assert as_pairs(load_rows(path)) == EXPECTED
    path.write_text(json.dumps({"data": ROWS}))
    assert as_pairs(load_rows(path)) == EXPECTED


def test_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    assert as_pairs(load_rows(path)) == EXPECTED


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert as_pairs(load_rows(path)) == EXPECTED


def test_folder_of_label_dirs(tmp_path):
    for i, row in enumerate(ROWS):
        (tmp_path / row["label"]).mkdir(exist_ok=True)
        (tmp_path / row["label"] / f"{i}.txt").write_text(row["text"])
    assert sorted(as_pairs(load_rows(tmp_path))) == sorted(EXPECTED)


def test_saved_hf_dataset_with_classlabel(tmp_path):
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    dataset = datasets.Dataset.from_list([{"text": r["text"], "label": r["label"]} for r in ROWS], features=features)
    datasets.DatasetDict({"train": dataset.select([0, 1]), "test": dataset.select([2])}).save_to_disk(tmp_path / "hf")
    loaded = load_rows(tmp_path / "hf")
    assert loaded.format == "hf" and as_pairs(loaded) == EXPECTED
    assert as_pairs(load_rows(tmp_path / "hf", hf_split="test")) == [EXPECTED[2]]


def test_malformed_csv_row_names_file_and_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\ngood,a\nbad,b,extra\nfine,b\n")
    with pytest.raises(DataError, match=rf"{path}:3: 3 fields, the header has 2"):
        load_rows(path)
    loaded = load_rows(path, on_bad_rows="skip")
    assert as_pairs(loaded) == [("good", "a"), ("fine", "b")]
    assert loaded.bad_rows == [f"{path}:3: 3 fields, the header has 2 (quote fields that contain the delimiter)"]


def test_multiline_quoted_csv_keeps_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\nnext,b,oops\n')
    with pytest.raises(DataError, match=rf"{path}:4:"):
        load_rows(path)


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", \n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        load_rows(path)
    loaded = load_rows(path, on_bad_rows="skip")
    assert len(loaded.rows) == 1 and [b.split(": ")[0] for b in loaded.bad_rows] == [f"{path}:2", f"{path}:3"]


def test_malformed_json_file_names_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"text": "a", "label": "x"},\n {"text": }\n]')
    with pytest.raises(DataError, match=rf"{path}:3: not valid JSON"):
        load_rows(path)


def test_missing_column_lists_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\nhi,a\n")
    with pytest.raises(DataError, match=r"no column 'text' \(columns found: sentence, label; set data.text_column\)"):
        load_rows(path)


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nok,a\ncaf\xe9,b\n")
    with pytest.raises(DataError, match=rf"{path}:3: not valid UTF-8"):
        load_rows(path)


def test_missing_path_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="data path not found"):
        load_rows(tmp_path / "nope.csv")
    (tmp_path / "d.xlsx").write_text("")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_rows(tmp_path / "d.xlsx")


def test_offline_dataset_short_name():
    loaded = load_rows("offline:bbc-news")
    assert loaded.format == "folder" and len(loaded.rows) == 2225
    assert {row.label for row in loaded.rows} == {"business", "entertainment", "politics", "sports", "tech"}


def test_every_csv_line_is_accounted_for_when_a_quote_is_left_open(tmp_path):
    # line 42 opens a quote that is never closed on its line: the reader takes lines 42-45 as one row (up to the
    # quote that ends line 45). That is valid CSV, so it is kept, but it names its four lines, the line count adds
    # up, and a warning says that lines inside it look like rows of their own
    lines = ["text,label"] + [f"row {n} text,{'pos' if n % 3 else 'neg'}" for n in range(2, 81)]
    lines[41] = '"an unclosed quote on line 42,pos'
    lines[44] = 'line 45 ends the quote",neg'
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_rows(path)
    assert [row.where for row in loaded.rows] == [f"{path}:{n}" for n in range(2, 42)] + [f"{path}:42-45"] + \
        [f"{path}:{n}" for n in range(46, 81)]
    assert loaded.lines == {"total": 80, "header": 1, "blank": 0, "in_kept_rows": 79, "in_dropped_rows": 0}
    assert loaded.warnings == [f"{path}:42-45 were read as one row, and 2 of its lines look like rows of their own: "
                               f"is a quote on line 42 left open? (the row is kept)"]
    # the same row made malformed (three fields on its last line) is dropped naming all four lines
    lines[44] = 'line 45 ends the quote",neg,extra'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^{path}:42-45: 3 fields, the header has 2 .*lines 42-45 were read as one "
                                        rf"row: is a quote on line 42 left open\?"):
        load_rows(path)
    loaded = load_rows(path, on_bad_rows="skip")
    assert [row.where for row in loaded.rows] == [f"{path}:{n}" for n in range(2, 81) if not 42 <= n <= 45]
    assert len(loaded.bad_rows) == 1 and loaded.bad_rows[0].startswith(f"{path}:42-45: ")
    assert loaded.lines == {"total": 80, "header": 1, "blank": 0, "in_kept_rows": 75, "in_dropped_rows": 4}


def test_csv_line_accounting_with_blank_lines_and_multiline_fields(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\n\nnext,b,oops\nlast,b\n')
    loaded = load_rows(path, on_bad_rows="skip")
    assert [row.where for row in loaded.rows] == [f"{path}:2-3", f"{path}:6"]
    assert loaded.lines == {"total": 6, "header": 1, "blank": 1, "in_kept_rows": 3, "in_dropped_rows": 1}
    assert loaded.warnings == []  # an ordinary two-line field is not suspicious


def test_integral_labels_are_one_class_however_written(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,2\nb,2.0\nc,1.50\nd,-3.00\n")
    assert [row.label for row in load_rows(path).rows] == ["2", "2", "1.50", "-3"]
