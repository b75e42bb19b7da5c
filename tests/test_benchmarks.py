"""The benchmark scripts run end to end on tiny models (their figures are not asserted: benchmarks are not
timed tests; what is checked is that every run finishes and reports what the benchmark promises)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_ratio_and_difference(result: dict, rate: str, metric: str, peer: str) -> None:
    """The ratio of ``rate`` is tuneforge's over the peer's; the paired difference of ``metric`` lies in its CI."""
    ratios = result["ratios"]
    assert ratios[f"{rate}_vs_{peer}"] == round(result["tuneforge"][rate] / result[peer][rate], 3)
    low, high = ratios[f"{metric}_minus_{peer}_ci"]
    assert low <= ratios[f"{metric}_minus_{peer}"] <= high


def test_sft_throughput_runs_tuneforge_and_trl_on_a_tiny_model(tiny_llama):
    result = run_benchmark("sft_throughput.py", "--model", tiny_llama, "--examples", "40", "--batch-size", "4",
                           "--max-length", "128", "--warmup", "1", "--threads", "1", "--eval-examples", "8",
                           "--runs", "tuneforge,trl_default")
    for run in ("tuneforge", "trl_default"):
        figures = result[run]
        assert "error" not in figures, figures
        assert figures["real_tok_s"] > 0 and figures["loss_tok_s"] > 0 and 0 <= figures["padding_share"] < 1
        assert figures["mfu"] > 0 and figures["peak_rss_mib"] > 0 and figures["timed_steps"] >= 5
        low, high = figures["eval_loss_ci"]
        assert low <= figures["eval_loss"] <= high
    # the same examples for both: one epoch over the same train split, the same held-out tokens
    assert result["tuneforge"]["train_examples"] == result["trl_default"]["train_examples"]
    assert result["tuneforge"]["eval_tokens"] == result["trl_default"]["eval_tokens"]
    assert result["trl_default"]["gradient_checkpointing"] is True  # TRL's default
    assert result["tuneforge"]["padding_share"] < result["trl_default"]["padding_share"]
    assert_ratio_and_difference(result, "real_tok_s", "eval_loss", "trl_default")


def test_cls_throughput_runs_tuneforge_and_plain_trainers_on_a_tiny_model(tiny_bert, tiny_csv):
    # the quickstart freezes 3 of MiniLM's 6 layers; the tiny BERT has 2, so 1 of them stays frozen
    result = run_benchmark("cls_throughput.py", "--model", tiny_bert, "--data", str(tiny_csv), "--epochs", "2",
                           "--warmup", "1", "--threads", "1", "--tuneforge-set", "method.layers=1")
    for run in ("tuneforge", "trainer_default", "trainer_same"):
        figures = result[run]
        assert "error" not in figures, figures
        assert figures["examples_per_s"] > 0 and figures["real_tok_s"] > 0 and figures["timed_steps"] >= 2
        low, high = figures["macro_f1_ci"]
        assert low <= figures["macro_f1"] <= high
    ours, same, default = result["tuneforge"]["settings"], result["trainer_same"]["settings"], \
        result["trainer_default"]["settings"]
    assert ours["method"] == same["method"] == "freeze" and default["method"] == "full"
    assert ours["trainable_params"] == same["trainable_params"] < default["trainable_params"]  # the same ones frozen
    assert result["tuneforge"]["train_examples"] == result["trainer_default"]["train_examples"]
    assert_ratio_and_difference(result, "examples_per_s", "macro_f1", "trainer_default")


def test_hpo_pruning_compares_a_budgeted_bayesian_search_with_the_grid(tiny_bert, tiny_csv, tmp_path):
    task = ["--model", tiny_bert, "--data", str(tiny_csv), "--epochs", "2", "--eval-steps", "2",
            "--steps-per-epoch", "4", "--trials", "4", "--max-length", "16", "--grid-json", str(tmp_path / "g.json")]
    result = run_benchmark("hpo_pruning.py", *task)
    grid, bayes = result["grid"], result["bayesian"]
    assert grid["trials"] == 9 and grid["pruned"] == 0
    assert sorted((t["params"]["train.learning_rate"], t["params"]["method.r"]) for t in grid["trial_table"]) == \
           sorted((lr, r) for lr in (3e-4, 1e-3, 3e-3) for r in (2, 8, 32))
    assert bayes["total_steps"] <= grid["total_steps"] // 2  # the budget holds
    assert result["steps_ratio"] == round(bayes["total_steps"] / grid["total_steps"], 4)
    assert result["reached_grid_best"] == (bayes["best_validation"] <= grid["best_validation"])
    paired = result["paired_loss_difference"]
    low, high = paired["difference_ci"]
    assert low <= paired["difference"] <= high and paired["articles"] > 0
    assert abs(paired["difference"] - (paired["bayes_mean_loss"] - paired["grid_mean_loss"])) < 1e-3

    # the two arms apart (the search first, under a budget in steps, beside a cached grid), then both reused
    budget = str(grid["total_steps"] // 2)
    apart = [*task, "--budget-steps", budget, "--seed", "1", "--search-json", str(tmp_path / "s.json"),
             "--workdir", str(tmp_path / "work")]
    first, again = run_benchmark("hpo_pruning.py", *apart), run_benchmark("hpo_pruning.py", *apart)
    assert first["grid"] == grid and (tmp_path / "work" / "bayes-seed1" / "study.db").exists()
    assert first["bayesian"]["total_steps"] <= int(budget)
    assert again["bayesian"] == first["bayesian"] and again["paired_loss_difference"] == first["paired_loss_difference"]


def test_serve_batching_measures_tuneforge_and_transformers_serve(tiny_llama, chat_jsonl, tmp_path):
    from conftest import generative_config

    from tuneforge.config import load_config
    from tuneforge.pipelines.finetune import finetune

    config = generative_config(tiny_llama, chat_jsonl, train={"epochs": 1}, evaluation={"baselines": []})
    run = finetune(load_config(config), output=tmp_path / "run", log=lambda _: None).run_dir
    result = run_benchmark("serve_batching.py", "--run", str(run), "--requests", "6", "--concurrency", "3",
                           "--max-tokens", "4", "--threads", "1", "--servers", "tuneforge_batched,transformers_serve")
    for server in ("tuneforge_batched", "transformers_serve"):
        figures = result[server]
        assert "error" not in figures, figures
        assert figures["requests_per_s"] > 0 and 0 < figures["p50_latency_s"] <= figures["p95_latency_s"]
    assert result["ratios"]["requests_per_s_vs_transformers_serve"] == round(
        result["tuneforge_batched"]["requests_per_s"] / result["transformers_serve"]["requests_per_s"], 3)


def test_optimize_table_runs_on_a_tiny_model(tiny_bert, tiny_csv, tmp_path):
    result = run_benchmark("optimize_table.py", "--model", tiny_bert, "--set", f"data.path={tiny_csv}",
                           "--set", "train.epochs=1", "--set", "method.layers=1", "--variants",
                           "torchao int8 dynamic", "--threads", "1", "--workdir", str(tmp_path))
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["fp32", "torchao int8 dynamic"] and result["task"] == "sequence-classification"
    for row in rows.values():
        assert "error" not in row, row
        low, high = row["figures"]["ci"]
        assert low <= row["figures"]["value"] <= high and row["speed"]["per_second"] > 0
    assert rows["torchao int8 dynamic"]["ratios"]["size"] < 1 and (tmp_path / "optimize" / "optimize.html").exists()


def test_augment_low_data_pairs_runs_with_and_without_augmentation(tiny_bert, tiny_csv):
    result = run_benchmark("augment_low_data.py", "--model", tiny_bert, "--data", str(tiny_csv), "--corpus-rows",
                           "120", "--rows", "120", "--fractions", "0.5", "--seeds", "0", "--conditions", "none,swap",
                           "--steps", "8", "--learning-rate", "3e-2", "--frozen-layers", "1")
    none, swap = result["runs"]
    assert none["copies"] == 0 and swap["copies"] > 0 and swap["train_rows"] == none["train_rows"] + swap["copies"]
    assert abs(none["steps"] - swap["steps"]) <= 4  # the same optimizer steps for both runs of a pair
    pair = result["pairs"][0]
    low, high = pair["macro_f1_difference_ci"]
    assert low <= pair["macro_f1_difference"] <= high and result["summary"][0]["seeds"] == 1
