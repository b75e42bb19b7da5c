"""Augmentation in each kind of data step: tagged words keep their entities, generative copies change prompts only,
and a classification run with a back-translation round trip (through a decoder) and the label filter (a probe)."""

from __future__ import annotations

import json

from conftest import make_chat_rows, tiny_config, write_conll, write_jsonl
from tuneforge.config.schema import DataConfig


def test_ner_copies_reach_the_training_split_only_with_their_entities(tmp_path):
    from tuneforge.data.ner import prepare_ner

    path = write_conll(tmp_path / "ner.txt", count=100)
    data = prepare_ner(DataConfig(path=str(path), augment={"operations": ["swap", "delete"], "copies": 2,
                                                           "rate": 0.3}), seed=0)
    report = data.report["augmentation"]
    originals = [s for s in data.splits["train"] if "#aug" not in s.where]
    copies = [s for s in data.splits["train"] if "#aug" in s.where]
    assert len(copies) == sum(report["copies_made"].values()) > len(originals)
    assert not any("#aug" in s.where for part in ("validation", "test") for s in data.splits[part])
    by_where = {s.where: s for s in originals}
    for copy in copies:
        source = by_where[copy.where.split("#")[0]]
        assert [(t, g) for t, g in zip(copy.tokens, copy.tags) if g != "O"] == \
            [(t, g) for t, g in zip(source.tokens, source.tags) if g != "O"]
    assert data.report["rows_kept"] == len(originals) + len(data.splits["validation"]) + len(data.splits["test"])
    assert data.report["leakage"]["augmented_copies_only_in"] == "train"


def test_generative_copies_change_prompts_not_answers(tmp_path):
    from tuneforge.data.generative import prepare_generative

    path = write_jsonl(tmp_path / "chat.jsonl", make_chat_rows(60))
    data = prepare_generative(DataConfig(path=str(path), augment={"operations": ["swap"], "copies": 1,
                                                                  "rate": 0.4}), seed=0)
    train = data.splits["train"]
    by_where = {e.where: e for e in train if "#aug" not in e.where}
    copies = [e for e in train if "#aug" in e.where]
    assert copies and data.report["augmentation"]["copies_made"]["swap"] == len(copies)
    for copy in copies:
        source = by_where[copy.where.split("#")[0]]
        assert copy.reference == source.reference and copy.messages[0]["content"] != source.messages[0]["content"]
    assert not any("#aug" in e.where for part in ("validation", "test") for e in data.splits[part])


def test_a_run_with_back_translation_and_the_probe_filter(tiny_bert, tiny_llama, tiny_csv, tmp_path):
    """The round trip goes through a (tiny, random) decoder: most of its translations are rejected by the length
    ratio or the probe, and each rejection is counted; the run trains on what is left."""
    from tuneforge.config.loader import load_config
    from tuneforge.pipelines.finetune import finetune

    config = tiny_config(tiny_bert, tiny_csv, tracking={"enabled": False}, train={"epochs": 2},
                         evaluation={"baselines": ["majority"]})
    config["data"]["augment"] = {"operations": ["swap", "back_translation"], "copies": 2, "keep_label": "probe",
                                 "back_translation": {"model": tiny_llama, "max_new_tokens": 12, "batch_size": 16}}
    result = finetune(load_config(config), output=tmp_path / "run", log=lambda _: None)
    report = json.loads((result.run_dir / "data_report.json").read_text())["augmentation"]
    made = sum(report["copies_made"].values())
    dropped = sum(report["copies_unchanged_dropped"].values()) + sum(
        sum(counts.values()) for counts in report["copies_rejected"].values())
    assert made + dropped == 2 * 84  # every planned copy is kept or counted (84 training rows of 120, 2 copies)
    assert set(report["copies_rejected"]) <= {"length_ratio", "label_changed"} and report["copies_made"]["swap"] > 0
    assert "id='augmentation'" in (result.run_dir / "report.html").read_text()
