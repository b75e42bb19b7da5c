"""Hyperparameter search on the tiny model: every algorithm, pruning, failures, resume after a kill, no peeking
at the test split, tracking of every trial, and two workers sharing a study in a real PostgreSQL."""

from __future__ import annotations

import json
import random
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from tuneforge.config import load_config
from tuneforge.errors import ConfigError
from tuneforge.pipelines.tune import tune

from conftest import tiny_config

LR = {"type": "categorical", "choices": [1e-9, 3e-2]}


def study_config(tiny_bert, tiny_csv, hpo, **train):
    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 4, **train},
                         evaluation={"bootstrap_samples": 100, "baselines": ["majority"]})
    config["hpo"] = {"n_trials": 3, "pruner": "none", **hpo}
    return config


def states(result):
    return [t["state"] for t in result.trials]


@pytest.mark.parametrize("algorithm, space, objectives", [
    ("grid", {"train.learning_rate": LR, "method.r": {"type": "categorical", "choices": [2, 4]}}, None),
    ("random", {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True}}, None),
    ("bayesian", {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True},
                  "method.r": {"type": "int", "low": 2, "high": 8, "log": True}}, None),
    ("gp", {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True},
            "method.r": {"type": "int", "low": 2, "high": 8, "log": True}}, None),
    ("evolutionary", {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True},
                      "train.weight_decay": {"type": "float", "low": 0.0, "high": 0.1}}, None),
    ("evolutionary", {"method.name": {"type": "categorical", "choices": ["lora", "freeze"]}},
     [{"metric": "loss", "direction": "minimize"}, {"metric": "trainable_params", "direction": "minimize"}]),
])
def test_each_algorithm_runs_a_study(tiny_bert, tiny_csv, tmp_path, algorithm, space, objectives):
    hpo = {"algorithm": algorithm, "space": space, "n_trials": 4 if algorithm == "grid" else 3}
    if objectives:
        hpo["objectives"] = objectives
    result = tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=2)), output=tmp_path / "study",
                  log=lambda _: None)
    assert states(result) == ["COMPLETE"] * hpo["n_trials"]
    study_dir = result.study_dir
    best = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert "hpo" not in best and best["name"] == "tiny-best"
    for path, value in result.best_params.items():
        section, key = path.split(".")
        assert best[section][key] == value
    load_config(best)  # ready to train
    assert result.test_metrics["finetuned"]["n"] == 18
    page = (study_dir / "hpo_report.html").read_text()
    assert "id='trials'" in page and page.count("data:image/png;base64,") >= 2
    if algorithm == "grid":
        assert sorted((t["params"]["train.learning_rate"], t["params"]["method.r"]) for t in result.trials) == \
               [(1e-9, 2), (1e-9, 4), (3e-2, 2), (3e-2, 4)]
    if objectives:
        assert len(result.best_values) == 2


def test_pruning_prunes_weak_trials(tiny_bert, tiny_csv, tmp_path):
    # seed 6 draws rates 2e-2, 4e-5, 7e-3, 2e-6, 3e-6, 6e-4: the first two trials set the median (0.278 macro-F1
    # at their second validation, a third of the trial); the other four fall below it there (0.167, 0.121, 0.267,
    # 0.167) and stop (prune_until, which spares a weak trial past half its run, is tested on the callback below)
    hpo = {"algorithm": "random", "n_trials": 6, "pruner": "median", "seed": 6,
           "space": {"train.learning_rate": {"type": "float", "low": 1e-6, "high": 5e-2, "log": True}}}
    result = tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=6)), output=tmp_path / "s",
                  log=lambda _: None)
    pruned = [t for t in result.trials if t["state"] == "PRUNED"]
    complete = [t for t in result.trials if t["state"] == "COMPLETE"]
    assert pruned and complete
    assert {t["number"] for t in pruned} == {2, 3, 4, 5}
    assert all(t["steps"] <= result.trials[0]["steps"] // 2 for t in pruned)
    assert result.trials[0]["state"] == "COMPLETE" and result.best_params == result.trials[0]["params"]
    assert max(t["steps"] for t in pruned) < max(t["steps"] for t in complete)  # pruning saved training steps


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_bert, tiny_csv, tmp_path):
    # freezing 5 layers of a 2-layer model is an invalid combination: that trial fails, the other one runs
    hpo = {"algorithm": "grid", "space": {"method.layers": {"type": "categorical", "choices": [1, 5]}}}
    config = study_config(tiny_bert, tiny_csv, hpo, epochs=1)
    config["method"] = {"name": "freeze"}
    result = tune(load_config(config), output=tmp_path / "s", log=lambda _: None)
    by_layers = {t["params"]["method.layers"]: t for t in result.trials}
    assert by_layers[5]["state"] == "FAIL" and by_layers[1]["state"] == "COMPLETE"
    assert "method.layers=5 but the model has 2 layers" in by_layers[5]["fail_reason"]
    assert result.best_params == {"method.layers": 1}
    assert "method.layers=5 but the model has 2 layers" in (result.study_dir / "hpo_report.html").read_text()


