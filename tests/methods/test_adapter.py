"""Bottleneck adapters on tiny random BERT, Llama and T5 models built from configs (no files, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuneforge.methods.registry import available_methods

available_methods()  # load the built-in methods first (a direct import below would otherwise stop that)
from tuneforge.methods import adapter_layers as A  # noqa: E402
from tuneforge.tasks.registry import task_spec  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces:FutureWarning")  # EncoderDecoderModel
HIDDEN, FF, LAYERS, VOCAB, LABELS = 32, 64, 2, 100, 2
TASKS = {"bert": "sequence-classification", "llama": "causal-lm", "t5": "seq2seq", "t5-gated": "seq2seq",
         "bert2bert": "seq2seq"}


def build(arch: str) -> torch.nn.Module:
    """A tiny random model, the same weights for the same arch in any process. Weights are drawn wider than
    transformers' default (std 0.2, not 0.02) so that, like a pretrained model, the frozen head gives logits
    large enough to memorize with."""
    import transformers as tr

    torch.manual_seed(0)
    bert = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                intermediate_size=FF, max_position_embeddings=64, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, initializer_range=0.2)
    t5 = dict(vocab_size=VOCAB, d_model=HIDDEN, d_kv=8, d_ff=FF, num_layers=LAYERS, num_heads=4, dropout_rate=0.0,
              decoder_start_token_id=0, pad_token_id=0)
    if arch == "bert":
        model = tr.BertForSequenceClassification(tr.BertConfig(num_labels=LABELS, **bert))
    elif arch == "llama":
        model = tr.LlamaForCausalLM(tr.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FF,
                                                   num_hidden_layers=LAYERS, num_attention_heads=4,
                                                   num_key_value_heads=2, max_position_embeddings=64,
                                                   initializer_range=0.2))
    elif arch == "t5":
        model = tr.T5ForConditionalGeneration(tr.T5Config(**t5))
    elif arch == "t5-gated":
        model = tr.T5ForConditionalGeneration(tr.T5Config(feed_forward_proj="gated-gelu", **t5))
    else:  # two BERTs joined, as tuneforge builds "minilm+minilm"
        config = tr.EncoderDecoderConfig.from_encoder_decoder_configs(
            tr.BertConfig(**bert), tr.BertConfig(is_decoder=True, add_cross_attention=True, **bert))
        config.decoder_start_token_id, config.pad_token_id = 1, 0
        model = tr.EncoderDecoderModel(config=config)
    return model.eval()


def batch(arch: str, seed: int = 1, rows: int = 4, length: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (rows, length), generator=generator)
    if TASKS[arch] == "sequence-classification":
        return {"input_ids": ids, "labels": torch.arange(rows) % LABELS}
    if TASKS[arch] == "causal-lm":
        return {"input_ids": ids, "labels": ids}
    return {"input_ids": ids, "labels": torch.randint(2, VOCAB, (rows, length // 2), generator=generator)}


def logits(model: torch.nn.Module, arch: str) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch(arch, seed=7)).logits


def adapted(arch: str, **options) -> torch.nn.Module:
    return A.apply(build(arch), A.AdapterConfig(**options), task_spec(TASKS[arch]))


def expected_adapter_parameters(arch: str, kind: str, reduction: int) -> int:
    """From the architecture: sites per block times blocks, every site HIDDEN wide."""
    houlsby = kind == "houlsby"
    if arch in ("bert", "llama"):
        sites = LAYERS * (2 if houlsby else 1)
    else:  # encoder blocks: self-attention + feed-forward; decoder blocks: + cross-attention
        sites = LAYERS * (2 if houlsby else 1) + LAYERS * (3 if houlsby else 1)
    return sites * A.adapter_parameter_count(HIDDEN, max(1, HIDDEN // reduction))


def adapter_names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters() if ".adapter." in n}


@pytest.mark.parametrize("kind", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("arch", ["bert", "llama", "t5", "t5-gated", "bert2bert"])
def test_starts_equal_to_the_base_model(arch: str, kind: str):
    base = logits(build(arch), arch)
    torch.testing.assert_close(logits(adapted(arch, kind=kind, init_scale=1e-5), arch), base, atol=1e-3, rtol=0)
    assert torch.equal(logits(adapted(arch, kind=kind, init_scale=0.0), arch), base)  # zero up-projection: exact


@pytest.mark.parametrize("kind", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("arch", ["bert", "llama", "t5", "bert2bert"])
def test_trainable_parameters_are_the_adapters_in_closed_form(arch: str, kind: str):
    model = adapted(arch, kind=kind, reduction_factor=4)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    adapters = sum(v for n, v in trainable.items() if ".adapter." in n)
    assert adapters == expected_adapter_parameters(arch, kind, 4)
    head = HIDDEN * LABELS + LABELS if arch == "bert" else 0  # only a classification head trains, never an LM head
    assert sum(trainable.values()) == adapters + head
    assert all(p.requires_grad for n, p in model.named_parameters() if ".adapter." in n)


def test_sites_and_widths():
    model = adapted("bert", kind="houlsby", reduction_factor=64)  # 32 // 64 = 0 -> at least 1
    sites = [n for n, m in model.named_modules() if isinstance(m, A.Adapted)]
    assert sites == [f"bert.encoder.layer.{i}.{s}" for i in range(LAYERS) for s in ("attention.output.dense",
                                                                                   "output.dense")]
    assert all(m.adapter.down.out_features == 1 for m in model.modules() if isinstance(m, A.Adapted))
    assert "bert.encoder.layer.0.output.dense.base.weight" in dict(model.named_parameters())
    llama = adapted("llama", kind="houlsby")
    assert [n for n, m in llama.named_modules() if isinstance(m, A.Adapted)][:2] == [
        "model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj"]
    t5 = adapted("t5", kind="houlsby")
    decoder = [n for n, m in t5.named_modules() if isinstance(m, A.Adapted) and n.startswith("decoder.block.0.")]
    assert decoder == ["decoder.block.0.layer.0.SelfAttention.o", "decoder.block.0.layer.1.EncDecAttention.o",
                       "decoder.block.0.layer.2.DenseReluDense.wo"]


def test_train_norms_and_no_head():
    model = adapted("bert", train_head=False, train_norms=True)
    outside = {n for n, p in model.named_parameters() if p.requires_grad and ".adapter." not in n}
    assert outside and all("LayerNorm" in n for n in outside)
    assert len(outside) == 2 * (1 + 2 * LAYERS)  # weight + bias: embeddings + two per layer


def train(model: torch.nn.Module, arch: str, steps: int, seed: int = 1) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    data, losses = batch(arch, seed=seed, rows=8), []
    model.train()
    for _ in range(steps):
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("arch", "kind"), [("bert", "houlsby"), ("llama", "pfeiffer"), ("t5", "houlsby")])
def test_only_adapters_and_head_change(arch: str, kind: str):
    # gelu, not relu: a relu unit dead on this batch keeps its zero-initialised bias exactly (even under weight decay)
    model = adapted(arch, kind=kind, non_linearity="gelu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, arch, steps=3)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    head = {n for n in before if n.startswith("classifier.")} if arch == "bert" else set()
    assert changed == adapter_names(model) | head  # every trainable one moved, every other one is bit-identical


@pytest.mark.parametrize(("arch", "kind"), [("bert", "pfeiffer"), ("llama", "pfeiffer"), ("llama", "houlsby"),
                                           ("t5", "houlsby")])
def test_loss_falls_on_a_memorizable_set(arch: str, kind: str):
    losses = train(adapted(arch, kind=kind, reduction_factor=2), arch, steps=30)
    assert losses[-1] < 0.5 * losses[0], losses


def test_bottleneck_options():
    x = torch.randn(3, 8)
    block = A.Bottleneck(8, 2, "tanh", residual=False, init_scale=0.5)
    assert torch.allclose(block(x), block.up(torch.tanh(block.down(x))))
    assert torch.equal(A.Bottleneck(8, 2, init_scale=0.0)(x), x)
    assert sum(p.numel() for p in block.parameters()) == A.adapter_parameter_count(8, 2) == 2 * 8 * 2 + 2 + 8
    with pytest.raises(ValueError):
        A.AdapterConfig(kind="lora")
    with pytest.raises(ValueError):
        A.AdapterConfig(reduction_factor=0)


LOAD_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
import test_adapter as t
for arch, folder in {folders!r}:
    model = t.A.load_adapter(t.build(arch), folder)
    torch.save((t.logits(model, arch), sorted(n for n, p in model.named_parameters() if p.requires_grad)),
               folder + '/reloaded.pt')
"""


