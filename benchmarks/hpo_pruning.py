"""Bayesian search with pruning vs a 3x3 grid (learning rate x LoRA rank) on the quickstart task.

The grid tries learning rates 3e-4, 1e-3, 3e-3 x LoRA ranks 2, 8, 32; the bayesian search (TPE) explores the
box those points span (learning rate log-uniform in [3e-4, 3e-3], rank log-uniform integer in [2, 32]) and
prunes weak trials from their validation scores. Both run the same pipeline on the same data and split, with
the same validation schedule (every --eval-steps optimizer steps); neither reads the test split. The objective
is the validation loss by default (continuous: on this easy task macro-F1 saturates, where one article decides a
tie) or --metric macro_f1. Reports the best validation score each reached (and the macro-F1 of that trial), the
training steps each spent (pruned trials count the steps they ran), their wall time, and the ratio. The bayesian
search runs under a step budget (hpo.max_steps, --budget x the grid's steps, default half): it starts trials (at
most --trials) until the budget is spent, and the trial running when it runs out stops there, so its steps never
exceed the budget.

The split is 35/50/15 by default: half of BBC News's 2,072 articles validate (1,036), so that a trial's score
rests on the ~50 articles it gets wrong, not on 2 or 3. On the quickstart's own 15% (150 of 1,000 articles) the
grid's best loss, 0.040, was a lucky draw: trials next to it ended anywhere between 0.039 and 0.075. A trial takes
~4-5 minutes on one CPU core, the grid ~40.

    python benchmarks/hpo_pruning.py [--split 0.35,0.5,0.15 --eval-steps 23 --steps-per-epoch 46] [--seed 0]
        [--trials 12 --budget 0.5 --pruner median] [--grid-json grid.json]

--grid-json keeps the grid's result in a file and reuses it when the file exists (same settings only);
--search-json does the same for the search. With --budget-steps N the search runs first, under a budget of N
steps, so it can run on another core beside the grid (same --grid-json), and --workdir keeps the trials' folders
for the final paired comparison. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

LEARNING_RATES = [3e-4, 1e-3, 3e-3]
RANKS = [2, 8, 32]
GRID_SPACE = {"train.learning_rate": {"type": "categorical", "choices": LEARNING_RATES},
              "method.r": {"type": "categorical", "choices": RANKS}}
BOX_SPACE = {"train.learning_rate": {"type": "float", "low": min(LEARNING_RATES), "high": max(LEARNING_RATES),
                                     "log": True},
             "method.r": {"type": "int", "low": min(RANKS), "high": max(RANKS), "log": True}}


def base_config(args: argparse.Namespace) -> dict:
    from tuneforge.config.loader import preset_path, read_yaml

    config = read_yaml(preset_path("quickstart"))
    # the grid's second axis is the LoRA rank: the quickstart task (MiniLM on BBC News, its epochs and batch; the
    # split is --split's) with LoRA r8/alpha16 on every linear layer, no LoRA dropout (rank and rate searched)
    config["method"] = {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    config["data"]["max_length"] = args.max_length
    if args.model:
        config["model"]["name"] = args.model
    if args.data:
        config["data"]["path"] = args.data
    if args.max_rows:
        config["data"]["max_rows"] = args.max_rows
    if args.split:
        train, validation, test = (float(share) for share in args.split.split(","))
        config["data"]["split"] = {"train": train, "validation": validation, "test": test}
    config["train"].update(epochs=args.epochs, eval_strategy="steps", eval_steps=args.eval_steps)
    # the quickstart stops after 2 epochs without gain; in evaluations that is 2 epochs' worth of them
    config["train"]["early_stopping"].update(metric=args.metric,
                                             patience=max(2, round(2 * args.steps_per_epoch / args.eval_steps)))
    config["tracking"] = {"enabled": False}
    config["evaluation"] = {"baselines": ["majority"], "bootstrap_samples": 200}
    return config


def search(config: dict, hpo: dict, folder: Path) -> dict:
    from tuneforge.config import load_config
    from tuneforge.pipelines.tune import tune

    metric = config["train"]["early_stopping"]["metric"]
    direction = "minimize" if metric == "loss" else "maximize"
    config = {**config, "hpo": {"objectives": [{"metric": metric, "direction": direction}], **hpo}}
    started = time.time()
    result = tune(load_config(config), output=folder, log=lambda line: print(f"  {line}", file=sys.stderr))
    assert result is not None
    trials = [{"number": t["number"], "validation": _validation(folder, t["number"]), "state": t["state"],
               "value": t["values"][0] if t["values"] else None, "params": t["params"], "steps": t["steps"],
               "seconds": t["seconds"],
               "curve": [round(v, 4) for _, v in sorted(t["intermediate"].items())]} for t in result.trials]
    best = min if direction == "minimize" else max
    scored = [t for t in trials if t["state"] == "COMPLETE"]
    winner = best(scored, key=lambda t: t["value"])
    return {"metric": metric, "best_validation": round(result.best_values[0], 4), "best_params": result.best_params,
            "best_validation_macro_f1": winner["validation"].get("macro_f1"),
            "best_trial_dir": str(folder / f"trial-{winner['number']:04d}"),
            "total_steps": sum(t["steps"] or 0 for t in result.trials),
            "trials": len(result.trials), "pruned": sum(t["state"] == "PRUNED" for t in result.trials),
            "seconds": round(time.time() - started, 1),
            "test_macro_f1_of_best": result.test_metrics["finetuned"]["macro_f1"] if result.test_metrics else None,
            "trial_table": trials}


def _validation(folder: Path, number: int) -> dict:
    """A finished trial's validation metrics at its restored checkpoint (all of them, not only the objective)."""
    path = folder / f"trial-{number:04d}" / "metrics.json"
    if not path.exists():
        return {}
    return {k: round(v, 4) for k, v in json.loads(path.read_text())["validation"]["metrics"].items()}


