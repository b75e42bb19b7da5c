"""Bayesian search with pruning vs a 3x3 grid (learning rate x LoRA rank) on the quickstart task.

Both searches run the same pipeline on the same data and split; neither reads the test split. Reports the
best validation score each reached, the training steps each spent (pruned trials count the steps they ran),
and the ratio. The full quickstart task takes ~30 minutes for the grid on 2 CPU cores; --max-rows and
--max-length give a smaller version of the same task.

    python benchmarks/hpo_pruning.py [--max-rows 600 --max-length 32 --epochs 3 --trials 6]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

LEARNING_RATES = [3e-4, 1e-3, 3e-3]
RANKS = [2, 8, 32]


def base_config(args: argparse.Namespace) -> dict:
    from tuneforge.config.loader import preset_path, read_yaml

    config = read_yaml(preset_path("quickstart"))
    config["data"]["max_length"] = args.max_length
    if args.max_rows:
        config["data"]["max_rows"] = args.max_rows
    config["train"]["epochs"] = args.epochs
    config["tracking"] = {"enabled": False}
    config["evaluation"] = {"baselines": ["majority"], "bootstrap_samples": 200}
    return config


def search(config: dict, hpo: dict, folder: Path) -> dict:
    from tuneforge.config import load_config
    from tuneforge.pipelines.tune import tune

    config = {**config, "hpo": {"space": {"train.learning_rate": {"type": "categorical", "choices": LEARNING_RATES},
                                          "method.r": {"type": "categorical", "choices": RANKS}},
                                "objectives": [{"metric": "macro_f1", "direction": "maximize"}], **hpo}}
    started = time.time()
    result = tune(load_config(config), output=folder, log=lambda line: print(f"  {line}", file=sys.stderr))
    assert result is not None
    return {"best_validation_macro_f1": round(result.best_values[0], 4), "best_params": result.best_params,
            "total_steps": sum(t["steps"] or 0 for t in result.trials),
            "trials": len(result.trials), "pruned": sum(t["state"] == "PRUNED" for t in result.trials),
            "seconds": round(time.time() - started, 1),
            "test_macro_f1_of_best": result.test_metrics["finetuned"]["macro_f1"] if result.test_metrics else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-rows", type=int, default=None, help="sample of BBC News (default: all 2,072)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6, help="bayesian trials (the grid has 9)")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    args = parser.parse_args()
    config = base_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        grid = search(config, {"algorithm": "grid", "n_trials": 9, "pruner": "none"}, Path(tmp) / "grid")
        print(f"grid: {grid}", file=sys.stderr)
        bayes = search(config, {"algorithm": "bayesian", "n_trials": args.trials, "pruner": args.pruner, "seed": 0},
                       Path(tmp) / "bayes")
        print(f"bayesian+{args.pruner}: {bayes}", file=sys.stderr)
    ratio = bayes["total_steps"] / grid["total_steps"]
    print(f"grid:  best validation macro_f1 {grid['best_validation_macro_f1']} in {grid['total_steps']} steps")
    print(f"bayes: best validation macro_f1 {bayes['best_validation_macro_f1']} in {bayes['total_steps']} steps "
          f"({bayes['pruned']} of {bayes['trials']} trials pruned)")
    print(f"steps ratio bayes/grid: {ratio:.3f}; reached the grid's best: "
          f"{bayes['best_validation_macro_f1'] >= grid['best_validation_macro_f1']}")
    print(json.dumps({"settings": vars(args), "grid": grid, "bayesian": bayes, "steps_ratio": round(ratio, 4),
                      "reached_grid_best": bayes["best_validation_macro_f1"] >= grid["best_validation_macro_f1"]}))


if __name__ == "__main__":
    main()
