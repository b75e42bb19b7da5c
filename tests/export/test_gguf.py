"""tuneforge export --format gguf: a tiny Llama LoRA run merged, converted by llama.cpp's own converter, and checked
by loading the file back in transformers; runs that are not llama-family causal LMs are refused in one line."""

from __future__ import annotations

import json

import pytest

from conftest import generative_config, tiny_config
from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.pipelines.finetune import finetune


@pytest.fixture(scope="module")
def llama_run(tiny_llama, chat_jsonl, tmp_path_factory):
    config = generative_config(tiny_llama, chat_jsonl, train={"epochs": 1}, evaluation={"baselines": []},
                               data={"system_prompt": "Answer with a number."})
    return finetune(load_config(config), output=tmp_path_factory.mktemp("gguf") / "run", log=lambda _: None).run_dir


def test_a_llama_run_exports_to_a_gguf_that_agrees_with_the_merged_model(llama_run, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["export", str(llama_run), "--format", "gguf", "--quant", "q8_0", "--output", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert "agrees on" in out and "chat template embedded" in out
    facts = json.loads((tmp_path / "g" / "export.json").read_text())
    path = tmp_path / "g" / facts["file"]
    assert path.name == "run.q8_0.gguf" and path.stat().st_size == facts["bytes"]
    meta = facts["metadata"]
    assert meta["architecture"] == "llama" and meta["chat_template"] and meta["pre_tokenizer"] == "smollm"
    assert meta["tensor_types"]["Q8_0"] >= 14  # every 2-D weight but the norms (F32)
    agreement = facts["agreement"]
    assert agreement["top1_agreement"] >= agreement["required_top1"] == 0.90 and agreement["positions"] > 100
    assert agreement["greedy_equal"] == agreement["prompts"] == 5
    modelfile = (tmp_path / "g" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./run.q8_0.gguf") and 'SYSTEM """Answer with a number."""' in modelfile

    # the file is self-contained: its own tokenizer (read from the GGUF) encodes as the run's does, and the model
    # read from it scores a prompt as the run's merged model does within q8_0's rounding
    run_tokenizer = AutoTokenizer.from_pretrained(llama_run / "model")
    own = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = "<|im_start|>user\n12 plus one, red?<|im_end|>\n<|im_start|>assistant\n"
    assert own(text)["input_ids"] == run_tokenizer(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    from tuneforge.pipelines.generate import load_generator

    generator = load_generator(llama_run, max_new_tokens=4)
    ids = torch.tensor([run_tokenizer(text)["input_ids"]])
    with torch.no_grad():
        expected = generator.model(ids).logits
        got = model(ids).logits
    assert torch.equal(expected.argmax(-1), got.argmax(-1))
    assert float((expected - got).abs().max()) <= 0.05


def test_only_llama_family_causal_lms_export_to_gguf(tiny_bert, tiny_csv, llama_run, tmp_path, capsys):
    config = tiny_config(tiny_bert, tiny_csv, train={"epochs": 1}, tracking={"enabled": False})
    run = finetune(load_config(config), output=tmp_path / "bert", log=lambda _: None).run_dir
    assert main(["export", str(run), "--format", "gguf", "--output", str(tmp_path / "x")]) == 2
    assert "GGUF export is for decoder-only language models (causal-lm runs); this run is sequence-classification" \
           in capsys.readouterr().err
    assert main(["export", str(llama_run), "--format", "gguf", "--quant", "q3", "--output", str(tmp_path / "x")]) == 2
    assert "--quant q3: not a GGUF type here" in capsys.readouterr().err
    try:
        import llama_cpp  # noqa: F401
    except ImportError:  # k-quants need llama.cpp's quantizer: said in one line, nothing written
        assert main(["export", str(llama_run), "--format", "gguf", "--quant", "q4_k_m", "--output",
                     str(tmp_path / "x")]) == 2
        assert "needs llama.cpp's quantizer: pip install llama-cpp-python==0.3.36" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
