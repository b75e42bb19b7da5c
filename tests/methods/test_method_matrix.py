"""Every registered method on every architecture it applies to, on tiny random models (PEFT's test-matrix
idea): after a few steps only the method's parameters changed and the loss fell; save -> load in a fresh
process reproduces the outputs exactly; merged == unmerged where the method merges. A method joins by being
registered; its small settings for tiny models come from SMALL (defaults otherwise)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.tasks.registry import available_tasks, task_spec
from tuneforge.methods.registry import apply_method, available_methods, load_kwargs, save_trained, \
    spec_for, validate_method

SMALL = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
         "qlora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
         "prefix": {"num_virtual_tokens": 4}, "prompt": {"num_virtual_tokens": 4},
         "adapter": {"reduction_factor": 4}, "freeze": {"layers": 1}}
VARIANTS = {"lora": [{"use_dora": True}], "adapter": [{"kind": "houlsby"}]}
MERGEABLE = ("lora", "ia3")
# the loss after 50 steps must be below this share of the loss before; prompt tuning moves a random 2-layer model
# least (Lester et al.: it needs scale), so it must only show a clear fall
LOSS_AFTER_AT_MOST = {"prompt": 0.98}
# default 1e-2; (method, task) entries win. Prompt tuning on a random decoder needs a prompt-tuning-sized rate.
LEARNING_RATE = {"full": 1e-3, "freeze": 1e-3, "ia3": 1e-1, "prefix": 1e-1, "prompt": 1e-1,
                 ("prompt", "causal-lm"): 3e-1}


def _head(task: str) -> tuple:
    """What a method sees of a task: its model class and head (a reward model is a one-output classifier, a
    preference policy a causal LM: they add nothing new to what a method does)."""
    spec = task_spec(task)
    return spec.auto_class, spec.peft_task_type, spec.head_modules, spec.per_token_head, spec.vocabulary_head


HEAD_TASKS = [task for n, task in enumerate(available_tasks())
              if _head(task) not in {_head(other) for other in available_tasks()[:n]}]
COMBOS = [(name, extra, task) for name in available_methods() for extra in [{}, *VARIANTS.get(name, [])]
          for task in HEAD_TASKS if spec_for(name).per_token_heads or not task_spec(task).per_token_head]
AUTO = {"sequence-classification": "AutoModelForSequenceClassification",
        "token-classification": "AutoModelForTokenClassification",
        "question-answering": "AutoModelForQuestionAnswering", "causal-lm": "AutoModelForCausalLM",
        "seq2seq": "AutoModelForSeq2SeqLM"}
LABEL_KEYS = ("labels", "start_positions", "end_positions")


def logits_of(outputs):
    """The logits a model returns; a span (QA) head's start and end logits stacked."""
    import torch

    if hasattr(outputs, "start_logits"):
        return torch.stack((outputs.start_logits, outputs.end_logits), dim=-1)
    return outputs.logits


def combo_id(combo: tuple) -> str:
    name, extra, task = combo
    return f"{name}{''.join(f'-{k}={v}' for k, v in extra.items())}-{task}"


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, str]:
    """One tiny model per architecture, 64 wide (bitsandbytes' CPU kernels need a 64-value block)."""
    import torch
    from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                              BertForTokenClassification, LlamaConfig, LlamaForCausalLM, T5Config,
                              T5ForConditionalGeneration)

    root = tmp_path_factory.mktemp("matrix-bases")
    torch.manual_seed(0)
    models = {
        "sequence-classification": BertForSequenceClassification(BertConfig(
            vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64, num_labels=3)),
        "token-classification": BertForTokenClassification(BertConfig(
            vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64, num_labels=3)),
        "question-answering": BertForQuestionAnswering(BertConfig(
            vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64)),
        "causal-lm": LlamaForCausalLM(LlamaConfig(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0)),
        "seq2seq": T5ForConditionalGeneration(T5Config(
            vocab_size=128, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=1)),
    }
    paths = {}
    for task, model in models.items():
        model.save_pretrained(root / task)
        paths[task] = str(root / task)
    return paths


def batch(task: str) -> dict:
    import torch

    ids = (torch.arange(12) * 3 + torch.tensor([[2], [40], [80], [7]])) % 126 + 2  # patterns a model can memorize
    if task == "sequence-classification":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 1])}
    if task == "token-classification":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids % 3}
    if task == "question-answering":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "start_positions": torch.tensor([1, 3, 5, 7]),
                "end_positions": torch.tensor([2, 4, 5, 9])}
    if task == "causal-lm":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, :6].contiguous()}


def build(bases: dict[str, str], name: str, extra: dict, task: str):
    import torch
    import transformers

    config = validate_method({"name": name, **SMALL.get(name, {}), **extra})
    torch.manual_seed(0)
    model = getattr(transformers, AUTO[task]).from_pretrained(bases[task], **load_kwargs(config))
    return apply_method(model, config, task_spec(task)), config


@pytest.fixture(scope="module")
def trained(bases, tmp_path_factory):
    """Each combination trained 50 steps on one fixed batch (once, on first use), saved, with its losses and
    parameter snapshots."""
    root = tmp_path_factory.mktemp("matrix-trained")
    cache: dict[str, dict] = {}

    def get(combo: tuple) -> dict:
        if combo_id(combo) not in cache:
            cache[combo_id(combo)] = train_combo(bases, combo, root)
        return cache[combo_id(combo)]

    return get


