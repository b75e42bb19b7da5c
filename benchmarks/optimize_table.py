"""The table of `tuneforge optimize --compare` for a quickstart run: every quantized and pruned variant against the
unoptimized fp32 model (the peer: what you deploy without optimizing), each measured in a process of its own on the
run's own test split: size, peak memory, throughput (median of 3 after a warm-up), the task metric with its interval
and the paired difference.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/optimize_table.py --task classification
    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/optimize_table.py --task chat

The run is trained first (the quickstart's recipe, cut down for the chat task as its slow test does) unless --run
gives one. Prints one JSON object (the last line): optimize.json without the per-variant folders.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

CHAT_CUT = ["data.max_rows=260", "data.max_length=96", "evaluation.max_test_examples=16",
            "evaluation.generation.max_new_tokens=32", "evaluation.baselines=[]"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("classification", "chat"), default="classification")
    parser.add_argument("--run", type=Path, help="an existing run folder (skips training)")
    parser.add_argument("--model", help="train on this model instead of the quickstart's (tests: a tiny one)")
    parser.add_argument("--set", action="append", default=[], help="more key=value overrides of the run's config")
    parser.add_argument("--variants", help="only these rows (comma-separated names), after fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    from tuneforge.pipelines.optimize import chosen_rows, compare

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="optimize-bench-"))
    run = args.run or train(args, workdir)
    result = compare(run, workdir / "optimize", chosen_rows(args.variants), threads=args.threads,
                     log=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"task": args.task, **result}))


def train(args: argparse.Namespace, workdir: Path) -> Path:
    from tuneforge.config.loader import load_config, preset_path
    from tuneforge.pipelines.finetune import finetune
    from tuneforge.pipelines.quickstart import PRESETS

    overrides = [*(CHAT_CUT if args.task == "chat" else []), "tracking.enabled=false", *args.set]
    if args.model:
        overrides.append(f"model.name={args.model}")
    config = load_config(preset_path(PRESETS[args.task]), overrides)
    return finetune(config, output=workdir / "run", log=lambda line: print(line, file=sys.stderr)).run_dir


if __name__ == "__main__":
    main()
