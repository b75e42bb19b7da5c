"""Classification throughput: tuneforge's quickstart against plain transformers Trainer scripts, same MiniLM task.

All runs use the splits ``tuneforge train`` makes of BBC News (``prepare_data``, so every run trains on the same
articles and is scored on the same test articles) and the same tokenization length; each runs in its own fresh
process, one after another. Runs:

- ``tuneforge``: ``tuneforge.finetune`` with the quickstart config (the top 3 of MiniLM's 6 layers, the pooler and
  the head trained in full, the embeddings and lower layers frozen with their norms, so the backward pass stops
  halfway; batch 16, lr 1e-4, 3 epochs, validation each epoch with the best checkpoint restored), with its engine:
  the last layer computes only the first-token position the classifier reads, and dropout masks are drawn cheaply
  on the CPU; ``--tuneforge-set`` changes its config (e.g. the previous recipe, LoRA on every layer:
  ``--tuneforge-set "method={name: lora, r: 8, alpha: 16, dropout: 0.0, target_modules: all-linear};
  train.learning_rate=1e-3"``);
- ``trainer_default``: a plain script -- AutoModelForSequenceClassification, ``DataCollatorWithPadding``, and
  ``TrainingArguments`` left at their defaults (full fine-tuning, batch 8, lr 5e-5, 3 epochs, fused AdamW, fp32);
- ``trainer_same``: the plain script with tuneforge's settings (the same parameters frozen -- or peft LoRA when the
  tuneforge run uses LoRA --, batch 16, its learning rate, the same warm-up and weight decay), the control that
  separates the engine from the settings.

Per run: training examples/s and real tokens/s over the timed steps (warm-up and steps interrupted by validation
left out), peak RSS, test macro-F1 and accuracy with 95% bootstrap intervals over the same test articles, and
paired bootstrap differences of tuneforge minus each peer.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/cls_throughput.py [--max-rows 800] [--threads 2]

The last line is one JSON object with every figure and the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from harness import StepClock, finetune_keeping_trainer, parse_or_work, run_child  # noqa: E402
RUNS = ("tuneforge", "trainer_default", "trainer_same")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", default="offline:bbc-news")
    parser.add_argument("--max-rows", type=int, default=None, help="use a seeded sample of the data")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-length", type=int, default=None, help="default: the quickstart's")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--tuneforge-set", default=None,
                        help="config overrides for the tuneforge run (and trainer_same, which mirrors it), "
                             "';'-separated, e.g. 'train.learning_rate=2e-3'")
    args = parse_or_work(parser, run_worker)
    if args is None:
        return
    runs = args.runs.split(",")
    results: dict[str, Any] = {"setup": vars(args)}
    with tempfile.TemporaryDirectory(prefix="cls-bench-") as workdir:
        for name in runs:
            results[name] = spawn(name, args, workdir)
            print(line(name, results[name]), flush=True)
    results["ratios"] = ratios(results, [r for r in runs if r != "tuneforge"])
    for key, value in results["ratios"].items():
        print(f"{key}: {value}")
    for run in runs:
        for key in ("predictions", "truth"):
            results.get(run, {}).pop(key, None)
    print(json.dumps(results))


def spawn(name: str, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    keys = ("model", "data", "max_rows", "epochs", "max_length", "warmup", "threads", "tuneforge_set")
    return run_child(HERE, name, workdir, {key: getattr(args, key) for key in keys}, args.threads)


# ------------------------------------------------------------------------------------------------- one run

def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tuneforge.data.prepare import prepare_data

    torch.set_num_threads(args.threads)
    config = quickstart_config(args, Path(args.workdir), name != "trainer_default")
    data = prepare_data(config.data, config.train.seed)
    clock = StepClock()
    if name == "tuneforge":
        model, tokenizer, steps, settings = train_tuneforge(config, clock, Path(args.workdir) / "tuneforge")
    elif name.startswith("trainer"):
        model, tokenizer, steps, settings = train_plain(name, config, data, clock, Path(args.workdir) / name)
    else:
        raise SystemExit(f"unknown run {name}")
    timed = clock.intervals(args.warmup)
    seconds = sum(s for _, s in timed)
    examples = sum(steps[i][1] for i, _ in timed)
    tokens = sum(steps[i][0] for i, _ in timed)
    predictions = predict(model, tokenizer, data, config.data.max_length)
    return {"examples_per_s": round(examples / seconds, 2), "real_tok_s": round(tokens / seconds, 1),
            "timed_steps": len(timed), "timed_seconds": round(seconds, 2), "settings": settings,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_examples": len(data.splits["train"]), "optimizer_steps": len(clock.ends),
            **test_metrics(data, predictions), "predictions": predictions, "truth": data.label_ids("test"),
            "num_labels": len(data.labels)}


def quickstart_config(args: argparse.Namespace, workdir: Path, ours: bool = False) -> Any:
    from tuneforge.config import load_config
    from tuneforge.config.loader import preset_path

    overrides = [f"model.name={args.model}", f"data.path={args.data}", f"train.epochs={args.epochs}",
                 "evaluation.baselines=[majority]", f"tracking.dir={workdir / 'mlflow'}"]
    if args.max_rows:
        overrides.append(f"data.max_rows={args.max_rows}")
    if args.max_length:
        overrides.append(f"data.max_length={args.max_length}")
    if ours and args.tuneforge_set:
        overrides += [item.strip() for item in args.tuneforge_set.split(";") if item.strip()]
    return load_config(preset_path("quickstart"), overrides)


def train_tuneforge(config: Any, clock: StepClock, output: Path) -> tuple:
    trainer, _ = finetune_keeping_trainer(config, output, clock, evaluate_test=False)
    settings = {"method": config.method.name,
                "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
                "batch_size": config.train.batch_size, "learning_rate": config.train.learning_rate}
    return trainer.model, trainer.processing_class, trainer.speed.steps, settings


def train_plain(name: str, config: Any, data: Any, clock: StepClock, output: Path) -> tuple:
    """The plain script: tokenize, a model with a fresh head, TrainingArguments (defaults unless 'same')."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tuneforge.models.assets import resolve_model
    from tuneforge.training.speed import batch_stats

    path = resolve_model(config.model.name).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(data.labels))
    encoded = tokenizer(data.texts("train"), truncation=True, max_length=config.data.max_length)
    train = [{"input_ids": i, "attention_mask": m, "labels": y}
             for i, m, y in zip(encoded["input_ids"], encoded["attention_mask"], data.label_ids("train"))]
    kwargs: dict[str, Any] = {"num_train_epochs": config.train.epochs}
    if name == "trainer_same":
        method = config.method
        if method.name == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                                                     target_modules="all-linear", task_type="SEQ_CLS"))
        elif method.name == "freeze":  # the same parameters frozen, written out plainly
            frozen = [f"encoder.layer.{i}." for i in range(method.layers)] + ["embeddings."] * method.embeddings
            for key, parameter in model.named_parameters():
                in_frozen = any(part in key for part in frozen)
                parameter.requires_grad_(not in_frozen or (method.train_norms and "LayerNorm" in key))
        else:
            raise SystemExit(f"trainer_same mirrors lora and freeze, not {method.name}")
        kwargs.update(per_device_train_batch_size=config.train.batch_size, learning_rate=config.train.learning_rate,
                      weight_decay=config.train.weight_decay, warmup_steps=config.train.warmup_ratio)
    args = TrainingArguments(output_dir=str(output), report_to=[], save_strategy="no", seed=config.train.seed,
                             dataloader_num_workers=0, **kwargs)
    collate = DataCollatorWithPadding(tokenizer)
    steps: list = []

    def counting(features: list) -> Any:
        batch = collate(features)
        steps.append(batch_stats(batch, causal=False))
        return batch

    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=counting, callbacks=[clock.callback])
    trainer.train()
    settings = {"method": config.method.name if name == "trainer_same" else "full",
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "batch_size": args.per_device_train_batch_size,
                "learning_rate": args.learning_rate}
    return trainer.model, tokenizer, steps, settings


