"""Training behaviour from the config: validation cadence, early stopping, gradient accumulation, seeding."""

from __future__ import annotations

import json

from tuneforge.config import load_config
from tuneforge.pipelines.finetune import finetune

from conftest import tiny_config

QUIET = {"baselines": ["majority"], "bootstrap_samples": 100}


def run(tiny_bert, tiny_csv, tmp_path, name, **train):
    config = load_config(tiny_config(tiny_bert, tiny_csv, train=train, evaluation=QUIET))
    result = finetune(config, output=tmp_path / name, log=lambda _: None)
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    return result, log


def test_eval_every_n_steps_and_gradient_accumulation(tiny_bert, tiny_csv, tmp_path):
    # 84 training rows, batch 4, accumulation 3 -> 7 optimizer steps per epoch
    result, log = run(tiny_bert, tiny_csv, tmp_path, "steps", epochs=2, batch_size=4, gradient_accumulation_steps=3,
                      eval_strategy="steps", eval_steps=5)
    assert result.metrics["training"]["global_steps"] == 14
    assert [e["step"] for e in log if "eval_loss" in e] == [5, 10, 14]  # every 5 steps and at the end
    # the loss is averaged over accumulated micro-batches, not summed: near ln(3) for 3 classes, not 3 x ln(3)
    assert all(e["loss"] < 1.6 for e in log if "loss" in e)


def test_early_stopping_stops_when_validation_stalls(tiny_bert, tiny_csv, tmp_path):
    # a learning rate too small to move the metric: it never improves after the first evaluation
    result, log = run(tiny_bert, tiny_csv, tmp_path, "stall", epochs=10, learning_rate=1e-9,
                      early_stopping={"metric": "macro_f1", "patience": 2})
    evaluations = [e for e in log if "eval_loss" in e]
    assert len(evaluations) == 3 and result.metrics["training"]["epochs_run"] == 3
    assert result.metrics["validation"]["best_checkpoint"] == "checkpoint-11"  # the first epoch's (84 / 8 -> 11)


def test_same_seed_same_result_other_seed_differs(tiny_bert, tiny_csv, tmp_path):
    a, _ = run(tiny_bert, tiny_csv, tmp_path, "a", epochs=2)
    b, _ = run(tiny_bert, tiny_csv, tmp_path, "b", epochs=2)
    c, _ = run(tiny_bert, tiny_csv, tmp_path, "c", epochs=2, seed=7)
    logs = [(r.run_dir / "train_log.jsonl").read_text().splitlines() for r in (a, b, c)]
    losses = [[json.loads(x).get("loss") for x in log if "\"loss\"" in x] for log in logs]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    assert a.metrics["test"]["finetuned"] == b.metrics["test"]["finetuned"]


def test_how_often_a_run_validates_does_not_change_what_it_learns(tiny_bert, tiny_csv, tmp_path):
    # the tiny BERT trains with dropout; each evaluation used to draw from the same random generator as the
    # dropout masks, so validating every 2 steps instead of every 5 changed the training losses after step 2
    patient = {"metric": "loss", "patience": 100}
    runs = [run(tiny_bert, tiny_csv, tmp_path, f"every-{n}", epochs=2, eval_strategy="steps", eval_steps=n,
                logging_steps=1, early_stopping=patient)[1] for n in (2, 5)]
    losses = [[e["loss"] for e in log if "loss" in e] for log in runs]
    assert len(losses[0]) == 22 and losses[0] == losses[1]
    assert [e["step"] for e in runs[0] if "eval_loss" in e][:3] == [2, 4, 6]
