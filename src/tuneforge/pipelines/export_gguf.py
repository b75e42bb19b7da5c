"""``tuneforge export RUN_DIR --format gguf --quant q8_0 --output DIR``: merge -> save HF -> llama.cpp's converter
-> optional quantization -> verify, for a causal LM run (llama-family architectures).

DIR holds ``<name>.<quant>.gguf``, an Ollama ``Modelfile`` (with the run's system prompt) and ``export.json``: the
file's metadata and how the file, loaded back by transformers, agrees with the merged model on prompts of the run's
own kind (its template and system prompt). An export that agrees less than the quant type's stated share
(:data:`tuneforge.export.gguf.AGREEMENT`) is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json, atomic_write_text

PROMPTS = ("What is the capital of France?", "Tell me a joke.", "How do I make a cup of tea?",
           "Who wrote Hamlet?", "What do you like to do on weekends?")


def export_gguf(run_dir: str | Path, output: str | Path, quant: str = "q8_0",
                log: Any = print) -> dict[str, Any]:
    from tuneforge.export import gguf
    from tuneforge.tasks.run_folder import read_model_meta

    from tuneforge.models.loading import quiet_libraries

    quiet_libraries()
    model_dir, meta = read_model_meta(run_dir)
    gguf.check_convertible(model_dir, meta)
    gguf.check_quant(quant)
    output = Path(output)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        facts = _write(Path(run_dir), model_dir, meta, staging, quant, log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return {**facts, "output": str(output / facts["file"])}


def _write(run_dir: Path, model_dir: Path, meta: dict[str, Any], staging: Path, quant: str, log: Any) -> dict[str, Any]:
    from tuneforge.export import gguf
    from tuneforge.pipelines.export import export_run

    with tempfile.TemporaryDirectory(dir=staging) as scratch:
        hf_dir = model_dir
        if not (model_dir / "config.json").exists():  # an adapter: merged into its base first
            log(f"merging the {meta['method']} adapter into its base")
            hf_dir = Path(export_run(run_dir, Path(scratch) / "hf", merge=True)["output"])
        name = f"{run_dir.resolve().name}.{quant}.gguf"
        log(f"converting with llama.cpp's converter to {quant}")
        path = gguf.convert(hf_dir, staging / name, quant)
        facts = {"format": "gguf", "quant": quant, "file": name, "bytes": path.stat().st_size,
                 "source_method": meta.get("method"), "metadata": gguf.metadata(path)}
        log("checking the file: loaded back by transformers against the merged model")
        facts["agreement"] = {**_agreement(hf_dir, meta, path), "required_top1": gguf.AGREEMENT[quant]}
    if facts["agreement"]["top1_agreement"] < facts["agreement"]["required_top1"]:
        raise UserError(f"the {quant} GGUF agrees with the merged model on {facts['agreement']['top1_agreement']:.1%} "
                        f"of top-1 tokens (< {gguf.AGREEMENT[quant]:.0%} stated for {quant}); try a wider type "
                        f"(f16, q8_0)")
    atomic_write_text(staging / "Modelfile", _modelfile(name, meta))
    atomic_write_json(staging / "export.json", facts)
    return facts


def _agreement(hf_dir: Path, meta: dict[str, Any], path: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.export.gguf import agreement
    from tuneforge.tasks.generator import generator_for

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    generator = generator_for(model, tokenizer, meta)
    prompts = [generator.prompt_ids([{"role": "user", "content": text}]) for text in PROMPTS]
    return agreement(model, path, tokenizer, prompts)


def _modelfile(name: str, meta: dict[str, Any]) -> str:
    """For ``ollama create NAME -f Modelfile``: the chat template travels inside the GGUF."""
    lines = [f"FROM ./{name}"]
    if meta.get("system_prompt"):
        lines.append(f'SYSTEM """{meta["system_prompt"]}"""')
    for stop in meta.get("stop_strings") or []:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n"
