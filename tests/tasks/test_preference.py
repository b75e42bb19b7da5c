"""Preference tuning and RLHF on tiny models: the data formats and their split, each objective's training (its loss
moves the right way, only the method's parameters change, save -> load reproduces outputs) and the chain
sft -> reward-model -> ppo / dpo recorded in the run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import losses, make_chat_rows, make_pair_rows, preference_config, write_jsonl
from tuneforge.config import load_config
from tuneforge.config.schema import DataConfig
from tuneforge.data.preference import prepare_preferences
from tuneforge.errors import DataError
from tuneforge.pipelines.finetune import finetune


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]


def _run(config: dict, output: Path):
    return finetune(load_config(config), output=output, log=lambda _: None, quiet=True)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", make_pair_rows())


@pytest.fixture(scope="module")
def reward_run(tiny_llama, pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "run"
    _run(preference_config(tiny_llama, pairs, "reward-model", train={"epochs": 2}), out)
    return out


# --- data


def test_preference_formats_are_detected_and_split_on_the_prompt(tmp_path):
    rows = [  # text pairs, a conversation with an implicit prompt, LLaMA-Factory's shape, an unusable pair
        {"prompt": "hi?", "chosen": "hello", "rejected": "go away"},
        {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
         "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]},
        {"conversations": [{"from": "human", "value": "capital of France?"}], "chosen": {"from": "gpt", "value": "Paris"},
         "rejected": {"from": "gpt", "value": "Rome"}},
        {"prompt": "same?", "chosen": "yes", "rejected": "yes"},
        {"prompt": "hi?", "chosen": "hello", "rejected": "go away"},  # a duplicate
    ] + [{"prompt": f"q{n}?", "chosen": f"a{n}", "rejected": f"b{n}"} for n in range(40)] \
      + [{"prompt": "q1?", "chosen": "another", "rejected": "pair"}]  # a second pair of prompt q1
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    data = prepare_preferences(DataConfig(path=str(path)), 0, ("preference",))
    assert data.format == "preference"
    assert data.report["cleaning"]["dropped"] == {"chosen_equals_rejected": 1, "duplicate": 1}
    kept = [p for part in data.splits.values() for p in part]
    assert len(kept) == len(rows) - 2 and data.report["rows_kept"] == len(kept)
    found = {p.prompt[-1]["content"]: p for p in kept}
    assert (found["2+2?"].chosen, found["2+2?"].rejected) == ("4", "5")
    assert (found["capital of France?"].chosen, found["capital of France?"].rejected) == ("Paris", "Rome")
    where = {split: {p.key for p in part} for split, part in data.splits.items()}
    assert not (where["train"] & where["test"]) and not (where["train"] & where["validation"])
    q1 = [split for split, part in data.splits.items() for p in part if p.prompt[-1]["content"] == "q1?"]
    assert len(q1) == 2 and len(set(q1)) == 1  # both pairs of one prompt in one split
    assert set(data.report["leakage"]["overlapping_prompts"].values()) == {0}


def test_unpaired_and_prompt_only_data_and_one_line_errors(tmp_path):
    kto = write_jsonl(tmp_path / "kto.jsonl", [
        {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}],
         "label": n % 2 == 0} for n in range(20)])
    data = prepare_preferences(DataConfig(path=str(kto)), 0, ("unpaired-preference", "preference"))
    item = next(p for part in data.splits.values() for p in part)
    assert data.format == "unpaired-preference" and item.prompt[-1]["role"] == "user" and item.label is not None
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"say {n}"} for n in range(20)])
    assert prepare_preferences(DataConfig(path=str(prompts)), 0, ("prompt-only",)).format == "prompt-only"
    with pytest.raises(DataError, match=r"prompts.jsonl.*this task trains on preference data, not prompt-only"):
        prepare_preferences(DataConfig(path=str(prompts)), 0, ("preference",))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                                {"prompt": "a", "chosen": [{"role": "boss", "content": "x"}],
                                                 "rejected": "c"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2.*role 'boss'.*data.roles"):
        prepare_preferences(DataConfig(path=str(bad)), 0, ("preference",))
    labels = write_jsonl(tmp_path / "labels.jsonl", [{"prompt": "a", "completion": "b", "label": "maybe"}])
    with pytest.raises(DataError, match=r"labels.jsonl:1.*label 'maybe'.*true or false"):
        prepare_preferences(DataConfig(path=str(labels)), 0, ("unpaired-preference",))


# --- objectives


def _base_unchanged(run: Path, base: str) -> None:
    """Every weight of the base model outside the method's (LoRA, the saved head) is as it was before training."""
    import torch
    import transformers

    from tuneforge.methods.trained import load_trained
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import read_model_meta

    model_dir, meta = read_model_meta(run)
    auto = getattr(transformers, task_spec(meta["task"]).auto_class)
    kwargs = {"num_labels": 1} if meta["task"] == "reward-model" else {}
    trained = load_trained(model_dir, meta, auto, "fp32", **kwargs)
    fresh = dict(auto.from_pretrained(base, **kwargs).named_parameters())
    compared = 0
    for name, value in trained.named_parameters():
        if "lora_" in name or "modules_to_save" in name or "original_module" in name or ".score." in name:
            continue
        plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if plain in fresh:
            assert torch.equal(value, fresh[plain]), plain
            compared += 1
    assert compared > 10


