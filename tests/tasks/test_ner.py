"""Token classification (NER): CoNLL loading with line numbers, BIO repair, entity-level metrics as seqeval
counts them, the memorization baseline, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_config, write_conll
from tuneforge.config import load_config
from tuneforge.config.schema import DataConfig
from tuneforge.data.ner import prepare_ner, read_conll, repair_bio
from tuneforge.errors import DataError
from tuneforge.evaluation.metrics import bootstrap_indices
from tuneforge.evaluation.ner_metrics import entities, memorization_baseline, ner_metrics, paired_ner_difference

def test_entities_follow_seqeval_chunking():
    assert entities(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-MISC"]) == {
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("MISC", 5, 6)}
    assert entities(["I-PER", "I-PER", "O"]) == {("PER", 0, 2)}  # an I- that starts a chunk starts one
    assert repair_bio(["O", "I-PER", "I-PER", "I-LOC"]) == (["O", "B-PER", "I-PER", "B-LOC"], 2)


def test_entity_metrics_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "B-PER"]]
    result = ner_metrics(gold, pred, ["LOC", "PER"], bootstrap_indices(2, 200), 0.95)
    # gold: PER(0,2), LOC(3,4), LOC(0,1) = 3; predicted: PER(0,2), LOC(0,1), PER(1,2) = 3; correct: 2
    assert result["entity_precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["entity_recall"] == pytest.approx(2 / 3, abs=1e-4) and result["entity_f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert result["token_accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    assert result["per_type"]["LOC"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    same = paired_ner_difference(gold, pred, pred, ["LOC", "PER"], bootstrap_indices(2, 100), 0.95)
    assert same["entity_f1"] == 0 and same["entity_f1_ci"] == [0, 0]


def test_memorization_baseline():
    predicted = memorization_baseline([["Alice", "ran"], ["alice", "sat"]], [["B-PER", "O"], ["B-PER", "O"]],
                                      [["ALICE", "flew"]])
    assert predicted == [["B-PER", "O"]]


def test_conll_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("John\tB-PER\nsmiles\n\nok\tO\n")
    sentences, bad = read_conll(path)
    assert len(sentences) == 2 and bad == [f"{path}:2: expected 'token<TAB>tag', got 'smiles'"]
    with pytest.raises(DataError, match=f"{path}:2: expected"):
        prepare_ner(DataConfig(path=str(path)), seed=0)
    good = tmp_path / "tags.txt"
    good.write_text("John\tPERSON\n")
    with pytest.raises(DataError, match="BIO"):
        prepare_ner(DataConfig(path=str(good)), seed=0)


def test_ner_split_has_no_leakage_and_counts_everything(tmp_path):
    path = write_conll(tmp_path / "ner.txt")
    path.write_text(path.read_text() + "\nalice\tB-person\nsmith\tI-person\n\nalice\tB-person\nsmith\tI-person\n")
    data = prepare_ner(DataConfig(path=str(path)), seed=0)
    texts = {name: {" ".join(s.tokens) for s in part} for name, part in data.splits.items()}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    assert data.report["rows_kept"] + data.report["cleaning"]["dropped_total"] == data.report["source"]["rows_read"]
    assert data.labels[0] == "O" and set(data.labels) == {"O", "B-loc", "B-person", "I-person"}


def test_tiny_ner_run_end_to_end(tiny_bert, tmp_path):
    path = write_conll(tmp_path / "ner.txt", count=150)
    config = tiny_config(tiny_bert, path, tracking={"enabled": False},
                         train={"epochs": 12, "early_stopping": {"metric": "entity_f1", "patience": 5}},
                         method={"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"})
    config["data"]["max_length"] = 24
    config["model"]["task"] = "token-classification"
    from tuneforge.pipelines.finetune import finetune

    config["train"]["num_threads"] = 1
    import torch

    torch.set_num_threads(2)
    try:
        result = finetune(load_config(config), output=tmp_path / "run", log=lambda _: None)
        assert torch.get_num_threads() == 1  # train.num_threads holds for every task
    finally:
        torch.set_num_threads(1)
    test = result.metrics["test"]
    assert set(test["finetuned"]["per_type"]) == {"loc", "person"}
    assert test["finetuned"]["entity_f1"] > 0.5, test["finetuned"]
    for figures in (test["finetuned"], test["baselines"]["memorization"]):
        low, high = figures["entity_f1_ci"]
        assert low <= figures["entity_f1"] <= high
    assert result.metrics["validation"]["best_metric"] is not None
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == test["finetuned"]["n"] and len(rows[0]["tokens"]) == len(rows[0]["predicted"])
    page = (result.run_dir / "report.html").read_text()
    assert "id='per_type'" in page and f"{test['finetuned']['entity_f1']:.4f}" in page
    assert np.isfinite(test["finetuned_minus_baseline"]["memorization"]["entity_f1"])
