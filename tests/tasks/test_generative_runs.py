"""End-to-end generative runs on tiny models: instruction tuning (causal-lm), continued pretraining on raw
text, seq2seq (a MiniLM encoder-decoder and a tiny T5), and using the result (generate, chat)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config import load_config
from tuneforge.errors import ConfigError
from tuneforge.pipelines.finetune import finetune

from conftest import generative_config, losses


def test_instruction_tuning_run_end_to_end(tiny_llama, chat_jsonl, tmp_path):
    result = finetune(load_config(generative_config(tiny_llama, chat_jsonl)), output=tmp_path / "run",
                      log=lambda _: None)
    run = result.run_dir
    test = result.metrics["test"]
    assert set(test["baselines"]) == {"zero_shot", "few_shot"}
    for figures in (test["finetuned"], *test["baselines"].values()):
        for metric in ("rougeL", "bleu", "chrf", "exact_match", "ended_rate"):
            low, high = figures[f"{metric}_ci"]
            assert low <= figures[metric] <= high
    assert test["finetuned"]["perplexity"] < test["baselines"]["zero_shot"]["perplexity"]  # it learned the answers
    assert "rougeL_ci" in test["finetuned_minus_baseline"]["few_shot"]
    assert losses(run)[-1] < losses(run)[0]
    report = json.loads((run / "data_report.json").read_text())
    assert report["template_lint"]["end_token"] == "<|im_end|>" and report["template_lint"]["end_token_in_labels_pct"] == 100
    assert report["tokens"]["packing"] and report["tokens"]["padding_share"] <= report["tokens"]["padding_share_unpacked"]
    assert report["tokens"]["pack_by"] == "batch"
    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == test["n_prompts"] == 6
    page = (run / "report.html").read_text()
    assert "id='samples'" in page and f"{test['finetuned']['rougeL']:.4f}" in page
    assert html_escape(predictions[0]["reference"]) in page
    assert (run / "model" / "adapter_config.json").exists()

    # the saved run answers the same prompt the same way (greedy), through the library and the CLI
    from tuneforge.cli import main
    from tuneforge.pipelines.generate import load_generator

    generator = load_generator(run, max_new_tokens=6)
    answer = generator.generate([predictions[0]["prompt"]])[0]
    assert answer["output"] == predictions[0]["finetuned"] and answer["ended"] == predictions[0]["finetuned_ended"]
    assert main(["generate", str(run), "--prompt", predictions[0]["prompt"], "--max-new-tokens", "6"]) == 0


def html_escape(text: str) -> str:
    import html

    return html.escape(text)


def test_chat_keeps_the_conversation(tiny_llama, chat_jsonl, tmp_path):
    config = generative_config(tiny_llama, chat_jsonl, train={"epochs": 1}, evaluation={"baselines": []})
    run = finetune(load_config(config), output=tmp_path / "run", log=lambda _: None).run_dir
    from tuneforge.pipelines.generate import chat_loop, load_generator

    generator = load_generator(run, max_new_tokens=5)
    said = iter(["7 plus one, goal?", "", "and 8?", "/exit"])
    seen_prompts = []
    original = generator.prompt_ids
    generator.prompt_ids = lambda messages: seen_prompts.append(list(messages)) or original(messages)
    written: list[str] = []
    history = chat_loop(generator, read=lambda _: next(said), write=written.append)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert seen_prompts[1][:2] == history[:2]  # the second question is asked with the first exchange before it
    assert "".join(written).count("\n") == 2  # the empty line was ignored, not the end
    said = iter(["7 plus one, goal?", "/reset", "and 8?", "/exit"])
    written.clear()
    history = chat_loop(generator, read=lambda _: next(said), write=written.append)
    assert "(conversation cleared: 1 exchange forgotten)\n" in written and len(history) == 2


def test_continued_pretraining_lowers_held_out_perplexity(tiny_llama, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(40):  # a tiny 'domain': formulaic sentences a small model can learn
        (folder / f"doc{i:02d}.txt").write_text(
            " ".join(f"the turbine {i % 7} reads {j} bar at valve {j % 5}." for j in range(i, i + 6)))
    config = generative_config(tiny_llama, folder, data={"dataset_format": "text", "max_length": 64},
                               method={"name": "full"}, train={"epochs": 4, "learning_rate": 1e-2})
    result = finetune(load_config(config), output=tmp_path / "run", log=lambda _: None)
    test = result.metrics["test"]
    before, after = test["baselines"]["base_model"]["perplexity"], test["finetuned"]["perplexity"]
    assert after < before / 4, (before, after)
    assert test["finetuned_minus_baseline"]["base_model"]["perplexity"] == pytest.approx(after - before, abs=1e-3)
    assert "perplexity" in (result.run_dir / "report.html").read_text()
    # a raw-text run continues the text it is given (no chat template), through generate as through serve
    from tuneforge.pipelines.generate import load_generator

    generator = load_generator(result.run_dir, max_new_tokens=8)
    assert generator.formatter is None and not generator.encoder_decoder
    asked = [{"role": "user", "content": "the turbine 3 reads"}]
    assert generator.prompt_ids(asked) == generator.tokenizer("the turbine 3 reads")["input_ids"]  # no template
    continued = generator.generate(["the turbine 3 reads"])[0]
    assert continued["new_tokens"] >= 1 and isinstance(continued["output"], str)


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory) -> Path:
    from conftest import make_chat_rows

    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    rows = [{"prompt": r["messages"][0]["content"], "completion": r["messages"][1]["content"]}
            for r in make_chat_rows(48)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_seq2seq_minilm_encoder_decoder_with_lora(qa_jsonl, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    config = generative_config("minilm+minilm", qa_jsonl, task="seq2seq", train={"epochs": 1})
    result = finetune(load_config(config), output=tmp_path / "run", log=lambda _: None)
    test = result.metrics["test"]
    assert set(test["baselines"]) == {"copy_input"} and test["finetuned"]["perplexity"] > 1
    params = json.loads((result.run_dir / "params.json").read_text())
    assert 0 < params["trainable"] < params["total"] / 10
    assert (tmp_path / "cache" / "encoder-decoder" / "minilm+minilm" / "config.json").exists()
    from tuneforge.pipelines.generate import load_generator

    assert load_generator(result.run_dir, max_new_tokens=4).generate(["3 plus one, goal?"])[0]["new_tokens"] <= 4


def test_seq2seq_tiny_t5_full(qa_jsonl, minilm_path, tmp_path):
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.sep_token_id)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    run_config = generative_config(str(tmp_path / "t5"), qa_jsonl, task="seq2seq", method={"name": "full"},
                                   train={"epochs": 4, "learning_rate": 3e-3})
    result = finetune(load_config(run_config), output=tmp_path / "run", log=lambda _: None)
    assert losses(result.run_dir)[-1] < losses(result.run_dir)[0]
    assert result.metrics["test"]["finetuned"]["n"] == result.metrics["test"]["n_prompts"]


def test_generative_config_errors(tiny_llama, chat_jsonl):
    with pytest.raises(ConfigError, match="early_stopping.metric.*loss"):
        load_config(generative_config(tiny_llama, chat_jsonl, train={"early_stopping": {"metric": "macro_f1"}}))
    with pytest.raises(ConfigError, match="majority do not apply to task causal-lm"):
        load_config(generative_config(tiny_llama, chat_jsonl, evaluation={"baselines": ["majority"]}))
    config = load_config(generative_config(tiny_llama, chat_jsonl))
    assert config.train.early_stopping.metric == "loss" and config.evaluation.baselines == ["zero_shot", "few_shot"]


def test_qlora_trains_adapters_on_a_4bit_base(smollm_path, chat_jsonl, tmp_path):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # bitsandbytes' CPU inference kernel needs layers at least one 64-value quantization block wide
    tiny_llama = str(tmp_path / "llama64")
    tokenizer = AutoTokenizer.from_pretrained(smollm_path)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, bos_token_id=1, eos_token_id=2,
                                 tie_word_embeddings=True)).save_pretrained(tiny_llama)
    tokenizer.save_pretrained(tiny_llama)

    from tuneforge.methods.registry import apply_method, load_kwargs
    from tuneforge.models.assets import resolve_model
    from tuneforge.models.loading import load_generative
    from tuneforge.tasks.registry import task_spec

    config = load_config(generative_config(tiny_llama, chat_jsonl, method={"name": "qlora", "r": 4, "alpha": 8,
                                                                           "dropout": 0.0, "target_modules": "all-linear"},
                                           train={"epochs": 2}, evaluation={"baselines": []}))
    model = load_generative(resolve_model(tiny_llama), task_spec("causal-lm"), **load_kwargs(config.method))
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7 and quantized[0].weight.quant_type == "nf4"  # 2 layers x (q,k,v,o,gate,up,down)
    assert quantized[0].weight.quant_state.nested  # double quantization
    model = apply_method(model, config.method, task_spec("causal-lm"))
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    assert losses(result.run_dir)[-1] < losses(result.run_dir)[0]
    adapter = json.loads((result.run_dir / "model" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4
    from tuneforge.pipelines.generate import load_generator

    assert load_generator(result.run_dir, max_new_tokens=3).generate(["1 plus one, goal?"])[0]["new_tokens"] <= 3

    # export: the 4-bit base is dequantized, then the adapter merged into it; a plain HF model comes out
    from transformers import AutoModelForCausalLM

    from tuneforge.pipelines.export import export_run

    facts = export_run(result.run_dir, tmp_path / "merged")
    assert facts["merged"] and facts["max_abs_logit_difference"] <= 1e-4
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert merged.model.layers[0].mlp.up_proj.weight.dtype == torch.float32


def test_generation_uses_the_system_prompt_the_run_trained_with():
    from tuneforge.tasks.generator import Generator

    generator = Generator(model=None, tokenizer=None, formatter=object(), stop_ids=[2], system_prompt="Be brief.")
    asked = [{"role": "user", "content": "hi"}]
    assert generator.with_system(asked) == [{"role": "system", "content": "Be brief."}, *asked]
    own = [{"role": "system", "content": "Be verbose."}, *asked]
    assert generator.with_system(own) == own  # a conversation's own system message wins
    assert Generator(None, None, None, [2], system_prompt="x").with_system(asked) == asked  # seq2seq: no template
