"""The memory estimate (tuneforge.planning.memory): exact parameter counts from meta-device models, activation
accounting checked against the tensors autograd really saves, quantized sizes, advice, the table, compute."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tuneforge.config import load_config  # noqa: E402
from tuneforge.planning import memory  # noqa: E402
from tuneforge.tasks.registry import task_spec  # noqa: E402
from tuneforge.planning.memory import (Estimate, advise, available_memory, estimate,  # noqa: E402
                                     measure_flops_per_second, seconds_per_epoch)


def _methods() -> list[str]:
    """Registered methods; the bottleneck adapter too when its module exists (builtins first)."""
    from tuneforge.methods.registry import available_methods

    names = available_methods()
    if "adapter" not in names:
        try:
            import tuneforge.methods.adapter  # noqa: F401
        except ImportError:
            pass
        names = available_methods()
    return names


HAS_ADAPTER = "adapter" in _methods()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Config-only model folders (no weights): tiny BERT, Llama (GQA, tied / untied), T5 (ReLU / gated-GELU)."""
    from transformers import BertConfig, LlamaConfig, T5Config

    root = tmp_path_factory.mktemp("tiny-configs")
    configs = {
        "bert": BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=128),
        "llama": LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             tie_word_embeddings=True, pad_token_id=0),
        "llama-untied": LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                    num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                                    pad_token_id=0),
        "t5": T5Config(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                       decoder_start_token_id=0, pad_token_id=0),
        "t5-gated": T5Config(vocab_size=1000, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                             feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                             pad_token_id=0),
    }
    folders = {}
    for name, config in configs.items():
        config.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


def run_config(model: str, task: str, method: dict | None = None, batch_size: int = 2, max_length: int = 16,
               **train: object) -> object:
    return load_config({"name": "mem", "model": {"name": model, "task": task},
                        "data": {"path": "unused.jsonl", "max_length": max_length},
                        "method": method or {"name": "full"}, "train": {"batch_size": batch_size, **train},
                        "tracking": {"enabled": False}})


def real_model(path: str, task: str, method: dict | None = None) -> torch.nn.Module:
    """The same model with random weights on the CPU, the method applied (a real forward can run on it)."""
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification, AutoModelForTokenClassification)

    from tuneforge.methods.registry import apply_method, validate_method

    config = AutoConfig.from_pretrained(path)
    if task.endswith("classification"):
        config.num_labels = 2
    auto = {"sequence-classification": AutoModelForSequenceClassification,
            "token-classification": AutoModelForTokenClassification, "causal-lm": AutoModelForCausalLM,
            "seq2seq": AutoModelForSeq2SeqLM}[task]
    from tuneforge.models.first_token import first_token_only
    from tuneforge.training.fast_dropout import use_fast_dropout

    torch.manual_seed(0)
    model = auto.from_config(config)
    first_token_only(model)  # as tuneforge loads a classifier
    if method:
        model = apply_method(model, validate_method(method), task_spec(task))
    use_fast_dropout(model)  # as tuneforge trains on the CPU
    return model.train()


def saved_by_autograd(model: torch.nn.Module, task: str, batch: int, length: int) -> int:
    """Bytes of the tensors the autograd graph of one forward pass keeps for backward (parameters excluded, each
    storage once)."""
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, length))
    labels = {"sequence-classification": torch.randint(0, 2, (batch,)),
              "token-classification": torch.randint(0, 2, (batch, length))}.get(task)
    if labels is None:
        labels = torch.randint(3, vocab, (batch, length))
    loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}
    stack, visited = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for attribute in dir(node):
            if not attribute.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attribute)
            except Exception:  # noqa: BLE001 -- some saved values cannot be read back
                continue
            for tensor in value if isinstance(value, (tuple, list)) else [value]:
                if torch.is_tensor(tensor) and tensor.numel() > 1:
                    key = tensor.untyped_storage().data_ptr()
                    if key not in parameters:
                        seen[key] = max(seen.get(key, 0), tensor.untyped_storage().nbytes())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(seen.values())