def eval_loss(model, inputs: dict) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return model(**inputs).loss.item()


def train_combo(bases: dict[str, str], combo: tuple, root: Path) -> dict:
    import torch

    name, extra, task = combo
    model, config = build(bases, name, extra, task)
    before = {n: p.detach().cpu().numpy().copy() for n, p in model.named_parameters()}  # plain copies (4-bit too)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE.get((name, task), LEARNING_RATE.get(name, 1e-2)))
    inputs = batch(task)
    losses = [eval_loss(model, inputs)]
    model.train()
    for _ in range(50):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = {n: p.detach().cpu().numpy() for n, p in model.named_parameters()}
    losses.append(eval_loss(model, inputs))  # without dropout noise: before and after training
    folder = root / combo_id(combo)
    save_trained(model, config, folder)
    (folder / "tuneforge.json").write_text(json.dumps({
        "task": task, "base_model": bases[task], "method": name, "labels": ["a", "b", "c"],
        "method_config": config.model_dump(mode="json")}))
    with torch.no_grad():
        outputs = logits_of(model(**{k: v for k, v in inputs.items() if k not in LABEL_KEYS} |
                                  ({"decoder_input_ids": inputs["labels"]} if task == "seq2seq" else {})))
    torch.save(outputs, folder / "expected.pt")
    return {"model": model, "losses": losses, "before": before, "after": after,
            "trainable": {n for n, p in model.named_parameters() if p.requires_grad}, "folder": folder}


@pytest.mark.parametrize("combo", COMBOS, ids=combo_id)
def test_only_the_method_parameters_change_and_loss_falls(trained, combo):
    import numpy as np

    result = trained(combo)
    assert result["losses"][-1] < LOSS_AFTER_AT_MOST.get(combo[0], 0.95) * result["losses"][0], result["losses"]
    changed = {n for n in result["before"] if not np.array_equal(result["before"][n], result["after"][n])}
    assert changed, "training changed nothing"
    assert changed <= result["trainable"], sorted(changed - result["trainable"])[:5]
    if combo[0] not in ("full", "freeze"):  # an adapter method trains a small share of the weights
        total = sum(p.size for p in result["before"].values())
        assert sum(result["before"][n].size for n in result["trainable"]) < 0.5 * total


def test_save_then_load_in_a_fresh_process_reproduces_outputs(trained):
    script = """
import json, sys, torch, transformers
from pathlib import Path
from tuneforge.methods.trained import load_trained
for folder in map(Path, sys.argv[1:]):
    meta = json.loads((folder / "tuneforge.json").read_text())
    auto = {"sequence-classification": transformers.AutoModelForSequenceClassification,
            "token-classification": transformers.AutoModelForTokenClassification,
            "question-answering": transformers.AutoModelForQuestionAnswering,
            "causal-lm": transformers.AutoModelForCausalLM, "seq2seq": transformers.AutoModelForSeq2SeqLM}[meta["task"]]
    kwargs = {"num_labels": 3} if meta["task"].endswith("classification") else {}
    model = load_trained(folder, meta, auto, **kwargs).eval()
    ids = (torch.arange(12) * 3 + torch.tensor([[2], [40], [80], [7]])) % 126 + 2
    extra = {"decoder_input_ids": ids[:, :6]} if meta["task"] == "seq2seq" else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra)
        logits = torch.stack((out.start_logits, out.end_logits), -1) if hasattr(out, "start_logits") else out.logits
        torch.save(logits, folder / "loaded.pt")
"""
    import torch

    results = {combo_id(combo): trained(combo) for combo in COMBOS}
    folders = [str(r["folder"]) for r in results.values()]
    done = subprocess.run([sys.executable, "-c", script, *folders], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for key, result in results.items():
        expected = torch.load(result["folder"] / "expected.pt")
        loaded = torch.load(result["folder"] / "loaded.pt")
        torch.testing.assert_close(loaded, expected, atol=1e-6, rtol=0, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.parametrize("combo", [c for c in COMBOS if c[0] in MERGEABLE], ids=combo_id)
def test_merged_equals_unmerged(trained, combo):
    import torch

    result = trained(combo)
    inputs = batch(combo[2])
    inputs = {k: v for k, v in inputs.items() if k not in LABEL_KEYS} | (
        {"decoder_input_ids": batch(combo[2])["labels"]} if combo[2] == "seq2seq" else {})
    model = copy.deepcopy(result["model"])
    with torch.no_grad():
        unmerged = logits_of(model(**inputs))
        merged = logits_of(model.merge_and_unload()(**inputs))
    assert not any("lora_" in n or "ia3_" in n for n, _ in merged_names(model))
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)


def merged_names(model) -> list:
    base = getattr(model, "base_model", model)
    return list(getattr(base, "model", base).named_parameters())


def test_every_method_is_in_the_matrix():
    assert {name for name, _, _ in COMBOS} == set(available_methods())
    assert set(HEAD_TASKS) == set(AUTO)  # every kind of head, once
    assert len(COMBOS) >= len(HEAD_TASKS) * len(available_methods()) - 2  # prompt: no per-token heads
