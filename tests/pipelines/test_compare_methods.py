"""compare-methods runs the same task with each method in its own process and tabulates real measurements."""

from __future__ import annotations

import json

from conftest import tiny_config
from tuneforge.cli import main


def test_compare_methods_measures_each_method(tiny_bert, tiny_csv, tmp_path, capsys):
    import yaml

    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 2}, tracking={"enabled": False},
                         evaluation={"baselines": ["majority"]})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["compare-methods", str(path), "--methods", "full,lora,nope-not-a-method",
                 "--output", str(tmp_path / "cmp")]) == 2  # an unknown method fails before any run
    assert main(["compare-methods", str(path), "--methods", "full,lora", "--output", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "Methods compared" in out and "compare.html" in out
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    full, lora = result["runs"]
    assert result["metric"] == "macro_f1" and [full["method"], lora["method"]] == ["full", "lora"]
    assert lora["trainable_params"] < full["trainable_params"] == full["total_params"]
    for row in (full, lora):
        assert row["peak_memory_mib"] > 100 and row["wall_seconds"] > row["train_seconds"] > 0
        low, high = row["macro_f1_ci"]
        assert low <= row["macro_f1"] <= high
        saved = json.loads((tmp_path / "cmp" / row["method"] / "run" / "metrics.json").read_text())
        assert saved["test"]["finetuned"]["macro_f1"] == row["macro_f1"]
    assert "id='methods'" in (tmp_path / "cmp" / "compare.html").read_text()
