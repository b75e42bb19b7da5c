from __future__ import annotations

from collections import Counter

import pytest

from tuneforge.config.schema import CleanConfig, DataConfig, SplitConfig
from tuneforge.data.cleaning import clean_rows, clean_text
from tuneforge.data.prepare import prepare_data
from tuneforge.data.sources import Row
from tuneforge.data.splitting import check_labels, overlap_counts, remove_leakage, stratified_split
from tuneforge.errors import DataError

from conftest import make_rows

LONG = ("the committee met on tuesday to discuss the new budget for the regional transport network and agreed "
        "to fund three new bus routes across the northern districts starting next spring")


def rows(*pairs):
    return [Row(text=t, label=l, where=f"f.csv:{i + 2}") for i, (t, l) in enumerate(pairs)]


def test_clean_text_repairs_mojibake_controls_and_whitespace():
    text, changed = clean_text("CafÃ© \x00  opens\u200b\n\nsoon ", CleanConfig())
    assert text == "Café opens soon"
    assert changed == ["unicode_repaired", "control_characters_removed", "whitespace_normalized"]


def test_each_cleaning_step_is_counted():
    data = rows(
        ("Good text one", "a"),
        ("Good text one", "a"),            # exact duplicate
        ("good TEXT one!!", "a"),          # near duplicate: same words
        ("Good text one", "b"),            # exact duplicate with another label
        ("   ", "a"),                      # empty
        ("no label here", None),           # missing label
        (LONG, "b"),
        (LONG.replace("three", "four"), "b"),  # near duplicate: Jaccard of 3-grams >= 0.9
        ("Something else entirely", "b"),
    )
    result = clean_rows(data, CleanConfig(near_threshold=0.8))
    assert [r.text for r in result.rows] == ["Good text one", LONG, "Something else entirely"]
    assert result.dropped == Counter({"exact_duplicate": 1, "near_duplicate": 2, "empty_text": 1,
                                      "missing_label": 1, "exact_duplicate_conflicting_label": 1})
    assert result.examples["exact_duplicate"] == ["f.csv:3 (same as f.csv:2)"]
    assert len(result.rows) + sum(result.dropped.values()) == len(data)


def test_cleaning_steps_can_be_switched_off():
    data = rows(("Same", "a"), ("Same", "a"), ("same!", "a"))
    config = CleanConfig(dedup_exact=False, dedup_near=False)
    assert len(clean_rows(data, config).rows) == 3


def test_minhash_keeps_distinct_texts():
    data = [Row(text=r["text"], label=r["label"], where=str(i)) for i, r in enumerate(make_rows(40))]
    assert len(clean_rows(data, CleanConfig()).rows) == len(data)


def labelled(n_per_class: dict[str, int]):
    return [Row(text=f"{label} example number {i}", label=label, where=str(i))
            for label, n in n_per_class.items() for i in range(n)]


def test_stratified_split_proportions_and_seed():
    data = labelled({"a": 100, "b": 40, "c": 10})
    split = SplitConfig(train=0.7, validation=0.15, test=0.15)
    parts = stratified_split(data, split, seed=1)
    for name, share in (("train", 0.7), ("validation", 0.15), ("test", 0.15)):
        counts = Counter(r.label for r in parts[name])
        for label, n in (("a", 100), ("b", 40), ("c", 10)):
            assert abs(counts[label] - n * share) <= 1, (name, label, counts)
    again = stratified_split(list(reversed(data)), split, seed=1)
    assert {n: sorted(r.text for r in p) for n, p in parts.items()} == \
           {n: sorted(r.text for r in p) for n, p in again.items()}
    other = stratified_split(data, split, seed=2)
    assert sorted(r.text for r in other["test"]) != sorted(r.text for r in parts["test"])
    assert sum(len(p) for p in parts.values()) == len(data)


def test_leakage_is_removed_and_counted():
    data = rows(*[(f"text {i}", "ab"[i % 2]) for i in range(40)], *[("Copy here", "a"), ("copy HERE", "b")] * 5)
    parts = stratified_split(data, SplitConfig(), seed=0)
    assert sum(overlap_counts(parts).values()) > 0
    removed = remove_leakage(parts)
    assert sum(removed.values()) > 0
    assert overlap_counts(parts) == {"train&validation": 0, "train&test": 0, "validation&test": 0}


def test_single_class_and_rare_class_errors():
    with pytest.raises(DataError, match="need at least 2 classes"):
        check_labels(labelled({"a": 10}), SplitConfig(), 0)
    with pytest.raises(DataError, match=r"too few examples to split into 3 parts: 'rare' \(2\).*min_examples_per_class=3"):
        check_labels(labelled({"a": 10, "b": 10, "rare": 2}), SplitConfig(), 0)
    kept, dropped = check_labels(labelled({"a": 10, "b": 10, "rare": 2}), SplitConfig(), 3)
    assert dropped == {"rare": 2} and len(kept) == 20


def test_prepare_data_accounts_for_every_row(tmp_path):
    path = tmp_path / "d.csv"
    lines = ["text,label"] + [f"{r['text']},{r['label']}" for r in make_rows(20)]
    lines += [lines[1], "  ,sport", "orphan,", "x,y,z"]  # duplicate, empty, missing label, malformed
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"{path}:65: 3 fields"):
        prepare_data(DataConfig(path=str(path)), seed=0)
    data = prepare_data(DataConfig(path=str(path), on_bad_rows="skip"), seed=0)
    report = data.report
    assert report["source"]["rows_read"] == 64
    assert report["cleaning"]["dropped"] == {"exact_duplicate": 1, "empty_text": 1, "missing_label": 1,
                                             "malformed_row": 1}
    assert report["rows_kept"] == 60 == sum(s["rows"] for s in report["splits"].values())
    assert report["leakage"]["overlapping_texts"] == {"train&validation": 0, "train&test": 0, "validation&test": 0}
    assert data.labels == ["food", "sport", "tech"]