# ------------------------------------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize("name,task", [("bert", "sequence-classification"), ("bert", "token-classification"),
                                       ("llama", "token-classification"), ("llama", "causal-lm"),
                                       ("llama-untied", "causal-lm"), ("llama", "sequence-classification"),
                                       ("t5", "seq2seq"), ("t5-gated", "seq2seq")])
def test_parameter_counts_equal_the_instantiated_model(tiny: dict[str, str], name: str, task: str) -> None:
    predicted = estimate(run_config(tiny[name], task))
    model = real_model(tiny[name], task)
    assert predicted.total_params == sum(p.numel() for p in model.parameters())
    assert predicted.trainable_params == predicted.total_params  # full fine-tuning


def test_parameter_counts_of_the_real_minilm(minilm_path: str) -> None:
    predicted = estimate(run_config("minilm", "sequence-classification", batch_size=16, max_length=128))
    model = real_model(minilm_path, "sequence-classification")
    assert predicted.total_params == sum(p.numel() for p in model.parameters()) == 22_713_986


def test_lora_trainable_count_is_rank_times_in_plus_out(tiny: dict[str, str]) -> None:
    r = 4
    method = {"name": "lora", "r": r, "target_modules": "all-linear"}
    predicted = estimate(run_config(tiny["llama"], "causal-lm", method))
    base = real_model(tiny["llama"], "causal-lm")
    targeted = [m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    expected = sum(r * (m.in_features + m.out_features) for m in targeted)
    assert predicted.trainable_params == expected
    peft_model = real_model(tiny["llama"], "causal-lm", method)
    assert predicted.trainable_params == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert predicted.total_params == sum(p.numel() for p in peft_model.parameters())
    assert predicted.parts["adapter"] == 4 * expected  # the added A/B matrices, float32


def test_lora_default_targets_on_a_classifier_match_peft(tiny: dict[str, str]) -> None:
    """peft's default targets for BERT (query, value) plus the trained copy of the classification head."""
    method = {"name": "lora", "r": 8}
    predicted = estimate(run_config(tiny["bert"], "sequence-classification", method))
    model = real_model(tiny["bert"], "sequence-classification", method)
    assert predicted.trainable_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert predicted.total_params == sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------- activations

CASES = [
    ("bert", "sequence-classification", {"name": "full"}),
    ("bert", "sequence-classification", {"name": "lora", "r": 4, "target_modules": "all-linear"}),
    ("bert", "sequence-classification", {"name": "freeze", "layers": 1}),
    ("llama", "causal-lm", {"name": "full"}),
    ("llama", "causal-lm", {"name": "lora", "r": 4, "target_modules": "all-linear"}),
    ("llama", "causal-lm", {"name": "lora", "r": 4, "dropout": 0.0}),
    ("llama-untied", "causal-lm", {"name": "freeze", "layers": 1}),
    ("llama", "causal-lm", {"name": "ia3"}),
    ("llama", "causal-lm", {"name": "prompt", "num_virtual_tokens": 8}),
    ("llama", "sequence-classification", {"name": "lora"}),
    ("bert", "token-classification", {"name": "full"}),
    ("bert", "token-classification", {"name": "lora", "r": 4, "target_modules": "all-linear"}),
    ("llama", "token-classification", {"name": "lora"}),
    ("t5", "seq2seq", {"name": "full"}),
    ("t5", "seq2seq", {"name": "lora", "r": 4, "target_modules": "all-linear"}),
    ("t5-gated", "seq2seq", {"name": "full"}),
]
if HAS_ADAPTER:
    CASES += [("llama", "causal-lm", {"name": "adapter"}),
              ("bert", "sequence-classification", {"name": "adapter", "kind": "houlsby"}),
              ("t5-gated", "seq2seq", {"name": "adapter", "kind": "houlsby"})]


@pytest.mark.parametrize("name,task,method", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]['name']}-{i}" for i, c in enumerate(CASES)])
def test_activation_accounting_matches_what_autograd_saves(tiny: dict[str, str], name: str, task: str,
                                                           method: dict) -> None:
    batch, length = 2, 16
    predicted = estimate(run_config(tiny[name], task, method, batch_size=batch, max_length=length))
    measured = saved_by_autograd(real_model(tiny[name], task, method), task, batch, length)
    assert predicted.details["saved"] == pytest.approx(measured, rel=0.10)


