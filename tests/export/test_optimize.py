"""tuneforge optimize: quantized and pruned variants are model folders that load like runs; Wanda and structured
pruning do what their definitions say; --compare measures every variant against the fp32 model in one table."""

from __future__ import annotations

import json

import pytest

from conftest import generative_config, tiny_config
from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.pipelines.finetune import finetune


@pytest.fixture(scope="module")
def bert_run(tiny_bert, tiny_csv, tmp_path_factory):
    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 4}, tracking={"enabled": False})
    return finetune(load_config(config), output=tmp_path_factory.mktemp("optimize") / "run", log=lambda _: None).run_dir


TEXTS = ["match goal team coach", "software chip phone", "bread cheese soup", "the striker scored twice"]


def test_a_quantized_variant_loads_like_a_run_and_predicts_as_it_does(bert_run, tmp_path, capsys):
    from tuneforge.pipelines.predict import load_predictor

    assert main(["optimize", str(bert_run), "--quantize", "int8", "--output", str(tmp_path / "q")]) == 0
    assert "quantized int8" in capsys.readouterr().out
    meta = json.loads((tmp_path / "q" / "tuneforge.json").read_text())
    assert meta["method"] == "full" and meta["merged_from"] == "lora" and meta["optimized"]["quantize"] == "int8"
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    quantized = load_predictor(tmp_path / "q")
    layer = quantized.model.bert.encoder.layer[0].intermediate.dense
    assert type(layer.weight).__name__ == "Int8Tensor"  # int8 weights, not a float copy
    original = load_predictor(bert_run).predict(TEXTS)
    assert [p["label"] for p in quantized.predict(TEXTS)] == [p["label"] for p in original]

    assert main(["optimize", str(bert_run), "--quantize", "torch-int8-dynamic", "--output", str(tmp_path / "d")]) == 0
    dynamic = load_predictor(tmp_path / "d").model  # torch's dynamic int8 has no saved form: applied when loaded
    assert "quantized.dynamic" in type(dynamic.bert.encoder.layer[0].intermediate.dense).__module__
    assert main(["optimize", str(bert_run), "--quantize", "int4", "--output", str(tmp_path / "x")]) == 2
    assert "--quantize int4: unknown (choose from int8, int8-dynamic" in capsys.readouterr().err


def test_wanda_zeroes_the_lowest_weight_times_activation_in_every_row():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tuneforge.export.prune import input_norms, prune

    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    calibration = [list(torch.randint(5, 200, (12,))) for _ in range(6)]
    linear = model.bert.encoder.layer[1].output.dense
    norms = input_norms(model, [("x", linear)], calibration)["x"]
    expected = (linear.weight.abs() * norms).argsort(dim=1, stable=True)[:, :32]  # per row, the lowest half
    head_before = model.classifier.weight.clone()
    facts = prune(model, "wanda", 0.5, calibration)
    assert facts["zeroed_share_of_block_weights"] == 0.5 and facts["linears"] == 12
    zeros = linear.weight == 0
    assert zeros.sum(dim=1).eq(32).all()  # half of every output row
    assert torch.equal(zeros.gather(1, expected), torch.ones_like(expected, dtype=torch.bool))
    assert torch.equal(model.classifier.weight, head_before)  # the task's head is never pruned
    torch.manual_seed(0)
    fresh = BertForSequenceClassification(config).eval()
    prune(fresh, "magnitude", 0.5, calibration)
    assert not torch.equal(fresh.bert.encoder.layer[1].output.dense.weight == 0, zeros)  # activations changed it