def article_losses(run_dir: Path, data: object, max_length: int) -> list[float]:
    """The cross-entropy of every validation article under a trial's restored best checkpoint."""
    import numpy as np

    from tuneforge import load_predictor
    from tuneforge.tasks.sequence_classification import predict_logits

    predictor = load_predictor(run_dir)
    logits = predict_logits(predictor.model, predictor.tokenizer, data.texts("validation"), max_length)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    truth = np.asarray(data.label_ids("validation"))
    return (-log_probs[np.arange(len(truth)), truth]).tolist()


def paired_loss_difference(config: dict, grid: dict, bayes: dict, folder: Path) -> dict:
    """Bayesian best minus grid best, mean validation cross-entropy over the same articles, with a 95% paired
    bootstrap interval: whether the two bests differ by more than the validation set's noise. The grid's best
    is retrained from its parameters when the grid came from --grid-json (same seed and data: the same run)."""
    import numpy as np

    from tuneforge.config import load_config
    from tuneforge.data.prepare import prepare_data
    from tuneforge.evaluation.metrics import bootstrap_indices, percentile_interval
    from tuneforge.hpo.study import trial_config_for
    from tuneforge.pipelines.finetune import finetune

    grid_dir = Path(grid.get("best_trial_dir", ""))
    if not (grid_dir / "model").exists():
        grid_dir = folder / "grid-best"  # kept with --workdir: the next seed's run reuses it
    if not (grid_dir / "model").exists():
        retrained = trial_config_for(config, grid["best_params"], grid["metric"])
        finetune(retrained, output=grid_dir, log=lambda _: None, evaluate_test=False, quiet=True)
    run = load_config(config)
    data = prepare_data(run.data, run.train.seed)  # the split every trial trained and validated on
    ours, theirs = (np.asarray(article_losses(Path(d), data, run.data.max_length))
                    for d in (bayes["best_trial_dir"], grid_dir))
    diffs = ours - theirs
    samples = [float(diffs[index].mean()) for index in bootstrap_indices(len(diffs), 2000, 0)]
    return {"bayes_mean_loss": round(float(ours.mean()), 4), "grid_mean_loss": round(float(theirs.mean()), 4),
            "difference": round(float(diffs.mean()), 4), "difference_ci": percentile_interval(samples),
            "articles": len(diffs)}


def cached(path: str | None, settings: dict, name: str, run: Callable[[], dict]) -> dict:
    """One arm's result, reused from ``path`` when it was kept there with the same settings (and kept there)."""
    from tuneforge.io import atomic_write_json

    cache = Path(path) if path else None
    if cache and cache.exists():
        kept = json.loads(cache.read_text())
        if kept.get("settings") == settings:
            print(f"{name}: reusing {cache}", file=sys.stderr)
            return kept[name]
    result = run()
    if cache:
        atomic_write_json(cache, {"settings": settings, name: result})
        print(f"{name}: kept in {cache}", file=sys.stderr)
    return result


