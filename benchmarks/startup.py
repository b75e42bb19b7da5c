"""Start-up time of each CLI command, against importing transformers (the floor of any command that loads a
model) on the same machine, in one run: the median of ``--repeats`` fresh processes each.

Runs it uses are made first: a MiniLM classification run (BBC News, 60 articles, 1 epoch) and a LoRA chat run on
a 2-layer random Llama with SmolLM2's tokenizer (generation start-up, not quality).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        label_run, chat_run, config = make_runs(workdir)
        tf = [str(Path(sys.executable).parent / "tuneforge")]
        commands = {
            "import transformers (floor)": [sys.executable, "-c", "import transformers"],
            "import torch": [sys.executable, "-c", "import torch"],
            "import torch, transformers' BERT, peft (floor of a LoRA model)": [
                sys.executable, "-c", "import torch, peft; from transformers import BertModel"],
            "tuneforge --help": [*tf, "--help"],
            "config validate": [*tf, "config", "validate", str(config)],
            "config show": [*tf, "config", "show", str(config)],
            "runs list": [*tf, "runs", "list", "--tracking-dir", str(workdir / "mlflow")],
            "estimate": [*tf, "estimate", str(config)],
            "predict (1 text)": [*tf, "predict", str(label_run), "--text", "Shares rose after the merger"],
            "generate (1 prompt, 4 tokens)": [*tf, "generate", str(chat_run), "--prompt", "hi", "--max-new-tokens",
                                              "4"],
            "export (merge)": [*tf, "export", str(label_run), "--output", str(workdir / "exported"), "--merge"],
        }
        results = {}
        for name, command in commands.items():
            times = []
            for _ in range(args.repeats):
                shutil.rmtree(workdir / "exported", ignore_errors=True)
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
                times.append(time.perf_counter() - started)
                if done.returncode != 0:
                    results[name] = {"error": done.stderr.strip().splitlines()[-1:]}
                    break
            else:
                results[name] = {"median_s": round(statistics.median(times), 2)}
        floor = results["import transformers (floor)"]["median_s"]
        for figures in results.values():
            if "median_s" in figures:
                figures["vs_import_transformers"] = round(figures["median_s"] / floor, 2)
        print(json.dumps({"repeats": args.repeats, "threads": os.environ.get("OMP_NUM_THREADS"), "commands": results}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def make_runs(workdir: Path) -> tuple[Path, Path, Path]:
    import torch
    import yaml
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuneforge.config import load_config
    from tuneforge.models.assets import resolve_model
    from tuneforge.pipelines.finetune import finetune

    config = {"name": "bbc", "model": {"name": "minilm"}, "data": {"path": "offline:bbc-news", "max_rows": 60,
                                                                     "max_length": 32},
              "train": {"epochs": 1}, "evaluation": {"baselines": ["majority"], "bootstrap_samples": 100},
              "tracking": {"dir": str(workdir / "mlflow")}}
    path = workdir / "bbc.yaml"
    path.write_text(yaml.safe_dump(config))
    label_run = finetune(load_config(path), output=workdir / "bbc-run", log=lambda _: None).run_dir
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m").path)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                         tie_word_embeddings=True))
    llama.save_pretrained(workdir / "tiny-llama")
    tokenizer.save_pretrained(workdir / "tiny-llama")
    rows = [{"messages": [{"role": "user", "content": f"{n} plus one?"}, {"role": "assistant", "content": str(n + 1)}]}
            for n in range(40)]
    (workdir / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = load_config({"name": "chat", "model": {"name": str(workdir / "tiny-llama"), "task": "causal-lm"},
                        "data": {"path": str(workdir / "chat.jsonl"), "max_length": 128},
                        "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
                        "train": {"epochs": 1, "batch_size": 8}, "evaluation": {"baselines": []},
                        "tracking": {"enabled": False}})
    chat_run = finetune(chat, output=workdir / "chat-run", log=lambda _: None).run_dir
    return label_run, chat_run, path


if __name__ == "__main__":
    main()