def test_structured_pruning_removes_channels_and_head_groups_and_the_model_still_loads(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from tuneforge.export.prune import prune

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    calibration = [list(torch.randint(0, 300, (16,))) for _ in range(4)]
    facts = prune(model, "structured", 0.5, calibration)
    assert facts["mlp_channels"] == [128, 64] and facts["kv_groups"] == [2, 1]
    assert facts["params_after"] < facts["params_before"]
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (32, 64) and attention.k_proj.weight.shape == (16, 64)
    assert attention.o_proj.weight.shape == (64, 32) and model.model.layers[1].mlp.down_proj.weight.shape == (64, 64)
    ids = torch.tensor([calibration[0]])
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path / "pruned")  # a plain transformers config: smaller, not masked
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert (loaded.config.intermediate_size, loaded.config.num_attention_heads, loaded.config.num_key_value_heads) \
        == (64, 2, 1)
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, expected, atol=1e-5)
        assert loaded.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3


def test_compare_measures_each_variant_against_fp32_on_the_test_split(bert_run, tmp_path, capsys):
    variants = "torchao int8 weight-only,structured 25%,bnb nf4"
    assert main(["optimize", str(bert_run), "--compare", "--variants", variants, "--output", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["variant", "size", "MB"] and "optimize.html" in out
    result = json.loads((tmp_path / "t" / "optimize.json").read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == ["fp32", "torchao int8 weight-only", "structured 25%", "bnb nf4"]
    reference, int8, structured = rows["fp32"], rows["torchao int8 weight-only"], rows["structured 25%"]
    metrics = json.loads((bert_run / "metrics.json").read_text())["test"]["finetuned"]
    assert reference["figures"]["n"] == metrics["n"]
    assert reference["figures"]["minus_reference"] == 0 and reference["figures"]["same_prediction_share"] == 1
    low, high = int8["figures"]["ci"]
    assert low <= int8["figures"]["value"] <= high and len(int8["figures"]["minus_reference_ci"]) == 2
    assert int8["bytes"] < reference["bytes"] and structured["bytes"] < reference["bytes"]
    assert structured["built"]["mlp_channels"] == [64, 48]
    for row in (reference, int8, structured):
        assert row["speed"]["per_second"] > 0 and row["speed"]["repeats"] == 3 and row["peak_rss_mb"] > 0
    assert "figures" in rows["bnb nf4"] or rows["bnb nf4"]["error"]  # a variant a library cannot do here: its row says
    page = (tmp_path / "t" / "optimize.html").read_text()
    assert "<img" in page and "structured 25%" in page and "paired difference" in page


@pytest.mark.slow
def test_gguf_rows_of_the_table_are_run_by_llama_cpp(tiny_llama, chat_jsonl, tmp_path):
    """A causal-lm run's GGUF q8_0 and q4_k_m exports, run by llama.cpp, in the same table as the fp32 model: the
    same perplexity definition (each test answer's tokens, the run's own split), greedy answers, a timed workload."""
    pytest.importorskip("llama_cpp", reason="GGUF rows need llama-cpp-python (make llama)")
    from tuneforge.pipelines.optimize import chosen_rows, compare

    run = finetune(load_config(generative_config(tiny_llama, chat_jsonl, train={"epochs": 1},
                                                 evaluation={"baselines": []})),
                   output=tmp_path / "run", log=lambda _: None).run_dir
    result = compare(run, tmp_path / "table", chosen_rows("gguf q8_0,gguf q4_k_m"), threads=1, log=lambda _: None)
    rows = {row["name"]: row for row in result["rows"]}
    reference, q8, q4 = rows["fp32"], rows["gguf q8_0"], rows["gguf q4_k_m"]
    assert q4["bytes"] < q8["bytes"] < reference["bytes"]  # (a tiny model: its vocabulary is most of either file)
    # q8_0 keeps the model: perplexity within 2% of fp32's (llama.cpp's own computation of the same tokens)
    assert abs(q8["figures"]["value"] / reference["figures"]["value"] - 1) < 0.02, (q8["figures"], reference["figures"])
    assert q8["figures"]["n"] == reference["figures"]["n"] and q8["speed"]["per_second"] > 0
    assert "figures" in q4 and q4["built"]["gguf"] == "q4_k_m"
    assert "run by llama.cpp" in (tmp_path / "table" / "optimize.html").read_text()