def test_a_trial_that_fails_midway_counts_the_steps_it_ran(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    # the trial at lr 0.02 runs out of memory as its 3rd step starts (simulated: a real OOM needs a real GPU); it
    # is recorded as failed, and the 2 steps it ran count toward the study's step budget
    import torch

    from tuneforge.training.callbacks import NanGuardCallback

    def out_of_memory_in_step_3(self, args, state, control, **kwargs):
        if args.learning_rate == 0.02 and state.global_step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(NanGuardCallback, "on_step_begin", out_of_memory_in_step_3, raising=False)
    hpo = {"algorithm": "grid", "space": {"train.learning_rate": {"type": "categorical", "choices": [1e-3, 0.02]}},
           "max_steps": 10_000}
    result = tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=2)), output=tmp_path / "s",
                  log=lambda _: None)
    by_lr = {t["params"]["train.learning_rate"]: t for t in result.trials}
    assert by_lr[0.02]["state"] == "FAIL" and "out of memory" in by_lr[0.02]["fail_reason"]
    assert by_lr[0.02]["steps"] == 2 and by_lr[1e-3]["state"] == "COMPLETE" and by_lr[1e-3]["steps"] > 2


def test_wrong_space_path_fails_before_any_trial(tiny_bert, tiny_csv, tmp_path):
    hpo = {"space": {"train.learning_rat": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    with pytest.raises(ConfigError, match="train.learning_rat: unknown key"):
        tune(load_config(study_config(tiny_bert, tiny_csv, hpo)), output=tmp_path / "s", log=lambda _: None)


def test_grid_needs_discrete_values(tiny_bert, tiny_csv):
    hpo = {"algorithm": "grid", "space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    with pytest.raises(ConfigError, match="grid search needs choices or a step"):
        load_config(study_config(tiny_bert, tiny_csv, hpo))


def test_the_test_split_is_read_once_after_the_search(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    import tuneforge.tasks.sequence_classification as evaluate

    calls = []
    original = evaluate.evaluate

    def spy(*args, **kwargs):
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
        calls.append([t.state.name for t in study.trials])
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate", spy)
    hpo = {"algorithm": "grid", "space": {"train.learning_rate": LR}}
    result = tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=1)), output=tmp_path / "s",
                  log=lambda _: None)
    assert len(calls) == 1 and calls[0] == ["COMPLETE"] * 2  # once, after every trial finished
    for trial in result.trials:
        metrics = json.loads((tmp_path / "s" / f"trial-{trial['number']:04d}" / "metrics.json").read_text())
        assert ("test" in metrics) == (trial["number"] == json.loads((tmp_path / "s" / "study.json").read_text())
                                       ["best_trial"])


def test_a_repeated_configuration_is_reused_not_retrained(tiny_bert, tiny_csv, tmp_path):
    hpo = {"algorithm": "random", "n_trials": 4, "seed": 0, "space": {"train.learning_rate": LR}}
    result = tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=1)), output=tmp_path / "s",
                  log=lambda _: None)
    trained = [t for t in result.trials if t["steps"]]
    assert len(trained) == 2 and {t["params"]["train.learning_rate"] for t in trained} == {1e-9, 3e-2}
    for t in result.trials:
        twin = next(x for x in trained if x["params"] == t["params"])
        assert t["values"] == twin["values"]


