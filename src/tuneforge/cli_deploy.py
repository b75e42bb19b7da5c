"""The commands for after training: serve, export (HF, GGUF) and optimize (quantize, prune, the table). Thin:
parse, call a pipeline, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    add_serve(sub)
    add_export(sub)
    add_optimize(sub)


def precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                        help="compute in this precision (default: the one the run trained and evaluated in, so "
                        "outputs match its predictions)")


def add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve runs over an OpenAI-compatible HTTP API (many adapters on one base)")
    serve.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders; each is a model named after its "
                       "folder (LoRA runs on one base share it, and the base is a model too)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--api-key-file", help="API keys, one per line (default: $TUNEFORGE_API_KEYS, "
                       "comma-separated; none: no key needed)")
    serve.add_argument("--max-batch", type=int, default=8, help="requests generated together (default 8)")
    serve.add_argument("--max-wait-ms", type=float, default=10, help="how long a batch waits to fill (default 10)")
    serve.add_argument("--max-tokens", type=int, default=1024, help="most new tokens a request may ask for")
    serve.add_argument("--max-prompt-tokens", type=int, default=4096, help="longest prompt, in tokens")
    serve.add_argument("--max-queue", type=int, default=64, help="requests waiting per model before 429")
    serve.add_argument("--rate-limit", type=int, default=600, help="requests per minute per API key")
    serve.add_argument("--log-db", default="predictions.sqlite", help="the prediction log: an SQLite file (default "
                       "predictions.sqlite) or postgresql://...; 'none' keeps no log")
    serve.add_argument("--no-log-text", action="store_true", help="log each input's hash and length, not its text "
                       "(retrain then has no texts to learn from)")
    serve.add_argument("--monitor", metavar="YAML", help="check each window of traffic against the runs' validation "
                       "split as it completes: gauges on /metrics, alerts logged and posted (e.g. examples/monitor.yaml)")
    precision_arg(serve)


def add_export(sub: Any) -> None:
    export = sub.add_parser("export", help="merge an adapter into its base (a standalone HF model) or copy it; or "
                                           "write a GGUF for llama.cpp/Ollama")
    export.add_argument("run_dir", help="run folder written by tuneforge train")
    export.add_argument("--output", required=True, help="folder to write")
    export.add_argument("--merge", action="store_true", help="fold LoRA/DoRA/QLoRA/IA3 into the weights")
    export.add_argument("--format", choices=("hf", "gguf"), default="hf",
                        help="hf: a Hugging Face folder; gguf: one file for llama.cpp/Ollama (causal LM runs; "
                             "adapters are merged first)")
    export.add_argument("--quant", default="q8_0", help="GGUF type: f32, f16, bf16, q8_0 (by llama.cpp's "
                                                        "converter), q4_k_m, q5_k_m, q6_k, q4_0 (need llama-cpp-python)")


def add_optimize(sub: Any) -> None:
    from tuneforge.export.prune import METHODS

    optimize = sub.add_parser("optimize", help="quantize and/or prune a run's model (a folder that loads like any "
                                               "run); --compare: every variant measured against the original")
    optimize.add_argument("run_dir", help="run folder written by tuneforge train")
    optimize.add_argument("--output", required=True, help="folder to write")
    optimize.add_argument("--quantize", help="int8 | int8-dynamic (torchao), torch-int8-dynamic, bnb-int8, nf4")
    optimize.add_argument("--prune", choices=METHODS, help="magnitude | wanda (unstructured, weights zeroed) | "
                                                          "structured (MLP channels and head groups removed)")
    optimize.add_argument("--sparsity", type=float, default=0.5, help="share pruned (default 0.5)")
    optimize.add_argument("--compare", action="store_true", help="build and measure every variant on the run's "
                                                                 "test split: optimize.json and optimize.html")
    optimize.add_argument("--threads", type=int, default=2, help="threads of each measurement (--compare)")
    optimize.add_argument("--variants", help="--compare only these rows, comma-separated (e.g. \"torchao int8 "
                                             "weight-only,wanda 50%%\"); the fp32 reference is always measured")


def serve(args: Any) -> int:
    from tuneforge.serve.limits import Limits
    from tuneforge.serve.server import Server, read_keys, run_forever

    limits = Limits(max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens, max_queue=args.max_queue,
                    requests_per_minute=args.rate_limit)
    from tuneforge.config.monitor import load_monitor_config

    log_db = None if args.log_db.lower() == "none" else args.log_db
    monitor = load_monitor_config(args.monitor) if args.monitor else None
    if monitor is not None and log_db is None:
        from tuneforge.errors import UserError

        raise UserError("--monitor reads the prediction log: give --log-db FILE (not none)")
    server = Server(args.run_dirs, args.host, args.port, read_keys(args.api_key_file), limits, args.precision,
                    args.max_batch, args.max_wait_ms / 1000, log_db, not args.no_log_text, monitor)
    for run_dir in args.run_dirs:  # a wrong folder is one line now, not a 503 later
        from tuneforge.tasks.run_folder import read_model_meta

        read_model_meta(run_dir)
    run_forever(server)
    return 0


def export(args: Any) -> int:
    if args.format == "gguf":
        from tuneforge.pipelines.export_gguf import export_gguf

        facts = export_gguf(args.run_dir, args.output, args.quant, log=lambda line: print(line, file=sys.stderr))
        agreement = facts["agreement"]
        print(f"wrote {facts['output']} ({facts['bytes'] / 2**20:.1f} MiB, {facts['metadata']['architecture']}, "
              f"chat template {'embedded' if facts['metadata']['chat_template'] else 'none'}); loaded back by "
              f"transformers it agrees on {agreement['top1_agreement']:.1%} of top-1 tokens (stated for "
              f"{args.quant}: >= {agreement['required_top1']:.0%}), greedy text equal on {agreement['greedy_equal']}"
              f"/{agreement['prompts']} prompts")
        return 0
    from tuneforge.pipelines.export import export_run

    facts = export_run(args.run_dir, args.output, merge=args.merge)
    detail = f" (max |merged - unmerged| logit difference {facts['max_abs_logit_difference']:.1e})" \
        if facts["merged"] else ""
    print(f"{'merged' if facts['merged'] else 'copied'} {facts['method']} -> {facts['output']}{detail}")
    return 0


def optimize(args: Any) -> int:
    def log(line: str) -> None:
        print(line, file=sys.stderr)

    if args.compare:
        from tuneforge.evaluation.optimize_report import table_rows
        from tuneforge.pipelines.optimize import chosen_rows, compare

        result = compare(args.run_dir, args.output, chosen_rows(args.variants), threads=args.threads, log=log)
        rows = table_rows(result)
        columns = list(dict.fromkeys(key for row in rows for key in row))
        widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in columns}
        print("  ".join(c.ljust(widths[c]) for c in columns))
        for row in rows:
            print("  ".join(row.get(c, "").ljust(widths[c]) for c in columns))
        print(f"table: {Path(args.output) / 'optimize.html'}")
        return 0
    from tuneforge.pipelines.optimize import optimize

    facts = optimize(args.run_dir, args.output, args.quantize, args.prune, args.sparsity, log=log)
    done = ", ".join(part for part in (facts.get("quantize") and f"quantized {facts['quantize']}",
                                       facts.get("prune") and f"pruned {facts['prune']} {facts['sparsity']:.0%}")
                     if part)
    print(f"{done} -> {facts['output']} (loads with predict/generate/serve like a run)")
    return 0


COMMANDS = {"serve": serve, "export": export, "optimize": optimize}
