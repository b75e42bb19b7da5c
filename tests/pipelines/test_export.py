"""tuneforge export: merged models are standalone HF models whose outputs equal the adapter's; methods with
nothing to merge are refused with a clear line; without --merge the adapter folder is copied."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_config
from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.pipelines.finetune import finetune


@pytest.fixture(scope="module")
def lora_run(tiny_bert, tiny_csv, tmp_path_factory):
    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 2}, tracking={"enabled": False},
                         method={"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "use_dora": True})
    return finetune(load_config(config), output=tmp_path_factory.mktemp("export") / "run", log=lambda _: None).run_dir


def test_merged_lora_is_a_standalone_model_with_the_same_predictions(lora_run, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.pipelines.predict import load_predictor

    assert main(["export", str(lora_run), "--merge", "--output", str(tmp_path / "merged")]) == 0
    assert "merged lora" in capsys.readouterr().out
    facts = json.loads((tmp_path / "merged" / "export.json").read_text())
    assert facts["merged"] and facts["max_abs_logit_difference"] <= facts["tolerance"] == 1e-4
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()  # no peft needed
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    texts = ["match goal team coach", "software chip phone", "bread cheese soup"]
    with torch.no_grad():
        logits = merged(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    adapter = load_predictor(lora_run).predict(texts)
    assert [merged.config.id2label[int(i)] for i in logits.argmax(-1)] == [p["label"] for p in adapter]
    standalone = load_predictor(tmp_path / "merged").predict(texts)
    for a, b in zip(standalone, adapter):
        assert a["label"] == b["label"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)


def test_export_without_merge_copies_and_unmergeable_methods_are_refused(lora_run, tmp_path, capsys):
    assert main(["export", str(lora_run), "--output", str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "adapter_config.json").exists()
    meta_path = tmp_path / "copy" / "tuneforge.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "method": "prefix"}))
    assert main(["export", str(tmp_path / "copy"), "--merge", "--output", str(tmp_path / "x")]) == 2
    assert "method prefix has nothing to merge" in capsys.readouterr().err