def test_a_pruned_configuration_proposed_again_is_pruned_without_training():
    from tuneforge.hpo.study import _finished_twin

    study = optuna.create_study(direction="maximize")
    space = {"train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2)}
    for stopped_by in (None, "step budget"):
        trial = study.ask(space)
        trial.report(0.1, 1)
        if stopped_by:
            trial.set_user_attr("stopped_by", stopped_by)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    pruned, cut = study.trials
    again = study.ask({"train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    assert _finished_twin(again) is None  # a different value
    study.enqueue_trial(pruned.params)
    assert _finished_twin(study.ask(space)).number == pruned.number
    study.enqueue_trial(cut.params)  # cut by the budget, not judged: it trains again
    assert _finished_twin(study.ask(space)) is None


def test_gp_with_pruning_is_refused():
    from tuneforge.config.schema import HpoConfig

    with pytest.raises(ValueError, match="gp learns only from finished trials"):
        HpoConfig(algorithm="gp", pruner="median", space={"train.learning_rate": {"type": "float", "low": 1e-4,
                                                                                  "high": 1e-2}})


def test_every_trial_is_tracked_and_comparable(tiny_bert, tiny_csv, tmp_path):
    hpo = {"algorithm": "grid", "space": {"train.learning_rate": LR}}
    tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=1)), output=tmp_path / "s", log=lambda _: None)
    out = subprocess.run([sys.executable, "-m", "tuneforge.cli", "runs", "compare", "--study", "tiny"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "train.learning_rate" in out.stdout and "1e-09" in out.stdout and "0.03" in out.stdout
    assert out.stdout.count("FINISHED") == 2 and "eval_macro_f1" in out.stdout
    listing = subprocess.run([sys.executable, "-m", "tuneforge.cli", "runs", "list"], capture_output=True,
                             text=True, cwd=tmp_path)
    assert listing.stdout.count("trial-000") == 2
    header = listing.stdout.splitlines()[0]
    assert "trial" in header and "macro_f1" not in header  # trials carry no test metric


def run_cli(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "tuneforge.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_study_killed_at_a_random_step_resumes_to_the_same_result(tiny_bert, tiny_csv, tmp_path):
    """kill -9 at a random training step of a random trial, tune again at once: the finished trials are kept as
    they were, the killed one is retried from its last checkpoint, and the study ends as one never killed."""
    hpo = {"algorithm": "grid", "n_trials": 3,
           "space": {"train.learning_rate": {"type": "categorical", "choices": [1e-9, 3e-3, 3e-2]}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(study_config(tiny_bert, tiny_csv, hpo, epochs=3)))
    straight = run_cli(["tune", str(path), "--output", str(tmp_path / "straight")], tmp_path)
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    storage = f"sqlite:///{tmp_path / 's' / 'study.db'}"
    first = run_cli(["tune", str(path), "--output", str(tmp_path / "s")], tmp_path)
    rng = random.Random()
    trial, step = rng.randint(0, 2), rng.randint(1, 33)  # 36 steps a trial, a checkpoint at the end of each epoch
    log = tmp_path / "s" / f"trial-{trial:04d}" / "train_log.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and any(json.loads(line).get("step", 0) >= step
                                    for line in log.read_text().splitlines() if line.strip())):
        assert first.poll() is None and time.time() < deadline, f"ended before trial {trial} step {step}"
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = {t.number: t.values for t in optuna.load_study(study_name="tiny", storage=storage).trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(before) == trial

    second = run_cli(["tune", str(path), "--output", str(tmp_path / "s")], tmp_path)  # no wait for a heartbeat
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 0, f"killed at trial {trial} step {step}: {output}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert all(study.trials[n].values == v for n, v in before.items())  # finished trials kept as they were
    trials = json.loads((tmp_path / "s" / "trials.json").read_text())
    killed = [t for t in trials if t["state"] == "FAIL"]
    assert [t["number"] for t in killed] == [trial] and "killed" in killed[0]["fail_reason"]
    retry = next(t for t in trials if t["retry_of"] == trial)
    assert retry["state"] == "COMPLETE" and retry["run_dir"].endswith(f"trial-{trial:04d}")

    a = json.loads((tmp_path / "straight" / "study.json").read_text())
    b = json.loads((tmp_path / "s" / "study.json").read_text())
    assert b["killed_and_retried"] == 1 and a["killed_and_retried"] == 0
    for key in ("best_params", "best_values", "test", "trials", "total_steps"):
        assert a[key] == b[key], (key, f"killed at trial {trial} step {step}")
    values = lambda rows: sorted((t["params"]["train.learning_rate"], t["values"])  # noqa: E731
                                 for t in rows if t["state"] == "COMPLETE")
    assert values(json.loads((tmp_path / "straight" / "trials.json").read_text())) == values(trials)


def test_workers_on_two_machines_share_one_study_in_postgresql(tiny_bert, tiny_csv, tmp_path):
    from postgres import pg_bin, postgres_server

    if pg_bin() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL must be installed under CI (scripts/ensure-postgres.sh)")
        pytest.skip("PostgreSQL is not installed; run scripts/ensure-postgres.sh")
    # no pruning: whether a trial is pruned depends on how the two workers interleave, and this test counts
    # completed trials (a fresh-clone CI run under load once pruned one of the 8)
    hpo = {"algorithm": "random", "n_trials": 8, "pruner": "none",
           "space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 5e-2, "log": True}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(study_config(tiny_bert, tiny_csv, hpo, epochs=6)))
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"  # two "machines": own working folders, one database
    machine_a.mkdir()
    machine_b.mkdir()
    with postgres_server() as url:
        main = run_cli(["tune", str(path), "--storage", url, "--output", str(machine_a / "s")], machine_a)
        other = run_cli(["tune", str(path), "--storage", url, "--worker-only", "--output", str(machine_b / "s")],
                        machine_b)
        output = main.communicate(timeout=600)[0]
        assert main.returncode == 0, output
        assert other.wait(timeout=300) == 0, other.stdout.read()[-2000:]
        study = optuna.load_study(study_name="tiny", storage=url)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        workers = {t.user_attrs["worker"] for t in complete}
        other = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials if t not in complete]
    assert len(complete) >= 8, (other, output[-2000:])
    assert len(workers) == 2, workers  # both processes ran trials of the one study
    summary = json.loads((machine_a / "s" / "study.json").read_text())
    assert summary["storage"] == url and summary["test"]["finetuned"]["n"] == 18


def test_hyperband_pruning_and_retraining_the_best(tiny_bert, tiny_csv, tmp_path, monkeypatch):
    import tuneforge.tasks.sequence_classification as evaluate

    calls = []
    original = evaluate.evaluate
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: calls.append(1) or original(*a, **k))
    hpo = {"algorithm": "bayesian", "n_trials": 4, "pruner": "hyperband", "retrain_best": True,
           "space": {"train.learning_rate": {"type": "float", "low": 1e-6, "high": 5e-2, "log": True}}}
    result = tune(load_config(study_config(tiny_bert, tiny_csv, hpo, epochs=3)), output=tmp_path / "s",
                  log=lambda _: None)
    assert len([t for t in result.trials if t["state"] in ("COMPLETE", "PRUNED")]) == 4
    best_run = json.loads((tmp_path / "s" / "best" / "metrics.json").read_text())
    assert best_run["test"] == result.test_metrics and len(calls) == 1  # retrained, then scored once
    assert yaml.safe_load((tmp_path / "s" / "best" / "config.yaml").read_text())["train"]["learning_rate"] == \
           result.best_params["train.learning_rate"]


def test_pruning_waits_for_the_warm_up_share_of_a_trial():
    from types import SimpleNamespace

    from tuneforge.config.schema import HpoConfig
    from tuneforge.hpo.callbacks import PruningCallback
    from tuneforge.hpo.space import make_pruner

    hpo = HpoConfig(pruner="median", space={"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}})
    assert hpo.prune_after == 0.25
    study = optuna.create_study(direction="maximize", pruner=make_pruner(hpo))
    for _ in range(2):
        good = study.ask()
        for step in range(1, 6):
            good.report(0.9, step)
        study.tell(good, 0.9)
    slow = PruningCallback(study.ask(), "macro_f1", prune=True, prune_after=hpo.prune_after)

    def evaluate(step: int, score: float) -> None:
        slow.on_evaluate(None, SimpleNamespace(global_step=step, max_steps=100), None, {"eval_macro_f1": score})

    evaluate(10, 0.1)  # the first validation is never judged
    evaluate(20, 0.2)  # 20% of the trial: still warming up
    assert list(slow.trial.storage.get_trial(slow.trial._trial_id).intermediate_values) == [1, 2]
    with pytest.raises(optuna.TrialPruned):
        evaluate(30, 0.3)  # past a quarter of its steps and below the median: pruned
    assert hpo.prune_until == 0.5
    late = PruningCallback(study.ask(), "macro_f1", prune=True, prune_after=hpo.prune_after,
                           prune_until=hpo.prune_until)
    for step in (10, 20, 60, 80):  # as weak, but past half of the trial from its third validation on: kept
        late.on_evaluate(None, SimpleNamespace(global_step=step, max_steps=100), None, {"eval_macro_f1": 0.1})
    assert len(late.trial.storage.get_trial(late.trial._trial_id).intermediate_values) == 4
    with pytest.raises(ValueError, match="prune_until"):
        HpoConfig(prune_after=0.5, prune_until=0.4, space=hpo.space)
    quiet = PruningCallback(study.ask(), "macro_f1", prune=False)  # pruner none: scores recorded, never pruned
    for step in (10, 20, 30, 40):
        quiet.on_evaluate(None, SimpleNamespace(global_step=step, max_steps=40), None, {"eval_macro_f1": 0.0})
    assert len(quiet.trial.storage.get_trial(quiet.trial._trial_id).intermediate_values) == 4


def test_a_step_budget_stops_the_study_and_cuts_the_last_trial(tiny_bert, tiny_csv, tmp_path):
    # each trial runs 4 epochs of the tiny split; a budget of 2.5 trials' steps runs two whole trials, cuts the
    # third where the budget ends (recorded as pruned) and starts no fourth, although n_trials asks for 6
    config = study_config(tiny_bert, tiny_csv, {"algorithm": "random", "n_trials": 6,
                          "space": {"train.learning_rate": {"type": "float", "low": 1e-3, "high": 5e-2}}})
    config["train"]["early_stopping"] = None
    one = tune(load_config({**config, "hpo": {**config["hpo"], "n_trials": 1}}), output=tmp_path / "one",
               log=lambda _: None)
    per_trial = one.trials[0]["steps"]
    budget = int(2.5 * per_trial)
    config["hpo"]["max_steps"] = budget
    result = tune(load_config(config), output=tmp_path / "s", log=lambda _: None)
    assert states(result) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [t["steps"] for t in result.trials] == [per_trial, per_trial, budget - 2 * per_trial]
    assert result.best_params in (result.trials[0]["params"], result.trials[1]["params"])
    assert result.trials[2]["stopped_by"] == "step budget"
    assert "pruned (step budget)" in (result.study_dir / "hpo_report.html").read_text()
    again = tune(load_config(config), output=tmp_path / "s", log=lambda _: None)  # spent: resuming adds nothing
    assert len(again.trials) == 3


def test_a_trial_that_changes_the_method_gets_that_methods_learning_rate(tiny_bert, tiny_csv, tmp_path):
    from tuneforge.hpo.study import trial_config_for

    config = load_config({k: v for k, v in study_config(tiny_bert, tiny_csv, {"space": {"method.name": {
        "type": "categorical", "choices": ["lora", "full"]}}}).items()} | {"train": {"epochs": 1}})
    assert config.train.learning_rate == 2e-3 and config.train._auto_learning_rate
    base = config.model_dump(mode="json")
    base["train"]["learning_rate"] = "auto"  # as tune hands it to the trials
    assert trial_config_for(base, {"method.name": "full"}, "macro_f1").train.learning_rate == 3e-5
    assert trial_config_for(base, {"method.name": "lora"}, "macro_f1").train.learning_rate == 2e-3
