"""Shared fixtures: a tiny random BERT (MiniLM's real tokenizer) and tiny learnable labelled data, built once."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from _pytest import nodes

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-bf16", choices=["probe", "fast", "slow"], default="probe",
                     help="what train.precision: auto decides on this CPU: the probe's answer (default), or as on a "
                     "CPU with fast bf16 (bf16) or without (fp32); exported, so CLI subprocesses follow it too")


def pytest_configure(config: pytest.Config) -> None:
    choice = config.getoption("--cpu-bf16")
    if choice != "probe":
        os.environ["TUNEFORGE_CPU_BF16"] = choice


# pytest-xdist 3.8 keeps an xdist_group on one worker (--dist loadgroup) by renaming each grouped test to
# "<nodeid>@<group>" through ``item._nodeid``; pytest 9 reads node ids from ``_id`` instead, so the renaming was lost
# and groups were spread over workers (the BBC monitor run built twice, two multi-process runs at once). Read the
# renamed id, in items and in their reports, as xdist expects.
_NODEID = nodes.Node.nodeid
nodes.Node.nodeid = property(lambda self: self.__dict__.get("_nodeid") or _NODEID.fget(self))  # type: ignore


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    report.nodeid = item.nodeid
    return report


def pytest_report_header(config: pytest.Config) -> str:
    from tuneforge.training.engine import resolve_precision

    return f"train.precision auto on this CPU: {resolve_precision('auto', cuda=False)} " \
           f"(--cpu-bf16={config.getoption('--cpu-bf16')})"

TOPICS = {
    "sport": "match goal team coach league striker season win cup players stadium referee".split(),
    "tech": "software chip phone internet computer network data app startup code robot cloud".split(),
    "food": "recipe bread cheese soup kitchen chef flavour garlic oven butter salad pepper".split(),
}
SHARED = "the a today new said after before big small people city week".split()


def make_rows(per_class: int = 40, seed: int = 0) -> list[dict[str, str]]:
    """Texts whose topic words give the label away: a model can learn them in a few steps."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(per_class):
            tokens = rng.sample(words, 5) + rng.sample(SHARED, 4)
            rng.shuffle(tokens)
            rows.append({"text": " ".join(tokens), "label": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from tuneforge.models.assets import resolve_model

    return resolve_model("minilm").path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """A 2-layer, 32-wide random BERT saved as an HF folder with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import csv

    path = tmp_path_factory.mktemp("data") / "topics.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(make_rows())
    return path


def tiny_config(model: str, data: Path | str, **sections: dict) -> dict:
    """A run config for the tiny random model: LoRA needs a high rate and ~10 short epochs to learn it."""
    config = {
        "name": "tiny",
        "model": {"name": model},
        "data": {"path": str(data), "max_length": 16},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"epochs": 15, "batch_size": 8, "learning_rate": 3e-2, "logging_steps": 2,
                  "early_stopping": {"metric": "macro_f1", "patience": 5}},
        "evaluation": {"bootstrap_samples": 200},
    }
    for key, value in sections.items():
        config[key] = value if key == "method" else {**config.get(key, {}), **value}
    return config


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: default outputs (runs/, the tracking store) land there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def smollm_path() -> str:
    from tuneforge.models.assets import resolve_model

    return resolve_model("smollm2-135m").path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, smollm_path: str) -> str:
    """A 2-layer, 32-wide random Llama with SmolLM2's real tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm_path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_chat_rows(count: int = 80, seed: int = 0) -> list[dict]:
    """Questions whose answers follow a rule a tiny model can pick up: '<n> plus one' -> '<n+1>'."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < count:
        colour, number = rng.choice(list(TOPICS["sport"])), rng.randint(1, 400)
        if (colour, number) in seen:
            continue
        seen.add((colour, number))
        rows.append({"messages": [{"role": "user", "content": f"{number} plus one, {colour}?"},
                                  {"role": "assistant", "content": f"{number + 1} {colour}"}]})
    return rows


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in make_chat_rows()), encoding="utf-8")
    return path


# --- tiny data of the other tasks, shared by their tests and the task matrix


PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
PLACES = ["paris", "tokyo", "lima", "oslo", "cairo", "quito"]
FILLER = "the a went to saw met in with today yesterday and".split()


def write_conll(path, count=120, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = rng.sample(FILLER, 3)
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        sentence = [(person, "B-person"), (rng.choice(["smith", "jones"]), "I-person")] + \
                   [(w, "O") for w in words] + [(place, "B-loc")] + [(str(rng.randint(0, 999)), "O")]
        lines += [f"{w}\t{t}" for w, t in sentence] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


CONTEXT_FILLER = "yesterday near river people walked slowly under bright sky while music played softly around town".split()
FACTS = {"code": [str(n) for n in range(100, 400)], "city": "paris tokyo lima oslo cairo quito rome delhi".split(),
         "colour": "red blue green yellow purple orange".split()}


def make_records(count: int = 200, seed: int = 0, questions_per_context: int = 1) -> list[dict]:
    """Contexts of filler sentences and one fact sentence 'the <kind> is <value>'; the question names the kind,
    the answer is the word after the marker. A tiny model learns it in a few epochs; the baseline (the sentence
    sharing most words with the question) finds the right sentence but not the word."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        kind = rng.choice(sorted(FACTS))
        sentences = [" ".join(rng.sample(CONTEXT_FILLER, 6)) + "." for _ in range(rng.randint(1, 2))]
        value = rng.choice(FACTS[kind])
        words = rng.sample(CONTEXT_FILLER, 3)
        sentences.insert(rng.randint(0, len(sentences)), f"{words[0]} {words[1]} the {kind} is {value} {words[2]}.")
        context = " ".join(s.capitalize() for s in sentences)
        start = context.index(f" {kind} is {value}") + len(f" {kind} is ")
        for q in range(questions_per_context):
            records.append({"id": f"q{n}-{q}", "question": f"What is the {kind}?" if q == 0 else f"Which {kind}, {q}?",
                            "context": context, "answers": {"text": [value], "answer_start": [start]}})
    return records


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def generative_config(model: str, path: Path | str, task: str = "causal-lm", **sections: dict) -> dict:
    config = {
        "name": "tiny-gen",
        "model": {"name": model, "task": task},
        "data": {"path": str(path), "max_length": 48},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 2e-2, "logging_steps": 2},
        "evaluation": {"bootstrap_samples": 100, "max_test_examples": 6, "few_shot_k": 2,
                       "generation": {"max_new_tokens": 6, "batch_size": 4}},
        "tracking": {"enabled": False},
    }
    for key, value in sections.items():
        config[key] = value if key == "method" else {**config.get(key, {}), **value}
    return config


def losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if "loss" in line]


def make_pair_rows(count: int = 96, seed: int = 0) -> list[dict]:
    """Preference pairs a tiny model can tell apart: the chosen answer is the right sum and ends politely."""
    rng = random.Random(seed)
    rows = []
    for number in rng.sample(range(1, 500), count):
        colour = rng.choice(["red", "blue", "green", "gold"])
        rows.append({"prompt": f"{number} plus one, {colour}?", "chosen": f"{number + 1} {colour}, thanks",
                     "rejected": f"{number + 7} {colour}, whatever"})
    return rows


def preference_config(model: str, path, task: str, **sections: dict) -> dict:
    """A tiny preference run: LoRA on every linear layer, short answers, few bootstrap resamples."""
    config = generative_config(model, path, task=task, **sections)
    config["name"] = f"tiny-{task}"
    config["preference"] = {"max_new_tokens": 6, "max_prompts": 8, **sections.get("preference", {})}
    return config
