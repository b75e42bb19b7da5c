"""The task matrix: every registered task, on a tiny random model of its architecture, goes through every verb.

A two-trial search on the task's own validation metric trains; its best trial is scored on the test split against
the task's baselines and gets its report; the task's predictor, loaded in a fresh process, reproduces the run's test
predictions; ``export --merge`` writes a model that transformers alone loads and that computes what the run's model
computes; compare-methods prints the task's headline metric. A task added later joins by registering and adding
its tiny case below (the first test fails until it does).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import make_chat_rows, make_pair_rows, make_records, make_rows, write_conll, write_jsonl

HERE = Path(__file__).parent


@dataclass
class Case:
    model: str  # fixture giving the tiny model's folder
    data: Callable[[Path], Path]  # writes the tiny data set into a folder, returns its path
    config: dict[str, Any]  # sections merged over the common tiny config
    replay: Callable[[Path], tuple[Any, Any]]  # in a fresh process: (the run's test predictions, the predictor's)
    texts: list[str]  # inputs for comparing the export with the run's model


def _csv(folder: Path) -> Path:
    import csv

    path = folder / "topics.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(make_rows(20))
    return path


def _prompt_completion(folder: Path) -> Path:
    rows = [{"prompt": r["messages"][0]["content"], "completion": r["messages"][1]["content"]}
            for r in make_chat_rows(48)]
    return write_jsonl(folder / "pairs.jsonl", rows)


def _jsonl(run: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if line.strip()]


def _replay_classification(run: Path) -> tuple[Any, Any]:
    import csv

    from tuneforge.models.precision import TOLERANCE
    from tuneforge.pipelines.predict import load_predictor

    rows = list(csv.DictReader(open(run / "predictions.csv", newline="")))
    predictor = load_predictor(run)
    fresh = predictor.predict([row["text"] for row in rows])
    tolerance = TOLERANCE[json.loads((run / "model" / "tuneforge.json").read_text())["precision"]]
    far = [n for n, (row, out) in enumerate(zip(rows, fresh)) for label, p in out["probabilities"].items()
           if abs(p - float(row[f"prob_{label}"])) >= tolerance]
    return [row["predicted"] for row in rows] + [[]], [out["label"] for out in fresh] + [far]


def _replay_tags(run: Path) -> tuple[Any, Any]:
    from tuneforge.pipelines.predict import load_predictor

    rows = _jsonl(run, "predictions.jsonl")
    return [row["predicted"] for row in rows], load_predictor(run).tag([row["tokens"] for row in rows])


def _replay_answers(run: Path) -> tuple[Any, Any]:
    from tuneforge.pipelines.predict import load_predictor

    rows = _jsonl(run, "predictions.jsonl")
    contexts = {r["id"]: r["context"] for r in _jsonl(run.parent.parent, "qa.jsonl")}
    answers = load_predictor(run).answer([r["question"] for r in rows], [contexts[r["id"]] for r in rows])
    return [r["predicted"] for r in rows], [a["text"] for a in answers]


def _replay_generations(run: Path) -> tuple[Any, Any]:
    from tuneforge.pipelines.generate import load_generator

    rows = _jsonl(run, "predictions.jsonl")
    generator = load_generator(run, max_new_tokens=6, batch_size=4)
    return [r["finetuned"] for r in rows], [g["output"] for g in generator.generate([r["prompt"] for r in rows])]


def _replay_rewards(run: Path) -> tuple[Any, Any]:
    from tuneforge.pipelines.predict import load_predictor

    rows = _jsonl(run, "predictions.jsonl")
    fresh = load_predictor(run).predict([r["text_chosen"] for r in rows])
    return [True] * len(rows), [abs(f["reward"] - r["reward_chosen"]) < 1e-3 for f, r in zip(fresh, rows)]


LORA = {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
CASES = {
    "sequence-classification": Case("tiny_bert", _csv, {}, _replay_classification,
                                    ["the striker scored", "bread and cheese"]),
    "token-classification": Case("tiny_bert", lambda f: write_conll(f / "ner.txt", count=60),
                                 {"data": {"max_length": 24}}, _replay_tags, ["alice smith went to paris 12"]),
    "question-answering": Case("tiny_bert", lambda f: write_jsonl(f / "qa.jsonl", make_records(60)),
                               {"data": {"max_length": 64, "doc_stride": 16}}, _replay_answers,
                               ["What is the city? The city is lima today."]),
    "causal-lm": Case("tiny_llama", lambda f: write_jsonl(f / "chat.jsonl", make_chat_rows(48)),
                      {"data": {"max_length": 48}}, _replay_generations, ["3 plus one, goal?", "hello"]),
    "seq2seq": Case("tiny_t5", _prompt_completion, {"data": {"max_length": 48}}, _replay_generations,
                    ["3 plus one, goal?", "hello"]),
    "reward-model": Case("tiny_llama", lambda f: write_jsonl(f / "pairs.jsonl", make_pair_rows(48)),
                         {"data": {"max_length": 64}}, _replay_rewards, ["3 plus one? 4, thanks", "hello"]),
    "dpo": Case("tiny_llama", lambda f: write_jsonl(f / "pairs.jsonl", make_pair_rows(48)),
                {"data": {"max_length": 64}, "preference": {"max_new_tokens": 6, "max_prompts": 8}},
                _replay_generations, ["3 plus one, goal?", "hello"]),
}
# the other preference objectives share dpo's policy, predictor, export and report; their trainers (KTO, ORPO, GRPO,
# PPO) and the sft -> reward-model -> ppo chain are exercised in test_preference.py
SHARED_WITH_DPO = ("kto", "orpo", "grpo", "ppo")


def test_every_registered_task_has_a_case():
    from tuneforge.config.schema import Task
    from tuneforge.tasks.registry import available_tasks

    assert set(available_tasks()) == set(CASES) | set(SHARED_WITH_DPO)
    assert set(Task.__args__) == set(available_tasks())  # the config's task names are the registry's


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    config = T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.sep_token_id)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _config(task: str, model: str, data: Path) -> dict[str, Any]:
    case = CASES[task]
    config = {
        "name": f"matrix-{task}", "model": {"name": model, "task": task},
        "data": {"path": str(data), "max_length": 16}, "method": dict(LORA),
        # no early stopping: the best checkpoint is then picked by the task's own validation metric
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-2, "logging_steps": 2, "early_stopping": None},
        "evaluation": {"bootstrap_samples": 100, "max_test_examples": 6, "few_shot_k": 1,
                       "generation": {"max_new_tokens": 6, "batch_size": 4}},
        "tracking": {"dir": str(data.parent / "mlflow")},
        "hpo": {"algorithm": "grid", "pruner": "none", "n_trials": 2,
                "space": {"train.learning_rate": {"type": "categorical", "choices": [3e-3, 3e-2]}}},
    }
    for key, value in case.config.items():
        config[key] = {**config.get(key, {}), **value}
    return config


@pytest.mark.parametrize("task", list(CASES))
def test_task_through_every_verb(task, request, tmp_path):
    from tuneforge.config import load_config
    from tuneforge.pipelines.compare_methods import compare_methods, headline_metric
    from tuneforge.pipelines.export import export_run
    from tuneforge.pipelines.tune import tune
    from tuneforge.tasks.registry import task_spec

    spec, case = task_spec(task), CASES[task]
    model = request.getfixturevalue(case.model)
    data = case.data(tmp_path)
    config = load_config(_config(task, model, data))
    assert config.hpo.objectives[0].metric == spec.selection[0]  # the search optimizes the task's own metric

    # a two-trial search; the best trial is scored on the test split against the task's baselines
    result = tune(config, output=tmp_path / "study", log=lambda _: None)
    assert len(result.trials) == 2 and all(t["state"] == "COMPLETE" for t in result.trials)
    test = result.test_metrics
    headline = spec.headline_of(test["finetuned"])
    assert isinstance(test["finetuned"][headline], float)
    assert set(test["baselines"]) == set(spec.baselines)
    run = next(Path(t["run_dir"]) for t in result.trials if t["number"] == json.loads(
        (tmp_path / "study" / "study.json").read_text())["best_trial"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["test"]["finetuned"][headline] == test["finetuned"][headline]
    assert f"{test['finetuned'][headline]:.4f}" in (run / "report.html").read_text()
    saved_config = (run / "config.yaml").read_text()
    assert "gradient_checkpointing: auto" not in saved_config  # the saved config is the full record of the run
    from tuneforge.tracking.query import list_runs

    tracked = list_runs(config.tracking, study=config.name)
    assert len(tracked) == 2 and all(r["metrics"]["params_trainable"] > 0 for r in tracked)

    # the predictor, in a fresh process, reproduces the run's test predictions
    script = ("import json, sys; from pathlib import Path; sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]).parent)]; "
              "from test_task_matrix import CASES; "
              "print(json.dumps(CASES[sys.argv[2]].replay(Path(sys.argv[3]))))")
    done = subprocess.run([sys.executable, "-c", script, str(HERE), task, str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    saved, fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(saved) >= 3 and saved == fresh

    # export --merge: transformers alone loads it and computes what the run's model computes (both in fp32)
    facts = export_run(run, tmp_path / "export", merge=True)
    assert facts["merged"] and facts["max_abs_logit_difference"] <= facts["tolerance"]
    exported = _transformers_alone(tmp_path / "export", spec.auto_class, case.texts)
    from tuneforge.pipelines.predict import load_predictor

    ours = _outputs(load_predictor(run, "fp32"), case.texts)
    assert len(exported) == len(ours) and max(abs(a - b) for a, b in zip(exported, ours)) < 1e-4

    # compare-methods shows the task's headline metric
    rows = compare_methods(config, ["lora"], tmp_path / "compare", log=lambda _: None)
    assert "error" not in rows[0], rows[0]
    assert isinstance(rows[0][headline_metric(config)], float), rows[0]


TRANSFORMERS_ALONE = """
import json, sys, torch, transformers
folder, auto_class, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
model = getattr(transformers, auto_class).from_pretrained(folder).eval()
batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
if model.config.is_encoder_decoder:
    batch["decoder_input_ids"] = batch["input_ids"][:, :4]
with torch.no_grad():
    out = model(**batch)
logits = out.logits if getattr(out, "logits", None) is not None else torch.stack([out.start_logits, out.end_logits], -1)
print(json.dumps(logits.float().flatten().tolist()))
"""


def _transformers_alone(folder: Path, auto_class: str, texts: list[str]) -> list[float]:
    done = subprocess.run([sys.executable, "-c", TRANSFORMERS_ALONE, str(folder), auto_class, json.dumps(texts)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tuneforge" not in done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _outputs(predictor: Any, texts: list[str]) -> list[float]:
    import torch

    batch = dict(predictor.tokenizer(texts, padding=True, return_tensors="pt"))
    if predictor.model.config.is_encoder_decoder:
        batch["decoder_input_ids"] = batch["input_ids"][:, :4]
    with torch.no_grad():
        out = predictor.model(**batch)
    logits = out.logits if getattr(out, "logits", None) is not None else \
        torch.stack([out.start_logits, out.end_logits], -1)
    return logits.float().flatten().tolist()
