"""Trustworthy runs: NaN and infinity stop a run (and fail a trial), the logs are strict JSON, one run per folder,
a resumed run keeps its settings, precision is decided once per machine, damaged folders and bad files are one
line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tuneforge.config import load_config
from tuneforge.errors import UserError
from tuneforge.pipelines.finetune import finetune

from conftest import tiny_config


def strict(text: str) -> object:
    """json.loads that rejects NaN / Infinity, as JavaScript's JSON.parse and most other parsers do."""
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("method, message", [
    ({"name": "adapter", "init_scale": 1e30}, "error: training loss became nan at step 1"),
    ({"name": "lora", "r": 4, "alpha": 1e38}, "error: gradient norm became inf at step 1"),
], ids=["nan-loss", "inf-gradient"])
def test_nan_or_inf_stops_the_run_with_one_line(tiny_bert, tiny_csv, tmp_path, method, message):
    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 1, "logging_steps": 1}, method=method)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", str(path), "--output", str(tmp_path / "run"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith(message), \
        result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model").exists()
    for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines():
        strict(line)


def test_a_diverging_trial_fails_and_the_study_goes_on(tiny_bert, tiny_csv, tmp_path, capfd):
    from tuneforge.pipelines.tune import tune

    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 1, "logging_steps": 1},
                         method={"name": "adapter"}, evaluation={"bootstrap_samples": 100, "baselines": ["majority"]})
    config["hpo"] = {"n_trials": 2, "pruner": "none", "algorithm": "grid",
                     "space": {"method.init_scale": {"type": "categorical", "choices": [1e30, 1e-3]}}}
    result = tune(load_config(config), output=tmp_path / "s", log=lambda _: None)
    by_scale = {t["params"]["method.init_scale"]: t for t in result.trials}
    assert by_scale[1e30]["state"] == "FAIL" and "training loss became nan" in by_scale[1e30]["fail_reason"]
    assert by_scale[1e-3]["state"] == "COMPLETE" and result.best_params == {"method.init_scale": 1e-3}
    assert "Traceback" not in capfd.readouterr().err  # a clean failure is one warning line from optuna


def test_metrics_and_logs_are_strict_json(tmp_path):
    import numpy as np

    from tuneforge.io import append_jsonl, atomic_write_json

    atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("nan"),
                                             "d": np.array([0.5, np.nan]), "e": 2})
    assert strict((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None], "c": None, "d": [0.5, None],
                                                         "e": 2}
    append_jsonl(tmp_path / "log.jsonl", {"loss": float("-inf"), "step": 3})
    assert strict((tmp_path / "log.jsonl").read_text()) == {"loss": None, "step": 3}


def test_outputs_get_the_usual_file_mode(tmp_path):
    from tuneforge.io import atomic_write_text

    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # as open() gives; mkstemp's 0600 hid outputs from other users


def test_one_run_per_folder_and_a_stale_lock_is_taken_over(tmp_path):
    from tuneforge.pipelines.run_dir import RunLock

    first = RunLock(tmp_path)
    with pytest.raises(UserError, match=f"another run \\(PID {os.getpid()}\\) is writing into this folder"):
        RunLock(tmp_path)
    first.release()
    assert (tmp_path / ".lock").read_text() == ""  # released cleanly: nothing to take over
    again = RunLock(tmp_path)
    assert again.took_over is None
    again.release()
    # a run killed with -9 leaves its PID in the file, but the kernel has dropped its lock
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout)
    taken = RunLock(tmp_path)
    assert taken.took_over == int(dead.stdout)
    taken.release()


def test_a_second_run_into_a_busy_folder_stops_at_once(tiny_bert, tiny_csv, tmp_path):
    # long enough that the second run, starting under load, still finds the first one writing
    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 12, "early_stopping": None},
                         evaluation={"baselines": ["majority"]})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    first = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "train", str(path), "--output",
                              str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "config.yaml").exists():
        assert first.poll() is None and time.time() < deadline, "the first run ended before the second started"
        time.sleep(0.05)
    second = run_cli("train", str(path), "--output", str(tmp_path / "run"))
    assert second.returncode == 2
    assert second.stderr.strip() == f"error: {tmp_path / 'run'}: another run (PID {first.pid}) is writing into " \
                                    f"this folder; wait for it to end or choose another --output"
    assert first.wait(timeout=600) == 0, first.stdout.read()
    assert strict((tmp_path / "run" / "metrics.json").read_text())["task"] == "sequence-classification"


