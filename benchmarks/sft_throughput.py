"""Instruction-tuning throughput: tuneforge against TRL's SFTTrainer on the same model, data, LoRA and examples.

Every run trains SmolLM2-135M-Instruct (LoRA r=16, alpha=32, dropout 0, all linear layers) for one epoch on the
same chatterbot-corpus conversations -- the train split that ``tuneforge train`` makes of ``offline:chatterbot``
(``prepare_generative``, so both tools see exactly the same examples) -- with the same batch size, max length,
learning rate and schedule, each in its own fresh process (one after another, so that peak memory is the run's
own). Runs:

- ``tuneforge``: ``tuneforge.finetune`` as a user runs it (its defaults: packing with per-example attention, LM
  head at labelled positions only, precision and gradient checkpointing chosen automatically);
- ``trl_default``: ``SFTTrainer`` with SFTConfig's defaults (gradient checkpointing, padded batches, loss on every
  token), in fp32 (its default bf16=True refuses to start on a CPU);
- ``trl_packing``: the same with ``packing=True`` (best-fit decreasing into padding-free rows);
- ``trl_packing_no_gc``: packing and gradient checkpointing off (its fastest configuration here);
- ``trl_bf16`` / ``trl_packing_bf16``: bf16 autocast, only where this device's bf16 matmul is fast (``--bf16``).

The first ``--warmup`` optimizer steps are excluded from the timing. Per run: real (non-padding) tokens/s, tokens
that carry loss per second, padding share, MFU against the matmul peak measured at the start (4 x matmul
parameters per real token for LoRA, plus attention; see ``tuneforge.training.speed``), peak RSS, and the loss of the
trained model on the same held-out conversations (the validation split; assistant tokens, tuneforge's encoding,
token-weighted, with a 95% bootstrap interval and the paired difference to tuneforge). Both tools train on the same
examples for one epoch, so the eval loss is compared after the same real training tokens.

LLaMA-Factory is not run: it pins an older transformers than tuneforge's, so it needs an environment of its own,
and none is installed here; the ratios are against the TRL runs (``best_peer``: the fastest of them).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/sft_throughput.py [--examples 240] [--threads 2]

The last line is one JSON object with every figure: {"tuneforge": {...}, "trl_default": {...}, ...,
"ratios": {"real_tok_s_vs_trl_default": ...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from harness import StepClock, finetune_keeping_trainer, parse_or_work, run_child  # noqa: E402
PEERS = ("trl_default", "trl_packing", "trl_packing_no_gc")
BF16_PEERS = ("trl_bf16", "trl_packing_bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--examples", type=int, default=320, help="training conversations (one epoch)")
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=3, help="optimizer steps left out of the timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=",".join(("tuneforge",) + PEERS))
    parser.add_argument("--bf16", action="store_true", help="also run the TRL bf16 peers")
    parser.add_argument("--lora-r", type=int, default=16)
    args = parse_or_work(parser, run_worker)
    if args is None:
        return

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    from tuneforge.training.speed import cpu_fast, matmul_peak

    torch.set_num_threads(args.threads)
    peaks = {"fp32_gflops": round(matmul_peak("float32", "cpu", 2.0) / 1e9, 1),
             "bf16_fast_on_this_cpu": cpu_fast("bfloat16")}
    print(f"matmul peak ({args.threads} threads): fp32 {peaks['fp32_gflops']} GFLOP/s; bf16 "
          f"{'fast' if peaks['bf16_fast_on_this_cpu'] else 'slow (no bf16 hardware): bf16 peers skipped'}")
    runs = args.runs.split(",") + (list(BF16_PEERS) if args.bf16 else [])
    results: dict[str, Any] = {"setup": {**vars(args), **peaks}}
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as workdir:
        for name in runs:
            results[name] = spawn(name, args, workdir)
            print(line(name, results[name]), flush=True)
    results["ratios"] = ratios(results, [r for r in runs if r != "tuneforge"])
    eval_differences(results, runs)
    for key, value in results["ratios"].items():
        print(f"{key}: {value}")
    print(json.dumps(results))


def spawn(name: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    keys = ("model", "examples", "eval_examples", "max_length", "batch_size", "learning_rate", "warmup", "threads",
            "lora_r")
    return run_child(HERE, name, workdir, {key: getattr(args, key) for key in keys}, args.threads)


# ------------------------------------------------------------------------------------------------- one run

def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    config = tuneforge_config(args, Path(args.workdir))
    data = benchmark_data(config)
    clock = StepClock()
    if name == "tuneforge":
        model, steps, extra = train_tuneforge(config, clock, Path(args.workdir) / "tuneforge")
    elif name.startswith("trl"):
        model, steps, extra = train_trl(name, config, data, clock, args)
    else:
        raise SystemExit(f"unknown run {name}")
    figures = throughput(steps, clock, args.warmup, model, extra.get("precision", "fp32"))
    losses = eval_losses(model, config, data, args.eval_examples)
    return {**figures, **extra, "eval_loss": losses["mean"], "eval_loss_ci": losses["ci"],
            "eval_example_losses": losses["per_example"], "eval_tokens": losses["tokens"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_examples": len(data.splits["train"]), "optimizer_steps": len(clock.ends)}


def tuneforge_config(args: argparse.Namespace, workdir: Path) -> Any:
    from tuneforge.config import load_config

    total = int(args.examples / 0.8) + 1
    return load_config({
        "name": "sft-bench",
        "model": {"name": args.model, "task": "causal-lm"},
        "data": {"path": "offline:chatterbot", "max_rows": total, "max_length": args.max_length,
                 "split": {"train": 0.8, "validation": 0.1, "test": 0.1}},
        "method": {"name": "lora", "r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0,
                   "target_modules": "all-linear"},
        "train": {"epochs": 1, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                  "warmup_ratio": 0.0, "weight_decay": 0.0, "lr_scheduler": "linear", "logging_steps": 10,
                  "seed": 42, "early_stopping": None},
        "evaluation": {"baselines": []},
        "tracking": {"dir": str(workdir / "mlflow")},
    })


def benchmark_data(config: Any) -> Any:
    """The splits ``tuneforge train`` makes (deterministic in the seed): TRL trains on the same train split."""
    from tuneforge.data.generative import prepare_generative

    return prepare_generative(config.data, config.train.seed)


def train_tuneforge(config: Any, clock: StepClock, output: Path) -> tuple[Any, list, dict[str, Any]]:
    trainer, result = finetune_keeping_trainer(config, output, clock, evaluate_test=False)
    speed = result.metrics["training"]["speed"]
    return trainer.model, trainer.speed.steps, {"precision": speed["precision"],
                                                "gradient_checkpointing": speed["gradient_checkpointing"],
                                                "own_report": {k: speed.get(k) for k in ("tokens_per_s", "mfu")}}


def train_trl(name: str, config: Any, data: Any, clock: StepClock, args: argparse.Namespace) -> tuple:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tuneforge.models.assets import resolve_model
    from tuneforge.training.speed import batch_stats

    path = resolve_model(config.model.name).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    bf16 = name.endswith("bf16")
    packing = "packing" in name
    train = datasets.Dataset.from_list([{"messages": e.messages} for e in data.splits["train"]])
    sft = SFTConfig(output_dir=str(Path(args.workdir) / name), bf16=bf16, use_cpu=True, packing=packing,
                    max_length=config.data.max_length, per_device_train_batch_size=config.train.batch_size,
                    num_train_epochs=1, learning_rate=config.train.learning_rate, lr_scheduler_type="linear",
                    warmup_steps=0, weight_decay=0.0, logging_steps=10, save_strategy="no", eval_strategy="no",
                    report_to=[], seed=config.train.seed, dataloader_num_workers=0,
                    **({"gradient_checkpointing": False} if name.endswith("no_gc") else {}))
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft, train_dataset=train, processing_class=tokenizer, peft_config=lora,
                         callbacks=[clock.callback])
    steps: list = []
    collate = trainer.data_collator

    def counting(features: list) -> Any:
        batch = collate(features)
        steps.append(batch_stats(batch, causal=True))
        return batch

    trainer.data_collator = counting
    trainer.train()
    return trainer.model, steps, {"precision": "bf16" if bf16 else "fp32",
                                  "gradient_checkpointing": bool(sft.gradient_checkpointing)}


# ------------------------------------------------------------------------------------------------- figures

def throughput(steps: list, clock: StepClock, warmup: int, model: Any, precision: str) -> dict[str, Any]:
    """Rates over the timed steps; ``steps`` holds ``batch_stats`` of every training batch, in order."""
    from tuneforge.training.speed import flops_model, matmul_peak

    timed = clock.intervals(warmup)
    if len(timed) < 2:
        raise SystemExit(f"only {len(clock.ends)} optimizer steps: lower --warmup or raise --examples")
    seconds = sum(s for _, s in timed)
    real, loss, computed, squares, work = (sum(steps[i][k] for i, _ in timed) for k in range(5))
    flops = flops_model(model, causal=True).flops(work, squares)
    peak = matmul_peak({"fp32": "float32", "bf16": "bfloat16"}[precision], "cpu")
    return {"real_tok_s": round(real / seconds, 1), "loss_tok_s": round(loss / seconds, 1),
            "padding_share": round(1 - work / computed, 4), "shared_prefix_share": round(1 - work / real, 4),
            "mfu": round(flops / seconds / peak, 4),
            "mfu_peak_gflops": round(peak / 1e9, 1), "timed_steps": len(timed), "timed_seconds": round(seconds, 2),
            "timed_real_tokens": real, "timed_loss_tokens": loss}


def eval_losses(model: Any, config: Any, data: Any, limit: int = 64) -> dict[str, Any]:
    """Cross-entropy of the trained model on the assistant tokens of held-out conversations (tuneforge's
    encoding, the same for every run), token-weighted, with a bootstrap interval over conversations."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from tuneforge.data.chat import ChatFormatter, encode_examples
    from tuneforge.models.assets import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model.name).path)
    items, _ = encode_examples(ChatFormatter(tokenizer, config.data.template), data.splits["validation"][:limit],
                               config.data.max_length, "completion")
    model.eval()
    sums, counts = [], []
    with torch.inference_mode():
        for item in items:
            ids, labels = torch.tensor([item.input_ids]), torch.tensor([item.labels])
            logits = model(input_ids=ids).logits[0, :-1].float()
            target = labels[0, 1:]
            keep = target != -100
            sums.append(float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")))
            counts.append(int(keep.sum()))
    sums_a, counts_a = np.array(sums), np.array(counts)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(sums), size=(1000, len(sums)))
    boot = sums_a[draws].sum(1) / counts_a[draws].sum(1)
    return {"mean": round(float(sums_a.sum() / counts_a.sum()), 4),
            "ci": [round(float(v), 4) for v in np.percentile(boot, [2.5, 97.5])],
            "per_example": [[s, c] for s, c in zip(sums, counts)], "tokens": int(counts_a.sum())}