def test_reward_model_learns_the_pairs_and_reloads(tiny_llama, reward_run):
    metrics = json.loads((reward_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["finetuned"]["pairwise_accuracy_ci"][0] > 0.5  # above chance, with its interval
    assert set(test["baselines"]) == {"chance", "length"} and metrics["verdict"]["status"] == "better"
    steps = [line["loss"] for line in _log(reward_run) if "loss" in line]
    assert steps[-1] < 0.5 * steps[0]  # the pairwise loss falls
    _base_unchanged(reward_run, tiny_llama)
    from tuneforge.pipelines.predict import load_predictor

    rows = [json.loads(line) for line in (reward_run / "predictions.jsonl").read_text().splitlines()]
    fresh = load_predictor(reward_run).predict([r["text_chosen"] for r in rows])
    assert max(abs(f["reward"] - r["reward_chosen"]) for f, r in zip(fresh, rows)) < 1e-3
    assert "pairwise_accuracy" in (reward_run / "report.html").read_text()


@pytest.mark.parametrize("task", ["dpo", "kto", "orpo"])
def test_offline_objectives_lower_their_loss_and_change_only_the_adapter(task, tiny_llama, pairs, reward_run,
                                                                         tmp_path):
    options = {"preference": {"judge_run": str(reward_run), "loss_type": "ipo" if task == "dpo" else "sigmoid"},
               "train": {"epochs": 2}}
    result = _run(preference_config(tiny_llama, pairs, task, **options), tmp_path / "run")
    steps = losses(result.run_dir)
    assert steps[-1] < steps[0], steps
    test = result.metrics["test"]
    assert set(test["finetuned"]) >= {"win_rate", "mean_reward", "kl", "answer_words", "implicit_accuracy"}
    assert test["judge"] == str(reward_run) and test["baselines"]["sft"]["win_rate"] == 0.5
    if task != "orpo":  # DPO and KTO raise the chosen answer's likelihood ratio over the rejected one's
        assert test["finetuned"]["implicit_accuracy"] > 0.5
    _base_unchanged(result.run_dir, tiny_llama)
    _same_answers_after_reload(result.run_dir, max_new_tokens=6)


def _same_answers_after_reload(run: Path, max_new_tokens: int) -> None:
    """save -> load: the saved policy, loaded fresh, gives the test answers the run wrote (greedy)."""
    from tuneforge.pipelines.generate import load_generator

    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    again = load_generator(run, max_new_tokens=max_new_tokens).generate([r["prompt"] for r in rows])
    assert [g["output"] for g in again] == [r["finetuned"] for r in rows]


def test_grpo_raises_a_python_reward_and_logs_its_curves(tiny_llama, pairs, tmp_path):
    rewards = tmp_path / "rewards.py"
    rewards.write_text("def short(prompts, completions, **kw):\n"
                       "    return [-len(c) / 20.0 for c in completions]\n")
    # a random model spreads its samples over the whole vocabulary, where no reward can be climbed: rollouts sample
    # among its 2 likeliest tokens, so the shorter of the two can win
    options = {"preference": {"reward_functions": [f"{rewards}:short"], "max_new_tokens": 12, "beta": 0.0},
               "evaluation": {"generation": {"top_k": 2, "temperature": 1.0}},
               "train": {"epochs": 2, "learning_rate": 1e-1, "batch_size": 8}}
    result = _run(preference_config(tiny_llama, pairs, "grpo", **options), tmp_path / "run")
    rewards_logged = [line["reward"] for line in _log(result.run_dir) if "reward" in line and "loss" in line]
    third = len(rewards_logged) // 3
    assert sum(rewards_logged[-third:]) / third > sum(rewards_logged[:third]) / third + 0.3, rewards_logged
    assert any("completions/mean_length" in line for line in _log(result.run_dir))
    _base_unchanged(result.run_dir, tiny_llama)
    _same_answers_after_reload(result.run_dir, max_new_tokens=12)  # preference.max_new_tokens


def test_sft_reward_ppo_chain_records_its_parents(tiny_llama, pairs, tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", make_chat_rows(48))
    from conftest import generative_config

    sft = _run(generative_config(tiny_llama, chat, train={"epochs": 1}), tmp_path / "sft").run_dir
    reward = _run(preference_config(str(sft), pairs, "reward-model", train={"epochs": 1}), tmp_path / "rm").run_dir
    judge = _run(preference_config(str(sft), pairs, "reward-model", train={"epochs": 1, "seed": 1}),
                 tmp_path / "judge").run_dir
    # TRL's PPO samples its rollouts at the run's temperature, with no top-k or top-p: a random tiny model spreads them
    # over the whole vocabulary, where no reward can be climbed in a few steps; at temperature 0.02 they choose among
    # its few likeliest tokens, and PPO can climb the reward model's preferences among those
    options = {"preference": {"reward_run": str(reward), "judge_run": str(judge)}, "train": {"epochs": 1},
               "evaluation": {"generation": {"temperature": 0.02}}}
    ppo = _run(preference_config(str(sft), pairs, "ppo", **options), tmp_path / "ppo")
    meta = json.loads((ppo.run_dir / "model" / "tuneforge.json").read_text())
    assert meta["parents"] == {"model": str(sft), "reward": str(reward), "judge": str(judge)}
    assert load_config(ppo.run_dir / "config.yaml").model.name == str(sft)
    assert json.loads((reward / "model" / "tuneforge.json").read_text())["parents"] == {"model": str(sft)}
    logged = [line for line in _log(ppo.run_dir) if "objective/kl" in line]
    assert logged and all({"objective/scores", "objective/entropy", "objective/kl"} <= set(line) for line in logged)
    scores, third = [line["objective/scores"] for line in logged], len(logged) // 3
    assert third >= 2 and sum(scores[-third:]) / third > sum(scores[:third]) / third + 0.2, scores  # PPO climbs
    most = load_config(ppo.run_dir / "config.yaml").preference.max_new_tokens
    assert [line["step"] for line in logged] == list(range(1, len(logged) + 1))  # one record per step
    assert all(0 < line["response_length"] <= most for line in logged), [line["response_length"] for line in logged]
    assert (ppo.run_dir / "model" / "adapter_config.json").exists()  # the policy's adapter, not the value head
    assert {"win_rate", "kl", "answer_words"} <= set(ppo.metrics["test"]["finetuned"])
    from tuneforge.models.assets import resolve_model

    _base_unchanged(ppo.run_dir, resolve_model(str(sft)).path)  # the SFT run's merged model: only the adapter moved
    _same_answers_after_reload(ppo.run_dir, max_new_tokens=6)
    with pytest.raises(Exception, match="judge_run is the reward_run"):
        load_config(preference_config(str(sft), pairs, "ppo", preference={"reward_run": str(reward),
                                                                          "judge_run": str(reward)}))


def test_ppo_response_length_counts_up_to_the_stop_token_not_the_padding():
    import torch

    from tuneforge.tasks.preference_train import response_lengths

    responses = torch.tensor([[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [2, 2, 2, 2, 2], [5, 6, 2, 0, 0], [5, 0, 0, 0, 0]])
    assert response_lengths(responses, 2, 2).tolist() == [3, 5, 1, 3, 5]  # padded with the stop token (eos)
    assert response_lengths(responses, 2, 0).tolist() == [3, 5, 1, 3, 1]
    assert response_lengths(responses, None, 0).tolist() == [5, 5, 5, 3, 1]  # no stop token: up to the padding


def test_bad_preference_configs_and_files_stop_in_one_line(tiny_llama, pairs, tmp_path):
    import subprocess
    import sys

    import yaml

    from tuneforge.errors import ConfigError

    with pytest.raises(ConfigError, match="ppo needs a reward-model run folder"):
        load_config(preference_config(tiny_llama, pairs, "ppo"))
    with pytest.raises(ConfigError, match="grpo needs a reward"):
        load_config(preference_config(tiny_llama, pairs, "grpo"))
    with pytest.raises(ConfigError, match="multiple of preference.num_generations"):
        load_config(preference_config(tiny_llama, pairs, "grpo", preference={"reward_functions": ["m:f"]},
                                      train={"batch_size": 6}))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                                {"prompt": "d", "chosen": "e"}])
    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump(preference_config(tiny_llama, bad, "dpo")))
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", str(config)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "bad.jsonl" in done.stderr and "rejected" in done.stderr, done.stderr
    assert not (tmp_path / "runs").exists()  # bad data stops before any run folder exists


def test_a_prompt_longer_than_max_length_is_dropped_and_counted(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    from tuneforge.models.assets import resolve_model
    from tuneforge.tasks.preference_data import prepare

    rows = make_pair_rows(40) + [{"prompt": "word " * 80, "chosen": "yes", "rejected": "no"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    config = load_config(preference_config(tiny_llama, path, "dpo", data={"max_length": 64}))
    prepared = prepare(config, AutoTokenizer.from_pretrained(tiny_llama), resolve_model(tiny_llama))
    assert prepared.report["cleaning"]["dropped"]["prompt_longer_than_max_length"] == 1
    assert prepared.report["rows_kept"] == 40


def test_pairs_command_writes_self_play_pairs_that_train_a_reward_model(tiny_llama, tmp_path):
    """tuneforge pairs: each distinct prompt once, the data's answer chosen and the SFT run's own greedy answer
    rejected; the file trains as preference data; data without conversations stops in one line."""
    import subprocess
    import sys

    from conftest import generative_config

    rows = make_chat_rows(40)
    chat = write_jsonl(tmp_path / "chat.jsonl", rows + rows[:5])  # five prompts twice: one pair each
    sft = _run(generative_config(tiny_llama, chat, train={"epochs": 1}), tmp_path / "sft").run_dir
    out = tmp_path / "pairs.jsonl"
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli", "pairs", "--from", str(sft), "--data", str(chat),
                           "--output", str(out), "--max-new-tokens", "6"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert facts["records"] == 45 and facts["prompts"] == 40
    assert len(written) == facts["pairs"] == 40 - facts["dropped_equal_answers"] > 0
    answers = {json.dumps(r["messages"][:-1], sort_keys=True): r["messages"][-1]["content"] for r in reversed(rows)}
    for pair in written:
        assert pair["chosen"] == answers[json.dumps(pair["prompt"], sort_keys=True)] != pair["rejected"]
    _run(preference_config(str(sft), out, "reward-model", train={"epochs": 1}), tmp_path / "rm")

    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": "plain text to continue"}, {"text": "more of it"}])
    bad = subprocess.run([sys.executable, "-m", "tuneforge.cli", "pairs", "--from", str(sft), "--data", str(raw),
                          "--output", str(tmp_path / "x.jsonl")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "chat data" in bad.stderr, bad.stderr
