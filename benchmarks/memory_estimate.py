"""Predicted vs measured peak memory of fine-tuning runs (``tuneforge.planning.memory``).

For each model and method, a fresh Python process imports everything (torch, transformers, peft, bitsandbytes,
tuneforge), takes its resident set size as the baseline, loads the model the way tuneforge does
(``load_generative`` / ``load_classifier`` with the method's ``load_kwargs``, then ``apply_method``) and runs 3
training steps like the Trainer (fused AdamW over the trainable parameters, forward + backward on random tokens of
the configured shape, the model outputs dropped before the backward pass; on the CPU with tuneforge's FastDropout). The measured figure is the peak
resident set (``ru_maxrss``) minus the baseline; on CUDA, ``torch.cuda.max_memory_allocated``.

Runs: smollm2-135m causal-lm, batch 4 x 256 tokens; MiniLM sequence classification, batch 16 x 128 tokens; each
with full, lora (r=16, all-linear), qlora (4-bit NF4, double quantization, r=16, all-linear) and adapter (when
``tuneforge.methods.adapter`` registers it). The goal: every estimated / measured ratio within 0.75 - 1.25.

``--live`` measures every run a second time with glibc told to hand freed memory back at once
(``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0``): the peak of live tensors without the allocator's
retention, compared with the estimate minus its retention term.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/memory_estimate.py [--live] [--device cuda]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

RUNS = [
    {"model": "smollm2-135m", "task": "causal-lm", "batch_size": 4, "max_length": 256},
    {"model": "minilm", "task": "sequence-classification", "batch_size": 16, "max_length": 128},
]
METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"},
    "qlora": {"name": "qlora", "r": 16, "alpha": 32, "target_modules": "all-linear", "bits": 4, "quant_type": "nf4",
              "double_quant": True},
    "adapter": {"name": "adapter"},
}
STEPS = 3
LIVE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def register_methods() -> list[str]:
    """The registered methods, the bottleneck adapter included when its module exists."""
    from tuneforge.methods.registry import available_methods

    methods = available_methods()  # builtins first: importing adapter alone would leave the registry partial
    if "adapter" not in methods:
        try:
            import tuneforge.methods.adapter  # noqa: F401  (registers itself)
        except ImportError:
            pass
        methods = available_methods()
    return methods


def run_config(run: dict, method: dict) -> dict:
    return {"name": "memory-benchmark", "model": {"name": run["model"], "task": run["task"]},
            "data": {"path": "unused.jsonl", "max_length": run["max_length"]}, "method": method,
            "train": {"batch_size": run["batch_size"]}, "tracking": {"enabled": False}}


# ------------------------------------------------------------------------------------------------ worker process

def worker(spec: dict) -> dict:
    """One measured run, in this (fresh) process. Everything is imported before the baseline."""
    import gc
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    import psutil
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: F401

    from tuneforge.config import load_config
    from tuneforge.methods.registry import apply_method, load_kwargs
    from tuneforge.models.assets import resolve_model
    from tuneforge.models.loading import load_classifier, load_generative, load_tokenizer
    from tuneforge.tasks.registry import task_spec

    transformers.logging.set_verbosity_error()
    register_methods()
    config = load_config(spec["config"])
    device = spec["device"]
    cuda = device.startswith("cuda")
    resolved = resolve_model(config.model.name)
    tokenizer = load_tokenizer(resolved)
    import transformers.models.bert.modeling_bert  # noqa: F401  (model code imported before the baseline)
    import transformers.models.llama.modeling_llama  # noqa: F401

    torch.manual_seed(0)
    gc.collect()
    process = psutil.Process()
    baseline = process.memory_info().rss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        cuda_baseline = torch.cuda.memory_allocated()

    task = config.model.task
    if task == "sequence-classification":
        model = load_classifier(resolved, ["a", "b"], tokenizer, **load_kwargs(config.method))
    else:
        model = load_generative(resolved, task_spec(task), **load_kwargs(config.method))
    model = apply_method(model, config.method, task_spec(task))
    if cuda and config.method.name != "qlora":
        model.to(device)
    else:
        from tuneforge.training.fast_dropout import use_fast_dropout

        use_fast_dropout(model)  # as tuneforge's trainer does on the CPU
    model.train()
    loaded = process.memory_info().rss - baseline
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    batch, length = config.train.batch_size, config.data.max_length
    vocab = model.config.vocab_size
    step_seconds = []
    for _ in range(STEPS):
        ids = torch.randint(0, vocab, (batch, length), device=device if cuda else "cpu")
        labels = ids if task == "causal-lm" else torch.randint(0, 2, (batch,), device=ids.device)
        started = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss  # outputs dropped
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        step_seconds.append(time.perf_counter() - started)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - cuda_baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    return {"peak_bytes": int(peak), "after_load_bytes": int(loaded), "baseline_rss_bytes": int(baseline),
            "trainable_params": sum(p.numel() for p in trainable),
            "step_seconds": [round(s, 3) for s in step_seconds]}


def measure(config: dict, device: str, live: bool) -> dict:
    env = {**os.environ, **(LIVE_ENV if live else {})}
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps({"config": config, "device": device})]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"worker failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--live", action="store_true", help="also measure without allocator retention (2x time)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--models", default=",".join(r["model"] for r in RUNS))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    import warnings

    warnings.filterwarnings("ignore")
    from tuneforge.config import load_config
    from tuneforge.planning.memory import CPU_ALLOCATOR_RETENTION, MiB, estimate, measure_flops_per_second

    available = register_methods()
    flops_per_second = measure_flops_per_second(1.0)
    print(f"device {args.device}; fp32 matmul throughput {flops_per_second / 1e9:.1f} GFLOP/s; {STEPS} steps per run",
          file=sys.stderr)
    wanted_models = args.models.split(",")
    results = []
    header = (f"{'model':<14} {'method':<8} {'estimated':>10} {'measured':>10} {'ratio':>6}"
              + (f" {'est-ret.':>9} {'live':>9} {'ratio':>6}" if args.live else "")
              + f" {'pred s/step':>11} {'meas s/step':>11}")
    print(header)
    started_all = time.time()
    for run in RUNS:
        if run["model"] not in wanted_models:
            continue
        for label in args.methods.split(","):
            method = METHODS[label]
            if method["name"] not in available:
                print(f"{run['model']:<14} {label:<8} skipped: tuneforge.methods.{label} is not there or does not "
                      f"register {label!r}")
                results.append({"model": run["model"], "method": label, "skipped": True})
                continue
            config = run_config(run, method)
            predicted = estimate(load_config(config), device=args.device)
            measured = measure(config, args.device, live=False)
            record = {"model": run["model"], "task": run["task"], "method": label,
                      "batch_size": run["batch_size"], "max_length": run["max_length"],
                      "estimated_mib": round(predicted.total / MiB, 1),
                      "measured_mib": round(measured["peak_bytes"] / MiB, 1),
                      "ratio": round(predicted.total / measured["peak_bytes"], 3),
                      "parts_mib": {k: round(v / MiB, 1) for k, v in predicted.parts.items()},
                      "trainable_estimated": predicted.trainable_params,
                      "trainable_measured": measured["trainable_params"],
                      "after_load_mib": round(measured["after_load_bytes"] / MiB, 1),
                      "baseline_rss_mib": round(measured["baseline_rss_bytes"] / MiB, 1),
                      "step_seconds": measured["step_seconds"]}
            tokens = run["batch_size"] * run["max_length"]
            record["predicted_step_seconds"] = round(tokens * predicted.flops_per_token / flops_per_second, 2)
            record["measured_step_seconds"] = round(sorted(measured["step_seconds"])[len(measured["step_seconds"]) // 2], 2)
            line = (f"{run['model']:<14} {label:<8} {record['estimated_mib']:>10,.1f} {record['measured_mib']:>10,.1f} "
                    f"{record['ratio']:>6.3f}")
            if args.live:
                live = measure(config, args.device, live=True)
                without = predicted.total - (int(CPU_ALLOCATOR_RETENTION * predicted.parts["activations"])
                                             if not args.device.startswith("cuda") else 0)
                record.update({"estimated_without_retention_mib": round(without / MiB, 1),
                               "live_mib": round(live["peak_bytes"] / MiB, 1),
                               "live_ratio": round(without / live["peak_bytes"], 3)})
                line += f" {record['estimated_without_retention_mib']:>9,.1f} {record['live_mib']:>9,.1f} " \
                        f"{record['live_ratio']:>6.3f}"
            line += f" {record['predicted_step_seconds']:>11.2f} {record['measured_step_seconds']:>11.2f}"
            print(line, flush=True)
            results.append(record)
    ratios = [r["ratio"] for r in results if "ratio" in r]
    summary = {"device": args.device, "steps": STEPS, "flops_per_second": round(flops_per_second),
               "cpu_allocator_retention": CPU_ALLOCATOR_RETENTION, "runs": results,
               "all_within_0.75_1.25": all(0.75 <= r <= 1.25 for r in ratios),
               "ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
               "seconds": round(time.time() - started_all, 1)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