def grid_search(config: dict, args: argparse.Namespace, folder: Path) -> dict:
    settings = {k: getattr(args, k) for k in ("max_rows", "max_length", "epochs", "eval_steps", "metric")}
    # older caches lack the optional ones
    settings.update({k: getattr(args, k) for k in ("model", "data", "split") if getattr(args, k)})
    return cached(args.grid_json, settings, "grid", lambda: search(
        config, {"algorithm": "grid", "n_trials": 9, "pruner": "none", "space": GRID_SPACE}, folder))


def bayesian_search(config: dict, args: argparse.Namespace, budget: int, folder: Path) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("grid_json", "search_json", "workdir")}
    settings["max_steps"] = budget
    return cached(args.search_json, settings, "search", lambda: search(
        config, {"algorithm": "bayesian", "n_trials": args.trials, "pruner": args.pruner,
                 "prune_after": args.prune_after, "prune_until": args.prune_until,
                 "seed": args.seed, "space": BOX_SPACE, "max_steps": budget}, folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="another model (default: the quickstart's MiniLM)")
    parser.add_argument("--data", default=None, help="other labelled data (default: the quickstart's BBC News)")
    parser.add_argument("--max-rows", type=int, default=None, help="sample of BBC News (default: all 2,072)")
    parser.add_argument("--split", default="0.35,0.5,0.15", help="train,validation,test shares (the quickstart: "
                        "0.7,0.15,0.15)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-steps", type=int, default=23, help="validate every N optimizer steps")
    parser.add_argument("--steps-per-epoch", type=int, default=46,
                        help="the split's training steps per epoch (46 for the default split; for early stopping)")
    parser.add_argument("--metric", default="loss", help="the validation objective: loss (minimized) or macro_f1")
    parser.add_argument("--trials", type=int, default=12, help="most bayesian trials (the grid has 9)")
    parser.add_argument("--budget", type=float, default=0.5,
                        help="the bayesian search's step budget (hpo.max_steps) as a share of the grid's steps")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    parser.add_argument("--prune-after", type=float, default=0.25, help="hpo.prune_after")
    parser.add_argument("--prune-until", type=float, default=0.5, help="hpo.prune_until")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid-json", default=None, help="keep/reuse the grid's result in this file")
    parser.add_argument("--search-json", default=None, help="keep/reuse the bayesian search's result in this file")
    parser.add_argument("--budget-steps", type=int, default=None,
                        help="the search's step budget in steps instead of --budget x the grid's: the search then "
                             "runs first, so it can run beside --grid-json's grid on another core")
    parser.add_argument("--workdir", default=None, help="keep the trials' folders here (default: a temporary one)")
    args = parser.parse_args()
    config = base_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.workdir or tmp)
        if args.budget_steps is not None:
            bayes = bayesian_search(config, args, args.budget_steps, folder / f"bayes-seed{args.seed}")
        grid = grid_search(config, args, folder / "grid")
        print(f"grid: best {grid['best_validation']} in {grid['total_steps']} steps", file=sys.stderr)
        if args.budget_steps is None:
            bayes = bayesian_search(config, args, int(args.budget * grid["total_steps"]),
                                    folder / f"bayes-seed{args.seed}")
        paired = paired_loss_difference(config, grid, bayes, folder) if args.metric == "loss" else None
    ratio = bayes["total_steps"] / grid["total_steps"]
    sign = -1 if args.metric == "loss" else 1
    reached = sign * bayes["best_validation"] >= sign * grid["best_validation"]
    for name, arm in (("grid", grid), ("bayes", bayes)):
        print(f"{name}: best validation {args.metric} {arm['best_validation']} (its macro_f1 "
              f"{arm['best_validation_macro_f1']}) {arm['best_params']} in {arm['total_steps']} steps, "
              f"{arm['seconds']} s, {arm['pruned']} of {arm['trials']} trials pruned")
    print(f"steps ratio bayes/grid: {ratio:.3f} (target <= 0.5); reached the grid's best: {reached}")
    if paired:
        print(f"per-article validation loss, bayes best minus grid best: {paired['difference']} "
              f"{paired['difference_ci']} over {paired['articles']} articles (means {paired['bayes_mean_loss']} "
              f"vs {paired['grid_mean_loss']})")
    print(json.dumps({"settings": vars(args), "grid": grid, "bayesian": bayes, "steps_ratio": round(ratio, 4),
                      "seconds_ratio": round(bayes["seconds"] / grid["seconds"], 4), "reached_grid_best": reached,
                      "paired_loss_difference": paired}))


if __name__ == "__main__":
    main()
