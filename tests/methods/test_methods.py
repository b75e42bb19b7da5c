from __future__ import annotations

import pytest
import torch

from tuneforge.config.loader import load_config
from tuneforge.methods.registry import apply_method, available_methods
from tuneforge.models.assets import resolve_model
from tuneforge.models.inspection import count_parameters
from tuneforge.models.loading import load_classifier, load_tokenizer
from tuneforge.tasks.registry import task_spec

LABELS = ["x", "y", "z"]


def build(tiny_bert: str, method: dict):
    config = load_config({"name": "t", "model": {"name": tiny_bert}, "data": {"path": "unused"}, "method": method})
    resolved = resolve_model(tiny_bert)
    tokenizer = load_tokenizer(resolved)
    torch.manual_seed(0)
    model = load_classifier(resolved, LABELS, tokenizer)
    return apply_method(model, config.method, task_spec("sequence-classification")), tokenizer


def train_steps(model, tokenizer, steps: int = 3) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = tokenizer(["a goal for the team", "new phone chip", "garlic soup recipe"], return_tensors="pt",
                      padding=True)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=torch.tensor([0, 1, 2])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {n: not torch.equal(before[n], p.detach()) for n, p in model.named_parameters()}


def test_registry_lists_the_methods():
    assert available_methods() == ["adapter", "freeze", "full", "ia3", "lora", "prefix", "prompt", "qlora"]


def test_lora_changes_only_adapter_and_head(tiny_bert):
    model, tokenizer = build(tiny_bert, {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
    changed = train_steps(model, tokenizer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(("lora_" in n or "modules_to_save" in n) for n in trainable)
    assert {n for n, c in changed.items() if c} == trainable  # every trainable one moved, nothing else did
    assert any("lora_B" in n for n in trainable) and any("modules_to_save" in n for n in trainable)


def test_lora_parameter_count_is_closed_form(tiny_bert):
    model, _ = build(tiny_bert, {"name": "lora", "r": 4})
    counts = count_parameters(model)
    hidden, layers, targets, labels = 32, 2, 2, len(LABELS)  # query and value, d_in = d_out = 32
    lora = layers * targets * 4 * (hidden + hidden)  # r * (d_in + d_out) per adapted linear
    head = hidden * labels + labels  # the classifier, trained in full (modules_to_save)
    assert counts["trainable"] == lora + head
    assert counts["trainable_by_module_type"]["Linear"] == lora + head
    assert counts["trainable_pct"] == round(100 * (lora + head) / counts["total"], 4)


def test_lora_all_linear_rslora_dora(tiny_bert):
    model, tokenizer = build(tiny_bert, {"name": "lora", "r": 2, "target_modules": "all-linear", "use_rslora": True,
                                         "use_dora": True})
    names = [n for n, _ in model.named_parameters()]
    assert any("intermediate.dense.lora_A" in n for n in names)
    assert any("lora_magnitude_vector" in n for n in names)
    assert any(train_steps(model, tokenizer).values())


def test_lora_on_the_upper_layers_skips_the_backward_pass_below(tiny_bert):
    model, tokenizer = build(tiny_bert, {"name": "lora", "r": 2, "target_modules": "all-linear", "layers": [-1]})
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted and all(".layer.1." in n or ".pooler." in n for n in adapted)
    assert any(".pooler." in n for n in adapted)  # outside every block: adapted as all-linear does
    assert not any("classifier" in n for n in adapted)  # the head trains fully, without an adapter
    below = []
    model.base_model.model.bert.encoder.layer[0].register_full_backward_hook(lambda *_: below.append(1))
    above = []
    model.base_model.model.bert.encoder.layer[1].register_full_backward_hook(lambda *_: above.append(1))
    changed = train_steps(model, tokenizer, steps=1)
    assert above and not below  # nothing below the lowest adapted layer needs a gradient
    assert any(c for n, c in changed.items() if "lora_B" in n)
    only_value, _ = build(tiny_bert, {"name": "lora", "r": 2, "target_modules": ["value"], "layers": [0]})
    assert {n.split(".lora_A")[0] for n, _ in only_value.named_parameters() if "lora_A" in n} == \
           {"base_model.model.bert.encoder.layer.0.attention.self.value"}
    with pytest.raises(ValueError, match=r"method.layers: \[2\] out of range for a model with 2 layers"):
        build(tiny_bert, {"name": "lora", "layers": [2]})


def test_freeze_embeddings_and_first_layer(tiny_bert):
    model, tokenizer = build(tiny_bert, {"name": "freeze", "embeddings": True, "layers": 1})
    changed = train_steps(model, tokenizer)
    for name, moved in changed.items():
        in_frozen = ".embeddings." in name or ".layer.0." in name
        is_norm = "LayerNorm" in name
        if in_frozen and not is_norm:
            assert not moved, name
        if name.startswith("classifier") or ".layer.1." in name:
            assert moved, name
    assert changed["bert.encoder.layer.0.output.LayerNorm.weight"]  # norms stay trainable


def test_freeze_patterns_and_frozen_norms(tiny_bert):
    model, _ = build(tiny_bert, {"name": "freeze", "embeddings": False, "patterns": ["*.attention.*"],
                                 "train_norms": False})
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not grads["bert.encoder.layer.1.attention.self.query.weight"]
    assert not grads["bert.encoder.layer.0.attention.output.LayerNorm.weight"]
    assert grads["bert.encoder.layer.1.intermediate.dense.weight"] and grads["classifier.weight"]


def test_freeze_too_many_layers_is_an_error(tiny_bert):
    with pytest.raises(ValueError, match="method.layers=5 but the model has 2 layers"):
        build(tiny_bert, {"name": "freeze", "layers": 5})


def test_full_trains_everything(tiny_bert):
    model, tokenizer = build(tiny_bert, {"name": "full"})
    counts = count_parameters(model)
    assert counts["trainable"] == counts["total"]
    changed = train_steps(model, tokenizer)
    assert changed["bert.encoder.layer.0.attention.self.query.weight"] and changed["classifier.weight"]