def test_resume_refuses_a_changed_config_and_keeps_what_was_decided(tiny_bert, tiny_csv, tmp_path):
    from tuneforge.pipelines.run_dir import resumed_config

    config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 1}, evaluation={"baselines": ["majority"]}))
    result = finetune(config, output=tmp_path / "run", keep_checkpoints=True, log=lambda _: None)
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.train.precision == result.metrics["training"]["speed"]["precision"] in ("fp32", "bf16")
    assert saved.train.gradient_checkpointing in (True, False)  # every auto is recorded as it was decided
    (tmp_path / "run" / "metrics.json").unlink()  # as if killed after its last checkpoint

    changed = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 1, "learning_rate": 5e-3},
                                      evaluation={"baselines": ["majority"]}), ["data.max_length=48"])
    with pytest.raises(UserError) as refused:
        finetune(changed, output=tmp_path / "run", resume=True, log=lambda _: None)
    assert str(refused.value).startswith(f"{tmp_path / 'run' / 'config.yaml'}: --resume with a changed config "
                                         f"(data.max_length: 16 -> 48, train.learning_rate: 0.03 -> 0.005); ")
    # safe changes are taken; an auto stays what the run decided, whatever this machine would decide now
    other = saved.train.precision == "fp32" and "bf16" or "fp32"
    given = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 1, "num_threads": 1, "precision": "auto"},
                                    evaluation={"baselines": ["majority"], "bootstrap_samples": 100}))
    merged = resumed_config(saved, given, Path("config.yaml"))
    assert merged.train.num_threads == 1 and merged.evaluation.bootstrap_samples == 100
    assert merged.train.precision == saved.train.precision != other
    with pytest.raises(UserError, match=r"data.format: 'csv' -> 'auto'"):  # only what a run settles may say auto
        resumed_config(load_config({**saved.model_dump(mode="json"), "data": {**saved.data.model_dump(mode="json"),
                                                                             "format": "csv"}}), given, Path("c.yaml"))
    with pytest.raises(UserError, match=f"train.precision: '{saved.train.precision}' -> '{other}'"):
        resumed_config(saved, load_config({**tiny_config(tiny_bert, tiny_csv, train={"epochs": 1, "precision": other},
                                                         evaluation={"baselines": ["majority"]})}), Path("c.yaml"))
    (tmp_path / "run" / "checkpoints" / "checkpoint-999").mkdir()  # a save that a kill interrupted
    lines: list[str] = []
    resumed = finetune(config, output=tmp_path / "run", resume=True, log=lines.append)
    assert resumed.metrics["validation"] == result.metrics["validation"]
    assert "skipping checkpoint-999: incomplete (no trainer_state.json: the run was stopped while writing it)" in lines


def test_the_precision_probe_is_decided_once_per_machine(tmp_path, monkeypatch):
    from tuneforge.training.speed import PROBE_FILE, cpu_fast

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    cpu_fast.cache_clear()
    try:
        measured = cpu_fast("bfloat16")
        record = strict((tmp_path / PROBE_FILE).read_text())
        (key, entry), = record.items()
        assert entry["fast"] is measured and "bfloat16" in key and entry["speedup"] > 0
        # a later process reads the decision instead of timing again (flipped here to show it is read)
        (tmp_path / PROBE_FILE).write_text(json.dumps({key: {**entry, "fast": not measured}}))
        cpu_fast.cache_clear()
        assert cpu_fast("bfloat16") is (not measured)
    finally:
        cpu_fast.cache_clear()


@pytest.fixture(scope="module")
def small_run(tiny_bert, tiny_csv, tmp_path_factory):
    config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 1}, evaluation={"baselines": ["majority"]}))
    return finetune(config, output=tmp_path_factory.mktemp("runs") / "run", log=lambda _: None).run_dir


def damage(run_dir: Path, target: Path, how: str) -> Path:
    shutil.copytree(run_dir / "model", target / "model")
    model = target / "model"
    if how == "truncated weights":
        weights = model / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "no weights":
        (model / "adapter_model.safetensors").unlink()
    elif how == "bad tuneforge.json":
        (model / "tuneforge.json").write_text('{"task": "sequence-classification", ')
    elif how == "empty tuneforge.json":
        (model / "tuneforge.json").write_text("")
    elif how == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            (model / name).unlink(missing_ok=True)
    return target