def test_save_and_load_in_a_fresh_process(tmp_path: Path):
    folders, expected = [], {}
    for arch in ("bert", "llama", "t5"):
        model = adapted(arch, kind="houlsby", non_linearity="gelu", reduction_factor=4)
        train(model, arch, steps=3)
        folder = tmp_path / arch
        A.save_adapter(model, folder)
        folders.append((arch, str(folder)))
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        expected[arch] = (logits(model, arch), trainable)
        saved = json.loads((folder / A.CONFIG_FILE).read_text())
        assert set(saved) == {"format", "version", "config", "hidden_size", "bottleneck", "sites",
                              "trained_outside_adapters"}
        assert saved["format"] == "tuneforge-bottleneck-adapter" and saved["version"] == 1
        assert saved["config"] == A.AdapterConfig(kind="houlsby", non_linearity="gelu", reduction_factor=4).model_dump()
        assert (saved["hidden_size"], saved["bottleneck"]) == (HIDDEN, HIDDEN // 4)
        assert saved["sites"] == [n for n, m in model.named_modules() if isinstance(m, A.Adapted)]
        head = ["classifier.weight", "classifier.bias"] if arch == "bert" else []
        assert saved["trained_outside_adapters"] == head
    script = LOAD_SCRIPT.format(tests=str(Path(__file__).parent), folders=folders)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for arch, folder in folders:
        reloaded, trainable = torch.load(Path(folder) / "reloaded.pt")
        assert not torch.equal(reloaded, logits(build(arch), arch))  # the adapters did something
        torch.testing.assert_close(reloaded, expected[arch][0], atol=1e-6, rtol=0)
        assert trainable == expected[arch][1]


def test_load_is_strict(tmp_path: Path):
    from safetensors.torch import load_file, save_file

    A.save_adapter(adapted("llama"), tmp_path)
    weights = load_file(str(tmp_path / A.WEIGHTS_FILE))
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(tmp_path / A.WEIGHTS_FILE))
    with pytest.raises(ValueError, match="missing"):
        A.load_adapter(build("llama"), tmp_path)
    save_file(weights, str(tmp_path / A.WEIGHTS_FILE))
    with pytest.raises(ValueError, match="not a Linear"):
        A.load_adapter(build("bert"), tmp_path)  # another architecture: the saved sites do not exist
    with pytest.raises(ValueError, match="no bottleneck adapters"):
        A.save_adapter(build("llama"), tmp_path)


def test_unsupported_model_is_refused():
    plain = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    message = ("method 'adapter' found no transformer blocks it knows in Sequential "
               "(BERT-, Llama- and T5-style are supported)")
    with pytest.raises(ValueError) as error:
        A.apply(plain, A.AdapterConfig(), task_spec("causal-lm"))
    assert str(error.value) == message
    assert all(p.requires_grad for p in plain.parameters())  # nothing was changed
    with pytest.raises(ValueError, match="already has bottleneck adapters"):
        A.apply(adapted("llama"), A.AdapterConfig(), task_spec("causal-lm"))


def test_registered():
    from tuneforge.methods.registry import spec_for, validate_method

    spec = spec_for("adapter")
    assert spec.config_class is A.AdapterConfig and spec.save == "tuneforge.methods.adapter_layers:save_adapter"
    assert validate_method({"name": "adapter", "kind": "houlsby"}).kind == "houlsby"
