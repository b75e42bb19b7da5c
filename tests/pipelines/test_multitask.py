"""Multi-task training: sampling weights shape every epoch; two label sets on one tiny encoder, a head each, both
learned, scored per task against its majority class, read back from the folder; bad sections are one line."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.data.mixing import epoch_counts, mix
from tuneforge.errors import ConfigError
from tuneforge.pipelines.multitask import multitask

from conftest import make_rows, tiny_config


def test_weights_share_each_epoch_and_repeat_every_row_before_any_twice():
    assert epoch_counts([10, 30], [1, 1]) == [20, 20]
    assert epoch_counts([10, 30], [1, 3]) == [10, 30]
    assert epoch_counts([7, 7, 7], [1, 1, 1]) == [7, 7, 7] and sum(epoch_counts([5, 8], [2, 1])) == 13
    small, large = [f"a{i}" for i in range(10)], [f"b{i}" for i in range(30)]
    mixed, counts = mix([small, large], [3, 1], seed=0)
    seen = Counter(mixed)
    assert counts == [30, 10] and len(mixed) == 40
    assert all(seen[row] == 3 for row in small)  # 30 draws of 10 rows: each exactly three times
    assert sum(seen[row] for row in large) == 10 and max(seen[row] for row in large) == 1  # a sample, no repeats


def _two_tasks(tmp_path):
    rows = make_rows(per_class=60, seed=5)
    first_topic = rows[0]["label"]
    topics = tmp_path / "topics.csv"
    flags = tmp_path / "flags.csv"
    for path, relabel in ((topics, lambda label: label), (flags, lambda label: "yes" if label == first_topic else "no")):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "tag"])
            writer.writeheader()
            writer.writerows({"text": row["text"], "tag": relabel(row["label"])} for row in rows)
    return topics, flags


def _tagged(model, data, **sections) -> dict:
    config = tiny_config(model, data, **sections)
    config["data"]["label_column"] = "tag"
    return config


def test_two_label_sets_on_one_encoder(tiny_bert, tmp_path):
    topics, flags = _two_tasks(tmp_path)
    config = load_config(_tagged(tiny_bert, topics, method={"name": "full"}, tracking={"enabled": False},
                                 train={"epochs": 8, "learning_rate": 1e-3, "early_stopping": None}) | {
        "multitask": {"tasks": [{"name": "topics", "data": {"path": str(topics)}},
                                {"name": "flags", "data": {"path": str(flags)}, "weight": 2}]}})
    result = multitask(config, tmp_path / "run", log=lambda _: None)
    topics_figures, flag_figures = result["tasks"]["topics"], result["tasks"]["flags"]
    assert len(topics_figures["labels"]) == 3 and flag_figures["labels"] == ["no", "yes"]
    sizes = [topics_figures["train_rows"], flag_figures["train_rows"]]
    assert [topics_figures["epoch_rows"], flag_figures["epoch_rows"]] == epoch_counts(sizes, [1, 2])  # 1/3 and 2/3
    assert abs(flag_figures["epoch_rows"] - 2 * topics_figures["epoch_rows"]) <= 1
    for figures in (topics_figures, flag_figures):
        assert figures["finetuned_minus_majority"]["macro_f1_ci"][0] > 0  # each task learned, with its own head
    from tuneforge.models.multitask import MultitaskPredictor

    predictor = MultitaskPredictor(result["run_dir"] / "model")
    answer = predictor.predict(["a text"], "flags")[0]
    assert set(answer["probabilities"]) == {"no", "yes"} and abs(sum(answer["probabilities"].values()) - 1) < 1e-4
    stored = json.loads((result["run_dir"] / "metrics.json").read_text())
    assert stored["tasks"]["flags"]["finetuned"]["macro_f1"] == flag_figures["finetuned"]["macro_f1"]
    assert "<table id='tasks'>" in (result["run_dir"] / "report.html").read_text()


def test_bad_multitask_sections_are_one_line(tiny_bert, tmp_path):
    topics, _ = _two_tasks(tmp_path)
    base = _tagged(tiny_bert, topics)
    with pytest.raises(ConfigError, match="names must differ"):
        load_config(base | {"multitask": {"tasks": [{"name": "a"}, {"name": "a"}]}})
    config = load_config(base | {"multitask": {"tasks": [{"name": "a"}, {"name": "b", "data": {"max_length": 2}}]}})
    with pytest.raises(ConfigError, match=r"multitask\.tasks\.1\.data\.max_length"):
        multitask(config, tmp_path / "run")
    config = load_config({**base, "method": {"name": "prefix"}, "multitask": {"tasks": [{"name": "a"}, {"name": "b"}]}})
    with pytest.raises(ConfigError, match="does not apply to multitask"):
        multitask(config, tmp_path / "run")
    assert main(["multitask", str(tmp_path / "missing.yaml")]) == 2