@pytest.mark.parametrize("how, says", [
    ("truncated weights", "the saved model does not load (SafetensorError"),
    ("no weights", "no weights (looked for adapter_model.safetensors"),
    ("bad tuneforge.json", "tuneforge.json: unreadable (Expecting"),
    ("empty tuneforge.json", "tuneforge.json: unreadable (Expecting value"),
    ("no tokenizer", "no tokenizer (looked for tokenizer.json"),
])
def test_a_damaged_run_folder_is_one_line(small_run, tmp_path, how, says):
    from tuneforge.pipelines.predict import load_predictor

    broken = damage(small_run, tmp_path / "broken", how)
    with pytest.raises(UserError, match="damaged|does not load") as error:
        load_predictor(broken)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_predict_cli_on_damaged_folders_and_bad_files(small_run, tmp_path):
    broken = damage(small_run, tmp_path / "broken", "truncated weights")
    result = run_cli("predict", str(broken), "--text", "a goal")
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last.startswith(f"error: {broken / 'model'}: the saved model does not load"), result.stderr

    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\nthe team won\ncaf\xe9 and cheese\n".encode("latin-1"))
    result = run_cli("predict", str(small_run), "--file", str(latin))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {latin}:3: not UTF-8 text (byte 0xe9); save "
                                                             f"the file as UTF-8"), result.stderr
    good = tmp_path / "good.csv"
    good.write_text("text\nthe team won\n")
    existing = tmp_path / "out.csv"
    existing.write_text("keep me\n")
    result = run_cli("predict", str(small_run), "--file", str(good), "--output", str(existing))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == \
        f"error: {existing}: already exists; choose another --output or add --overwrite"
    assert existing.read_text() == "keep me\n"
    result = run_cli("predict", str(small_run), "--file", str(good), "--output", str(existing), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert existing.read_text().startswith("text,predicted,prob_")


def test_mismatches_are_refused_before_a_run_folder_exists(tiny_bert, tiny_csv, tmp_path):
    from tuneforge.config.loader import load_config as load

    encoder_for_text = tiny_config(tiny_bert, tiny_csv, train={"early_stopping": {"metric": "loss", "patience": 2}})
    encoder_for_text["model"]["task"] = "causal-lm"
    with pytest.raises(UserError, match=r"is a BertModel, but task causal-lm needs a decoder with a language-model "
                                        r"head"):
        finetune(load_config(encoder_for_text), output=tmp_path / "a", log=lambda _: None)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,a\nbroken,b,c\n")
    with pytest.raises(UserError, match=f"{bad}:3: 3 fields"):
        finetune(load_config(tiny_config(tiny_bert, bad)), output=tmp_path / "b", log=lambda _: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, tiny_csv)))
    with pytest.raises(UserError, match=r"^command line: train.learning_rat: unknown key"):
        load(path, ["train.learning_rat=0.1"])  # the override is to blame, not the file
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, tiny_csv, train={"epochs": 0})))
    with pytest.raises(UserError, match=rf"^{path}: train.epochs: Input should be greater than 0"):
        load(path, ["train.batch_size=2"])  # the file is to blame, not the (valid) override


def test_config_validate_checks_the_model(tiny_bert, tiny_csv, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_bert, tiny_csv)))
    assert run_cli("config", "validate", str(path)).returncode == 0
    unknown = run_cli("config", "validate", str(path), "model.name=nobody/no-such-model")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: model 'nobody/no-such-model': cannot read "
                                                                 "its config"), unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_a_run_that_learned_nothing_says_so_in_the_console_and_the_report(tiny_bert, tiny_csv, tmp_path, capsys):
    from tuneforge.summary import print_summary

    config = load_config(tiny_config(tiny_bert, tiny_csv, train={"epochs": 1, "learning_rate": 1e-9},
                                     evaluation={"baselines": ["majority"]}))
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    verdict = result.metrics["verdict"]
    assert verdict["learned_nothing"] and verdict["status"] != "better"
    assert verdict["warnings"][0].startswith("the fine-tuned model is not measurably better than the majority "
                                             "baseline (macro_f1 ")
    assert "try a higher train.learning_rate (this run: 1e-09), more train.epochs" in verdict["warnings"][0]
    print_summary(result)
    console = " ".join(capsys.readouterr().out.split())
    assert f"verdict: {verdict['line']}" in console and "warning: the fine-tuned model is not measurably" in console
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.index("id='verdict'") < page.index("<h2>")  # on top, before every section
    assert "class='warning'>the fine-tuned model is not measurably better" in page
    assert strict((tmp_path / "run" / "metrics.json").read_text())["verdict"] == verdict


def test_class_weights(tiny_bert, tiny_csv):
    import torch

    from tuneforge.errors import ConfigError
    from tuneforge.tasks.sequence_classification import class_weights
    from tuneforge.training.trainer import weighted_class_loss

    labels = ["a", "b", "c"]
    assert class_weights("auto", labels, [0] * 5 + [1] * 3 + [2] * 2) is None  # 5 / 2 < 3: balanced enough
    assert class_weights("auto", labels, [0] * 6 + [1] * 3 + [2] * 2) == [round(11 / 18, 6), round(11 / 9, 6),
                                                                          round(11 / 6, 6)]
    assert class_weights("none", labels, [0] * 60 + [1]) is None
    assert class_weights({"c": 4}, labels, [0, 1, 2]) == [1.0, 1.0, 4.0]
    with pytest.raises(ConfigError, match="train.class_weights: 'd' not among the labels"):
        class_weights({"d": 2}, labels, [0, 1, 2])
    with pytest.raises(ConfigError, match="train.class_weights: task token-classification has no class-weighted"):
        load_config({**tiny_config(tiny_bert, tiny_csv, train={"class_weights": "balanced", "early_stopping": None}),
                     "model": {"name": tiny_bert, "task": "token-classification"}})

    class Logits(torch.nn.Module):  # a stand-in model: the logits are given
        def forward(self, logits):
            return type("Out", (), {"logits": logits})()

    logits, target = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([1, 2])
    loss = weighted_class_loss(Logits(), {"logits": logits, "labels": target}, [1.0, 2.0, 3.0], False)
    by_hand = (2 * -torch.log_softmax(logits[0], 0)[1] + 3 * -torch.log_softmax(logits[1], 0)[2]) / 5
    assert torch.allclose(loss, by_hand)
