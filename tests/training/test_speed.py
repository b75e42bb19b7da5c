"""Speed levers that must not change results: the LM head at labelled positions only, bf16 autocast, gradient
checkpointing decided from the memory estimate; and the speed every run reports about itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tuneforge.config import load_config
from tuneforge.data.chat import IGNORE, ChatFormatter
from tuneforge.data.packing import PackedCollator, PaddedCollator, pack
from tuneforge.pipelines.finetune import finetune
from tuneforge.tasks.registry import task_spec
from tuneforge.training.speed import FlopsModel, SpeedMeter, batch_stats, flops_model
from tuneforge.training.trainer import labelled_head_loss

from conftest import generative_config, losses


def _examples(tiny_llama: str) -> list:
    from transformers import AutoTokenizer

    formatter = ChatFormatter(AutoTokenizer.from_pretrained(tiny_llama))
    pairs = (("What is two plus two?", "Four."), ("Hi", "Hello, how are you today?"), ("Name a fruit", "Apple"),
             ("Say a colour, a long answer please", "Blue, like the sky over the sea in summer"))
    return [formatter.encode([{"role": "user", "content": q}, {"role": "assistant", "content": a}], 128)
            for q, a in pairs]


def _model(tiny_llama: str, lora: bool) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return model.train()


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("lora", [True, False])
def test_labelled_head_loss_equals_the_models_loss_and_gradients(tiny_llama, packed, lora):
    examples = _examples(tiny_llama)
    if packed:
        batch = PackedCollator(0)([vars(row) for row in pack(examples, 64)])
        del batch["tf_lengths"]
    else:
        batch = PaddedCollator(0)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    model = _model(tiny_llama, lora)
    reference = model(**batch).loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    fast = labelled_head_loss(model, model, batch, None)
    fast.backward()
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    # normalised by the accumulated batch's token count, the sum is what the Trainer expects
    count = int((batch["labels"][:, 1:] != IGNORE).sum())
    torch.testing.assert_close(labelled_head_loss(model, model, batch, 2 * count), reference / 2, rtol=1e-5, atol=1e-6)


def test_batch_stats_count_real_loss_and_padded_tokens(tiny_llama):
    examples = _examples(tiny_llama)
    rows = pack(examples, 40)
    batch = PackedCollator(0)([vars(row) for row in rows])
    real, loss, computed, squares, work = batch_stats(batch, causal=True)
    assert work == real  # nothing shared
    assert real == sum(len(e.input_ids) for e in examples)
    assert loss == sum(sum(label != IGNORE for label in e.labels) for e in examples)
    assert computed == batch["input_ids"].numel() and computed > real  # the short row is padded
    assert squares == sum(len(e.input_ids) ** 2 for e in examples)
    padded = PaddedCollator(0)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    assert batch_stats(padded, causal=True)[:2] == (real, loss)


def test_flops_model_counts_lora_as_four_and_full_as_six_times_the_matmul_parameters(tiny_llama):
    full, lora = flops_model(_model(tiny_llama, False), True), flops_model(_model(tiny_llama, True), True)
    linear = sum(m.in_features * m.out_features for m in _model(tiny_llama, False).modules()
                 if isinstance(m, torch.nn.Linear))
    assert full.matmul_params == full.trainable_matmul_params == linear  # the tied head is the lm_head Linear
    assert lora.trainable_matmul_params < 0.2 * lora.matmul_params
    assert full.flops(10, 0) == 6 * linear * 10
    meter = SpeedMeter(FlopsModel(100, 0, 2, 8, True), peak_flops=1e6, causal=True)
    meter.add({"input_ids": torch.zeros(2, 5, dtype=torch.long), "attention_mask": torch.tensor([[1] * 5, [1] * 3 + [0] * 2]),
               "labels": torch.tensor([[IGNORE, 1, 1, 1, 1], [IGNORE, 1, 1, IGNORE, IGNORE]])})
    rates = meter.rates()
    assert rates["padding_share"] == 0.2 and rates["tokens_per_s"] > 0 and rates["mfu"] > 0
    assert meter.rates() == {}  # a new, empty window


def test_flops_model_leaves_out_the_backward_pass_below_the_first_trained_layer(tiny_llama):
    from tuneforge.methods.freeze import FreezeConfig, apply

    model = apply(_model(tiny_llama, False), FreezeConfig(layers=1, train_norms=False), task_spec("causal-lm"))
    counted = flops_model(model, True)
    linear = {name: m.in_features * m.out_features for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear)}
    upper = sum(n for name, n in linear.items() if ".layers.1." in name)
    head = linear["lm_head"]  # tied to the frozen embeddings: gradients pass through it, its weight stays
    assert counted.matmul_params == sum(linear.values()) and counted.trainable_matmul_params == upper
    assert counted.backward_matmul_params == upper + head < counted.matmul_params
    assert counted.flops(10, 0) == (2 * sum(linear.values()) + 2 * (upper + head) + 2 * upper) * 10


def test_a_run_reports_its_speed_in_the_log_metrics_and_report(tiny_llama, chat_jsonl, tmp_path):
    config = load_config(generative_config(tiny_llama, chat_jsonl, train={"epochs": 1}))
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    speed = result.metrics["training"]["speed"]
    from tuneforge.training.engine import resolve_precision

    assert speed["precision"] == resolve_precision("auto", cuda=False)  # what the probe decided, not a CPU model
    assert speed["gradient_checkpointing"] is False
    assert speed["tokens_per_s"] > 0 and 0 <= speed["padding_share"] < 0.5 and 0 < speed["mfu"] < 1
    assert speed["loss_tokens_per_s"] < speed["tokens_per_s"]  # prompts carry no loss
    lines = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    trained = [line for line in lines if "loss" in line]
    assert trained and all("tokens_per_s" in line and "mfu" in line for line in trained)
    page = (result.run_dir / "report.html").read_text()
    assert "real tokens/s" in page and "model FLOPs utilisation" in page


def test_bf16_autocast_keeps_the_loss_curve_of_fp32(tiny_llama, chat_jsonl, tmp_path):
    curves = {}
    for precision in ("fp32", "bf16"):
        config = load_config(generative_config(tiny_llama, chat_jsonl, train={"epochs": 4, "precision": precision,
                                                                              "learning_rate": 1e-2, "logging_steps": 1},
                                               method={"name": "full"}, evaluation={"baselines": []}))
        result = finetune(config, output=tmp_path / precision, log=lambda _: None, evaluate_test=False)
        assert result.metrics["training"]["speed"]["precision"] == precision
        curves[precision] = losses(result.run_dir)
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert len(fp32) == len(bf16) >= 20 and fp32[-1] < fp32[0] - 1.0, fp32  # it learns
    for a, b in zip(fp32, bf16):  # bf16 rounds activations to 8 bits of mantissa: the curves agree within 3%
        assert abs(a - b) <= 0.03 * a, (fp32, bf16)
    # master weights stay fp32: the saved model is float32
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "bf16" / "model" / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}


def test_gradient_checkpointing_is_turned_on_only_when_the_run_would_not_fit(tiny_llama, chat_jsonl, tmp_path,
                                                                           monkeypatch):
    import tuneforge.planning.memory as memory

    config = load_config(generative_config(tiny_llama, chat_jsonl, train={"epochs": 1}, evaluation={"baselines": []}))
    without, with_gc = memory.estimate(config), memory.estimate(config, gradient_checkpointing=True)
    assert with_gc.total < without.total
    budget = (without.total + with_gc.total) / 2 / (1 - memory.SAFETY_MARGIN)  # fits only with checkpointing
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": int(budget))
    lines: list[str] = []
    result = finetune(config, output=tmp_path / "tight", log=lines.append, evaluate_test=False)
    assert result.metrics["training"]["speed"]["gradient_checkpointing"] is True
    assert any("gradient checkpointing on" in line for line in lines)
    assert json.loads((result.run_dir / "estimate.json").read_text())["gradient_checkpointing"] is True
    assert losses(result.run_dir)[-1] < losses(result.run_dir)[0]

    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": int(10 * without.total))
    roomy = finetune(config, output=tmp_path / "roomy", log=lambda _: None, evaluate_test=False)
    assert roomy.metrics["training"]["speed"]["gradient_checkpointing"] is False


def test_fp16_on_a_cpu_is_a_config_error():
    from tuneforge.errors import ConfigError
    from tuneforge.training.engine import resolve_precision

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cuda=False)
    assert resolve_precision("fp32", cuda=False) == "fp32"


def test_batch_packing_keeps_the_batch_and_its_loss_without_the_padding(tiny_llama):
    from tuneforge.data.packing import BatchPackingCollator, batch_packing_padding, pack_balanced

    examples = [{"input_ids": e.input_ids, "labels": e.labels} for e in _examples(tiny_llama)]
    sizes = [len(e["input_ids"]) for e in examples]
    rows = pack_balanced(examples, row_length=2 * max(sizes))
    assert sum(len(r.input_ids) for r in rows) == sum(sizes)
    assert len(rows) == -(-sum(sizes) // (2 * max(sizes)))  # as few rows as hold the batch
    assert all(len(r.input_ids) <= 2 * max(sizes) for r in rows)
    packed = BatchPackingCollator(0, 2 * max(sizes))(examples)
    padded = PaddedCollator(0)(examples)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    model = _model(tiny_llama, lora=True).eval()
    with torch.no_grad():
        loss_packed = labelled_head_loss(model, model, {k: v for k, v in packed.items() if k != "tf_lengths"}, None)
        loss_padded = model(**padded).loss
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)  # the same examples, the same loss
    lengths = [30, 20, 25, 60, 10, 50, 45, 5] * 4
    assert batch_packing_padding(lengths, 8, 128) < 0.1 < padding_share_unpacked(lengths, 8)


def padding_share_unpacked(lengths: list[int], batch_size: int) -> float:
    from tuneforge.data.packing import padding_share

    return padding_share(lengths, batch_size)


def test_a_shared_prefix_computed_once_gives_the_same_loss_and_gradients(tiny_llama):
    from tuneforge.data.prefix_sharing import SharedPrefixCollator, shared_prefix

    examples = [{"input_ids": e.input_ids, "labels": e.labels} for e in _examples(tiny_llama)]
    prefix = shared_prefix(examples)
    assert prefix >= 20  # SmolLM2's default system prompt and "<|im_start|>user\n"
    assert all(label == IGNORE for e in examples for label in e["labels"][:prefix + 1])
    shared = SharedPrefixCollator(0, 256)(examples)
    assert shared["attention_mask"].dim() == 4 and shared["input_ids"].shape[0] == 1  # one row holds the batch
    real, _, computed, _, work = batch_stats(shared, causal=True)
    assert real == sum(len(e["input_ids"]) for e in examples) and work == real - 3 * prefix == computed
    padded = PaddedCollator(0)(examples)
    model = _model(tiny_llama, lora=True)
    reference = model(**padded).loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    loss = labelled_head_loss(model, model, {k: v for k, v in shared.items() if not k.startswith("tf_")}, None)
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for name, param in model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)
    # rows that cannot hold the batch split it; a prefix with a label in it is not shared
    split = SharedPrefixCollator(0, prefix + 40)(examples)
    assert split["input_ids"].shape[0] > 1 and split["input_ids"].shape[1] <= prefix + 40
    with torch.no_grad():
        torch.testing.assert_close(labelled_head_loss(model, model, {k: v for k, v in split.items()
                                                                     if not k.startswith("tf_")}, None),
                                   reference.detach(), rtol=1e-5, atol=1e-6)
    labelled = [{**e, "labels": [e["input_ids"][0]] + e["labels"][1:]} for e in examples]
    assert shared_prefix(labelled) == 0