def predict(model: Any, tokenizer: Any, data: Any, max_length: int) -> list[int]:
    from tuneforge.tasks.sequence_classification import predict_logits

    return predict_logits(model, tokenizer, data.texts("test"), max_length).argmax(axis=1).tolist()


def test_metrics(data: Any, predictions: list[int]) -> dict[str, Any]:
    from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics

    truth = data.label_ids("test")
    figures = classification_metrics(truth, predictions, data.labels, bootstrap_indices(len(truth), 1000, 0))
    return {key: figures[key] for key in ("macro_f1", "macro_f1_ci", "accuracy", "accuracy_ci")}


def ratios(results: dict[str, Any], peers: list[str]) -> dict[str, Any]:
    import numpy as np

    from tuneforge.evaluation.metrics import bootstrap_indices, paired_difference

    ours = results.get("tuneforge", {})
    out: dict[str, Any] = {}
    for peer in peers:
        theirs = results.get(peer, {})
        if "examples_per_s" not in ours or "examples_per_s" not in theirs:
            continue
        out[f"examples_per_s_vs_{peer}"] = round(ours["examples_per_s"] / theirs["examples_per_s"], 3)
        out[f"peak_rss_vs_{peer}"] = round(ours["peak_rss_mib"] / theirs["peak_rss_mib"], 3)
        truth = np.asarray(ours["truth"])
        assert truth.tolist() == theirs["truth"], "every run is scored on the same test articles"
        diff = paired_difference(truth, np.asarray(ours["predictions"]), np.asarray(theirs["predictions"]),
                                 ours["num_labels"], bootstrap_indices(len(truth), 1000, 0))
        out[f"macro_f1_minus_{peer}"] = diff["macro_f1"]
        out[f"macro_f1_minus_{peer}_ci"] = diff["macro_f1_ci"]
    return out


def line(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"{name:<16} FAILED {result['error']}"
    ci = result["macro_f1_ci"]
    return (f"{name:<16} {result['examples_per_s']:>7.2f} examples/s  {result['real_tok_s']:>7.1f} tok/s  "
            f"test macro-F1 {result['macro_f1']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]  peak RSS "
            f"{result['peak_rss_mib']:,.0f} MiB  ({result['settings']['method']}, batch "
            f"{result['settings']['batch_size']}, lr {result['settings']['learning_rate']:g}; "
            f"{result['timed_steps']} steps, {result['timed_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
