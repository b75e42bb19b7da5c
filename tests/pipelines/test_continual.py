"""Continual learning on the tiny model (mechanics, seconds): three stages with the same labels, replay counted, the
accuracy matrix and the figures computed from it as defined; stages with other labels refused; EWC's gradient is
exactly strength * F * (w - anchor), with F estimated on the old data and only for trainable weights."""

from __future__ import annotations

import csv
import json

import pytest

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.errors import UserError
from tuneforge.pipelines.continual import continual

from conftest import make_rows, tiny_config


def _csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.filterwarnings("error:Found missing adapter keys:UserWarning")  # each stage starts from the last, merged
def test_three_stages_give_the_matrix_and_its_figures(tiny_bert, tmp_path):
    stages = [str(_csv(tmp_path / f"stage{i}.csv", make_rows(per_class=30, seed=i))) for i in range(3)]
    config = load_config(tiny_config(tiny_bert, stages[0], train={"epochs": 10}, evaluation={"baselines": []},
                                     tracking={"enabled": False}))
    result = continual(config, stages, tmp_path / "out", replay=0.5, log=lambda _: None)
    matrix = [[cell["value"] for cell in row] for row in result["accuracy_matrix"]]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    for row in result["accuracy_matrix"]:
        for cell in row:
            assert cell["ci"][0] <= cell["value"] <= cell["ci"][1]
    assert result["average_accuracy"]["value"] == pytest.approx(sum(matrix[2]) / 3, abs=1e-4)
    assert result["backward_transfer"]["value"] == pytest.approx(
        ((matrix[2][0] - matrix[0][0]) + (matrix[2][1] - matrix[1][1])) / 2, abs=1e-4)
    assert [f["value"] for f in result["forgetting"]] == pytest.approx(
        [max(matrix[0][0], matrix[1][0]) - matrix[2][0], matrix[1][1] - matrix[2][1]], abs=1e-4)
    assert matrix[2][2] > 0.5  # the last stage was learned (3 classes: chance is 1/3)
    for index in range(3):  # 0.5 earlier rows per row of the stage's own training split (none before stage 0)
        with open(tmp_path / "out" / f"stage-{index}-data.csv", encoding="utf-8") as handle:
            origins = [row["origin"] for row in csv.DictReader(handle)]
        assert origins.count("stage") > 50 and origins.count("replay") == (index > 0) * round(0.5 * origins.count("stage"))
    assert "stage-1" in (tmp_path / "out" / "stage-2" / "config.yaml").read_text()  # started from stage 1's run
    page = (tmp_path / "out" / "continual.html").read_text()
    assert "<table id='matrix'>" in page and "data:image/png;base64," in page
    assert json.loads((tmp_path / "out" / "continual.json").read_text())["stages"] == stages


def test_stages_must_share_labels(tiny_bert, tmp_path):
    first = _csv(tmp_path / "a.csv", make_rows(per_class=12, seed=0))
    other = _csv(tmp_path / "b.csv", [dict(row, label=row["label"] + "-x") for row in make_rows(per_class=12, seed=1)])
    config = load_config(tiny_config(tiny_bert, first))
    with pytest.raises(UserError, match="continual stages share one label set"):
        continual(config, [str(first), str(other)], tmp_path / "out")
    assert main(["continual", "--stage", str(first), "--output", str(tmp_path / "o")]) == 2  # no config, no --from


def test_ewc_gradient_is_strength_times_fisher_times_the_distance(tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.training.ewc import EwcCallback, penalty

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(("bert.encoder.layer.1", "classifier"))
    rows = make_rows(per_class=4, seed=3)
    labels = sorted({row["label"] for row in rows})
    callback = EwcCallback(tokenizer, [r["text"] for r in rows], [labels.index(r["label"]) for r in rows], 16, 50.0)
    state = torch.random.get_rng_state()
    callback.on_train_begin(None, None, None, model=model)
    assert torch.equal(state, torch.random.get_rng_state())  # the run's random stream is untouched
    assert set(callback.fisher) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all((f >= 0).all() and torch.isfinite(f).all() for f in callback.fisher.values())
    assert sum(float(f.sum()) for f in callback.fisher.values()) > 0
    assert all(p.grad is None for p in model.parameters())  # the estimate left no gradients behind
    weight = model.classifier.weight
    with torch.no_grad():
        weight.add_(0.1)  # the weights moved from their anchor
    weight.grad = torch.zeros_like(weight)
    callback.on_pre_optimizer_step(None, None, None, model=model)
    expected = 50.0 * callback.fisher["classifier.weight"] * 0.1
    assert torch.allclose(weight.grad, expected, atol=1e-7) and float(expected.abs().sum()) > 0
    assert float(penalty(model, callback.fisher, callback.anchor)) == pytest.approx(
        float((callback.fisher["classifier.weight"] * 0.01).sum()), rel=1e-4)