def test_activation_accounting_on_the_real_smollm_shape(smollm_path: str) -> None:
    """smollm2-135m's real width and GQA (blocks dominate at this length): LoRA on every Linear, with dropout."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(smollm_path)
    config.num_hidden_layers = 2  # the per-block accounting is what is checked; 30 blocks would be slow
    folder = Path.cwd() / "smollm-2-layers"
    config.save_pretrained(folder)
    method = {"name": "lora", "r": 16, "target_modules": "all-linear"}
    predicted = estimate(run_config(str(folder), "causal-lm", method, batch_size=1, max_length=64))
    measured = saved_by_autograd(real_model(str(folder), "causal-lm", method), "causal-lm", 1, 64)
    assert predicted.details["saved"] == pytest.approx(measured, rel=0.05)


def test_gradient_checkpointing_lowers_the_activation_estimate(tiny: dict[str, str]) -> None:
    for folder, task, method in [(tiny["llama-untied"], "causal-lm", {"name": "full"}),
                                 ("smollm2-135m", "causal-lm", {"name": "lora", "target_modules": "all-linear"}),
                                 ("minilm", "sequence-classification", {"name": "full"})]:
        config = run_config(folder, task, method, batch_size=4, max_length=256)
        plain, checkpointed = estimate(config), estimate(config, gradient_checkpointing=True)
        assert checkpointed.gradient_checkpointing and not plain.gradient_checkpointing
        assert checkpointed.parts["activations"] < plain.parts["activations"]
        assert checkpointed.total < plain.total
        assert checkpointed.flops_per_token > plain.flops_per_token  # the forward pass runs twice
    smollm = run_config("smollm2-135m", "causal-lm", {"name": "full"}, batch_size=4, max_length=256)
    plain, checkpointed = estimate(smollm), estimate(smollm, gradient_checkpointing=True)
    blocks = plain.details["saved"] - plain.details["outside_blocks_bytes"]
    kept = checkpointed.details["saved"] - checkpointed.details["outside_blocks_bytes"]
    assert kept < 0.2 * blocks  # 30 block inputs + one block instead of 30 blocks


def test_activations_grow_with_batch_and_length(tiny: dict[str, str]) -> None:
    small = estimate(run_config("minilm", "sequence-classification", batch_size=8, max_length=128))
    double_batch = estimate(run_config("minilm", "sequence-classification", batch_size=16, max_length=128))
    double_length = estimate(run_config("minilm", "sequence-classification", batch_size=8, max_length=256))
    assert double_batch.parts["activations"] == pytest.approx(2 * small.parts["activations"], rel=0.01)
    # BERT trains with attention dropout: the unfused attention keeps heads x L x L per sequence
    assert double_length.parts["activations"] > 2.2 * small.parts["activations"]


# -------------------------------------------------------------------------------------------------------- weights

@pytest.mark.parametrize("double_quant,low,high", [(True, 7.5, 8.0), (False, 7.0, 7.5)])
def test_quantized_linear_weights_take_about_an_eighth(double_quant: bool, low: float, high: float) -> None:
    qlora = estimate(run_config("smollm2-135m", "causal-lm", {"name": "qlora", "double_quant": double_quant},
                                batch_size=1, max_length=64))
    full = estimate(run_config("smollm2-135m", "causal-lm", {"name": "full"}, batch_size=1, max_length=64))
    quantized = qlora.details["quantized_params"]
    assert quantized == 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)  # every block Linear, no head
    linear_bytes = qlora.parts["weights"] - (full.total_params - quantized) * 4
    assert low < quantized * 4 / linear_bytes <= high
    assert full.parts["weights"] == full.total_params * 4
    eight_bit = estimate(run_config("smollm2-135m", "causal-lm", {"name": "qlora", "bits": 8},
                                    batch_size=1, max_length=64))
    assert eight_bit.parts["weights"] - (full.total_params - quantized) * 4 == pytest.approx(quantized, rel=0.01)


def test_quantized_layers_are_the_ones_bitsandbytes_quantizes(tiny_llama: str) -> None:
    pytest.importorskip("bitsandbytes")
    from tuneforge.methods.registry import load_kwargs, validate_method
    from tuneforge.models.assets import resolve_model
    from tuneforge.models.loading import load_generative

    method = {"name": "qlora", "r": 4}
    predicted = estimate(run_config(tiny_llama, "causal-lm", method))
    model = load_generative(resolve_model(tiny_llama), task_spec("causal-lm"), **load_kwargs(validate_method(method)))
    quantized = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert quantized
    assert predicted.details["quantized_params"] == sum(m.out_features * m.in_features for m in quantized)


# ---------------------------------------------------------------------------------------------- advice and table

def test_advise_is_silent_when_it_fits_and_suggests_in_order_when_not() -> None:
    config = run_config("smollm2-135m", "causal-lm", {"name": "full"}, batch_size=8, max_length=512)
    predicted = estimate(config)
    assert advise(predicted, available=10 * predicted.total) == []
    assert advise(predicted, available=int(predicted.total / (1 - memory.SAFETY_MARGIN)) + 1) == []
    tight = int(predicted.total * 0.6)
    suggestions = advise(predicted, available=tight)
    assert len(suggestions) >= 3
    assert "gradient checkpointing" in suggestions[0]
    assert "batch_size" in suggestions[1]
    assert "qlora" in suggestions[2]
    # the batch size offered fits the budget when estimated again
    size = int(suggestions[1].split("batch_size to ")[1].split(":")[0])
    assert 1 <= size < 8
    assert estimate(run_config("smollm2-135m", "causal-lm", {"name": "full"}, batch_size=size,
                               max_length=512)).total <= tight * (1 - memory.SAFETY_MARGIN)


def test_advise_when_nothing_fits_says_so() -> None:
    predicted = estimate(run_config("smollm2-135m", "causal-lm", {"name": "full"}, batch_size=4, max_length=256))
    suggestions = advise(predicted, available=64 * memory.MiB)
    assert "gradient checkpointing" in suggestions[0]
    assert "even batch size 1" in suggestions[1]
    assert "qlora" in suggestions[2]
    assert "none fits alone" in suggestions[-1]


def test_advise_on_qlora_skips_the_qlora_suggestion() -> None:
    predicted = estimate(run_config("smollm2-135m", "causal-lm", {"name": "qlora"}, batch_size=8, max_length=512))
    suggestions = advise(predicted, available=int(predicted.total * 0.7))
    assert suggestions and not any("switch to method qlora" in s for s in suggestions)


def test_table_lists_every_part_and_the_total() -> None:
    predicted = estimate(run_config("minilm", "sequence-classification", {"name": "lora"}, batch_size=16,
                                    max_length=128))
    lines = predicted.table().splitlines()
    assert lines[0].split()[:2] == ["part", "MiB"]
    for part in ("weights", "adapter", "gradients", "optimizer", "activations", "workspace"):
        assert any(line.split()[0] == part for line in lines[1:-1]), part
        assert set(predicted.parts) >= {part}
    assert lines[-1].split()[0] == "total"
    assert float(lines[-1].split()[1].replace(",", "")) == pytest.approx(predicted.total / memory.MiB, abs=0.1)
    static = sum(predicted.parts[p] for p in ("weights", "adapter", "optimizer", "workspace"))
    assert predicted.total == static + max(predicted.parts["activations"], predicted.parts["gradients"],
                                           predicted.details["evaluation_bytes"])


def test_a_hand_made_estimate_still_gets_advice() -> None:
    made = Estimate(parts={"weights": 10}, total=10 * memory.MiB, trainable_params=1, total_params=1,
                    flops_per_token=1.0, gradient_checkpointing=False)
    assert len(advise(made, available=memory.MiB)) == 3
    assert "total" in made.table().splitlines()[-1]


# ------------------------------------------------------------------------------------------------------- compute

def test_flops_per_token_six_n_full_four_n_frozen() -> None:
    full = estimate(run_config("smollm2-135m", "causal-lm", {"name": "full"}, batch_size=1, max_length=256))
    lora = estimate(run_config("smollm2-135m", "causal-lm", {"name": "lora"}, batch_size=1, max_length=256))
    matmul = 134_515_008 - 61 * 576  # norms out; the embedding lookup out and the tied LM head's matmul in
    attention = 12 * 30 * 576 * 256
    assert full.flops_per_token == pytest.approx(6 * matmul + attention, rel=1e-6)
    assert lora.flops_per_token == pytest.approx(4 * matmul + attention, rel=0.01)
    assert seconds_per_epoch(full, 1_000_000, 1e12) == pytest.approx(full.flops_per_token * 1e6 / 1e12)
    with pytest.raises(ValueError):
        seconds_per_epoch(full, 10, 0)


def test_measure_flops_per_second_and_available_memory() -> None:
    import psutil

    assert measure_flops_per_second(0.05) > 1e8
    free = available_memory("cpu")
    assert 0 < free <= psutil.virtual_memory().total


def test_seq2seq_joined_encoders_without_building_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       minilm_path: str) -> None:
    """``minilm+minilm`` is estimated from the two configs: the joined model is not built or cached."""
    from transformers import AutoConfig, EncoderDecoderConfig, EncoderDecoderModel

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    predicted = estimate(run_config("minilm+minilm", "seq2seq", {"name": "lora"}, batch_size=2, max_length=32))
    assert not (tmp_path / "cache" / "encoder-decoder").exists()
    assert predicted.details["family"] == "bert"
    encoder, decoder = AutoConfig.from_pretrained(minilm_path), AutoConfig.from_pretrained(minilm_path)
    with torch.device("meta"):
        joined = EncoderDecoderModel(config=EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    base = sum(p.numel() for p in joined.parameters())
    assert predicted.total_params - predicted.trainable_params == base  # LoRA adds only trainable parameters
    assert math.isfinite(predicted.flops_per_token) and predicted.total > predicted.parts["weights"]


def test_estimate_command_and_the_warning_before_a_run(tiny_bert, tiny_csv, tmp_path, monkeypatch, capsys):
    import json

    import yaml

    import tuneforge.planning.memory as memory
    from conftest import tiny_config
    from tuneforge.cli import main
    from tuneforge.config import load_config
    from tuneforge.pipelines.finetune import finetune

    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 1}, tracking={"enabled": False},
                         evaluation={"baselines": ["majority"]})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["estimate", str(path), "--tokens", "10000"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "time per epoch" in out and "fits" in out
    assert main(["estimate", str(path)]) == 0  # labels and tokens read from the config's data
    out = capsys.readouterr().out
    assert "from the data: 3 labels, " in out and "training tokens per epoch" in out and "time per epoch (" in out
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 2**20)  # 1 MiB: nothing fits
    lines: list[str] = []
    result = finetune(load_config(config), output=tmp_path / "run", log=lines.append)
    warning = next(line for line in lines if line.startswith("memory estimate"))
    assert "will not fit" in warning and any("batch_size" in line for line in lines)
    saved = json.loads((result.run_dir / "estimate.json").read_text())
    assert saved["available_bytes"] == 2**20 and saved["total_bytes"] > saved["available_bytes"]