def ratios(results: dict[str, Any], peers: list[str]) -> dict[str, float]:
    ours = results.get("tuneforge", {})
    out = {}
    for peer in peers:
        theirs = results.get(peer, {})
        if "real_tok_s" not in ours or "real_tok_s" not in theirs:
            continue
        for key in ("real_tok_s", "loss_tok_s", "mfu"):
            out[f"{key}_vs_{peer}"] = round(ours[key] / theirs[key], 3) if theirs[key] else None
        out[f"peak_rss_vs_{peer}"] = round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3)
    valid = [p for p in peers if f"real_tok_s_vs_{p}" in out]
    if valid:
        best = max(valid, key=lambda p: results[p]["real_tok_s"])
        out["best_peer"] = best
        out["real_tok_s_vs_best_peer"] = out[f"real_tok_s_vs_{best}"]
    return out


def eval_differences(results: dict[str, Any], runs: list[str]) -> None:
    """Paired bootstrap of eval loss, tuneforge minus each peer (same conversations): negative is better."""
    import numpy as np

    ours = results.get("tuneforge", {}).get("eval_example_losses")
    if not ours:
        return
    a = np.array(ours, dtype=float)
    draws = np.random.default_rng(1).integers(0, len(a), size=(1000, len(a)))
    for peer in runs:
        theirs = results.get(peer, {}).get("eval_example_losses")
        if peer == "tuneforge" or not theirs:
            continue
        b = np.array(theirs, dtype=float)
        diff = a[draws, 0].sum(1) / a[draws, 1].sum(1) - b[draws, 0].sum(1) / b[draws, 1].sum(1)
        point = a[:, 0].sum() / a[:, 1].sum() - b[:, 0].sum() / b[:, 1].sum()
        results["ratios"][f"eval_loss_minus_{peer}"] = round(float(point), 4)
        results["ratios"][f"eval_loss_minus_{peer}_ci"] = [round(float(v), 4) for v in np.percentile(diff, [2.5, 97.5])]
    for run in runs:
        results.get(run, {}).pop("eval_example_losses", None)


def line(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{name:<18} FAILED {result['error']}"
    return (f"{name:<18} {result['real_tok_s']:>7.1f} real tok/s  {result['loss_tok_s']:>7.1f} loss tok/s  padding "
            f"{100 * result['padding_share']:4.1f}%  MFU {100 * result['mfu']:4.1f}% ({result['precision']})  "
            f"peak RSS {result['peak_rss_mib']:,.0f} MiB  eval loss {result['eval_loss']:.4f} "
            f"[{result['eval_loss_ci'][0]:.4f}, {result['eval_loss_ci'][1]:.4f}]  "
            f"({result['timed_steps']} steps, {result['timed_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
