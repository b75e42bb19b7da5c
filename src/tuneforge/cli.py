"""The command line: parse, call a pipeline, print. No logic of its own; heavy imports happen in commands."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from tuneforge.cli_deploy import COMMANDS as DEPLOY_COMMANDS
from tuneforge.cli_deploy import add_commands as add_deploy_commands
from tuneforge.cli_deploy import precision_arg
from tuneforge.cli_monitor import COMMANDS as MONITOR_COMMANDS
from tuneforge.cli_monitor import add_commands as add_monitor_commands
from tuneforge.cli_pairs import PAIRS_COMMANDS, add_pairs_parser
from tuneforge.cli_scale import SCALE_COMMANDS, add_scale_parsers
from tuneforge.cli_ui import UI_COMMANDS, add_ui_parser

HELP = """tuneforge: fine-tune a pretrained model on your data, evaluate it honestly against baselines.

  tuneforge quickstart                         fine-tune MiniLM on BBC News topics (CPU, a few minutes)
  tuneforge quickstart --task chat             instruction-tune SmolLM2-135M on chatterbot Q/A pairs (CPU)
  tuneforge train cfg.yaml [key.sub=value ...] one run from a YAML config (see: tuneforge config keys)
  tuneforge train cfg.yaml --nproc 8           the same run on 8 processes/GPUs (distributed: ddp, fsdp, zero2/3)
  tuneforge cloud spec cfg.yaml --target skypilot --gpus A100:8 --output D   a cloud job that runs it
  tuneforge predict RUN_DIR --text "..."       label new text with a trained run
  tuneforge predict RUN_DIR --question Q --context C   the answer span in C (a question-answering run)
  tuneforge generate RUN_DIR --prompt "..."    answer prompts with a trained generative run
  tuneforge chat RUN_DIR                       talk to it (streams tokens, keeps the conversation)
  tuneforge export RUN_DIR --merge --output D  fold a LoRA/QLoRA/IA3 adapter into a standalone HF model
  tuneforge export RUN_DIR --format gguf --quant q8_0 --output D   one GGUF file for llama.cpp/Ollama
  tuneforge optimize RUN_DIR --quantize int8 --output D   quantize and/or --prune wanda; --compare: the table
  tuneforge serve RUN_DIR --log-db log.sqlite --monitor examples/monitor.yaml   serve, log, watch for drift
  tuneforge monitor check LOG --run RUN_DIR    drift and quality per window; exit 1 on an alert (report: a page)
  tuneforge retrain RUN_DIR --feedback LOG --output D   learn the labelled feedback, replay the old data
  tuneforge compare-methods cfg.yaml           the same task with full, freeze, lora, qlora, adapter, prefix
  tuneforge estimate cfg.yaml                  peak memory, FLOPs and time before a run (also printed by train)
  tuneforge ui --workspace DIR                 a web UI: configure, launch and watch runs, compare them, chat
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneforge", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks (anywhere on the line)")
    parser.add_argument("--version", action="store_true", help="print the version (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_init(sub)
    _add_train(sub)
    _add_quickstart(sub)
    _add_predict(sub)
    _add_generate_and_chat(sub)
    _add_compare_methods(sub)
    _add_estimate(sub)
    add_deploy_commands(sub)
    add_monitor_commands(sub)
    add_scale_parsers(sub)
    add_pairs_parser(sub)
    add_ui_parser(sub)
    _add_tune(sub)
    _add_runs(sub)
    _add_config(sub)
    return parser


def _add_train(sub: Any) -> None:
    train = sub.add_parser("train", help="fine-tune from a YAML config (train --help lists every config key)")
    _train_args(train)


def _add_quickstart(sub: Any) -> None:
    quick = sub.add_parser("quickstart", help="fine-tune MiniLM on BBC News topics (or --task chat: SmolLM2 on "
                           "chatterbot Q/A) and compare with baselines")
    quick.add_argument("--task", choices=["classification", "chat"], default="classification",
                       help="classification (MiniLM, BBC News) or chat (SmolLM2-135M, chatterbot-corpus)")
    quick.add_argument("--output", help="run folder (default runs/quickstart-<task>-<timestamp>)")
    quick.add_argument("overrides", nargs="*", help="key.sub=value overrides of the quickstart config")


def _add_predict(sub: Any) -> None:
    predict = sub.add_parser("predict", help="label text with a trained run")
    predict.add_argument("run_dir", help="run folder written by tuneforge train")
    group = predict.add_mutually_exclusive_group(required=True)
    group.add_argument("--text", action="append", help="a text to label (repeatable)")
    group.add_argument("--file", help="CSV file with a text column")
    group.add_argument("--question", help="question-answering runs: the question (with --context)")
    predict.add_argument("--context", help="question-answering runs: the text the answer is taken from")
    predict.add_argument("--output", help="output CSV for --file (default: <file>.predictions.csv)")
    predict.add_argument("--text-column", default="text", help="text column of --file (default: text)")
    predict.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    precision_arg(predict)


def _add_generate_and_chat(sub: Any) -> None:
    for name, text in (("generate", "answer prompts with a trained generative run"),
                       ("chat", "chat with a trained generative run (streams tokens, keeps the conversation)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", help="run folder written by tuneforge train (task causal-lm or seq2seq)")
        if name == "generate":
            p.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
        p.add_argument("--system", help="a system message")
        p.add_argument("--max-new-tokens", type=int, help="most tokens per answer (default 64)")
        p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
        p.add_argument("--temperature", type=float, help="sampling temperature (with --sample)")
        p.add_argument("--num-beams", type=int, help="beam search width")
        precision_arg(p)


def _add_compare_methods(sub: Any) -> None:
    compare = sub.add_parser("compare-methods", help="the same task with several methods: parameters, peak "
                             "memory, time, test metric")
    compare.add_argument("config", help="YAML run config")
    compare.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    compare.add_argument("--methods", default="full,freeze,lora,qlora,adapter,prefix",
                         help="comma-separated methods (default full,freeze,lora,qlora,adapter,prefix)")
    compare.add_argument("--output", help="folder (default runs/compare-<name>)")


def _add_estimate(sub: Any) -> None:
    est = sub.add_parser("estimate", help="predict peak memory, FLOPs per token and time from the config alone")
    est.add_argument("config", help="YAML run config")
    est.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    est.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    est.add_argument("--gradient-checkpointing", action="store_true", help="estimate with gradient checkpointing")
    est.add_argument("--num-labels", type=int, help="classes/tags of the task head (default: from the data)")
    est.add_argument("--tokens", type=int, help="training tokens per epoch, for the time estimate (default: from "
                     "the data)")


def _add_tune(sub: Any) -> None:
    tune = sub.add_parser("tune", help="search hyperparameters (the config's hpo: section) with pruning")
    tune.add_argument("config", help="YAML run config with an hpo: section")
    tune.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    tune.add_argument("--output", help="study folder (default runs/hpo/<study>)")
    tune.add_argument("--storage", help="Optuna storage URL shared by workers, e.g. postgresql://user@host/db")
    tune.add_argument("--n-trials", type=int, help="finished trials to aim for (overrides hpo.n_trials)")
    tune.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    tune.add_argument("--worker-only", action="store_true",
                      help="only run trials (another process writes best.yaml and scores the test split)")


def _add_runs(sub: Any) -> None:
    runs = sub.add_parser("runs", help="tracked runs: list, show, compare, ui")
    runs_sub = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    runs_list = runs_sub.add_parser("list", help="recent runs with their headline metrics")
    runs_list.add_argument("--experiment", help="only this experiment (run name)")
    runs_list.add_argument("--study", help="only the trials of this study")
    runs_show = runs_sub.add_parser("show", help="one run's parameters and metrics")
    runs_show.add_argument("run", help="run id (or prefix), run name or run folder")
    runs_show.add_argument("--all", action="store_true", help="every metric and parameter")
    runs_compare = runs_sub.add_parser("compare", help="runs side by side (or every trial of --study)")
    runs_compare.add_argument("runs", nargs="*", help="run ids or run folder names")
    runs_compare.add_argument("--study", help="compare every trial of this study")
    runs_ui = runs_sub.add_parser("ui", help="start the MLflow UI on localhost")
    runs_ui.add_argument("--port", type=int, default=5000)
    for p in (runs_list, runs_show, runs_compare, runs_ui):
        p.add_argument("--tracking-dir", default="runs/mlflow", help="embedded store folder (default runs/mlflow)")
        p.add_argument("--tracking-uri", help="a remote MLflow server instead of the embedded store")


def _add_config(sub: Any) -> None:
    config = sub.add_parser("config", help="validate or show a config; list every config key")
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("validate", "check a config and its overrides"),
                         ("show", "print the resolved config with every default")):
        p = config_sub.add_parser(action, help=text)
        p.add_argument("config", nargs="?" if action == "show" else None,
                       help="YAML run config" + (" (none: every default, with placeholders)" if action == "show" else ""))
        p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    config_sub.add_parser("keys", help="every config key with its type, default and description")


def _train_args(train: argparse.ArgumentParser) -> None:
    train.add_argument("config", help="YAML run config")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=1 method.r=4")
    train.add_argument("--output", help="run folder (default runs/<name>-<timestamp>)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints/ after a finished run")
    scale = train.add_argument_group("several processes (torchrun underneath; the config's distributed: section)")
    scale.add_argument("--nproc", type=int, help="processes on this machine (one per GPU; on a CPU, gloo)")
    scale.add_argument("--nnodes", type=int, default=1, help="machines (default 1); each runs this command")
    scale.add_argument("--node-rank", type=int, default=0, help="this machine's number, 0 to nnodes-1")
    scale.add_argument("--master-addr", default="127.0.0.1", help="the address of machine 0")
    scale.add_argument("--master-port", type=int, default=29500, help="a free port on machine 0 (default 29500)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, version = "--debug" in argv, "--version" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a not in ("--debug", "--version")]
    if version:
        from tuneforge import __version__

        print(f"tuneforge {__version__}")
        return 0
    if argv[:1] == ["train"] and any(a in ("-h", "--help") for a in argv[1:]):
        return _train_help()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = debug
    if args.command is None:
        parser.print_help()
        return 0
    commands: dict[str, Callable[[Any], int]] = {"init": _init, "train": _train, "quickstart": _quickstart,
                                                 "predict": _predict,
                                                 "config": _config, "tune": _tune, "runs": _runs,
                                                 "generate": _generate, "chat": _chat, **DEPLOY_COMMANDS, **MONITOR_COMMANDS, **SCALE_COMMANDS, **UI_COMMANDS, **PAIRS_COMMANDS,
                                                 "compare-methods": _compare_methods, "estimate": _estimate}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    # bitsandbytes warns on import, on every CPU without its optional kernels package: not the user's concern
    # (and torchao, imported by peft, about its GPU-only kernels and torch.compile registrations)
    for name in ("bitsandbytes", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return commands[args.command](args)
    except KeyboardInterrupt as interrupt:
        run_dir = getattr(interrupt, "run_dir", None)
        if args.command == "train" and run_dir:
            again = " ".join(shlex.quote(a) for a in ["tuneforge", "train", args.config, *args.overrides, "--output",
                                                      str(run_dir), "--resume"])
            print(f"interrupted; continue with: {again}", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        from tuneforge.errors import UserError

        if args.debug:
            raise
        if isinstance(exc, UserError):
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        raise


def _add_init(sub: Any) -> None:
    init = sub.add_parser("init", help="write a commented starter config for a task")
    init.add_argument("--task", help="the task (default: the first of tuneforge's tasks, sequence "
                      "classification; see config keys, model.task)")
    init.add_argument("--output", default="tuneforge.yaml", help="file to write (default tuneforge.yaml)")


def _init(args: Any) -> int:
    from tuneforge.errors import UserError
    from tuneforge.tasks.registry import available_tasks
    from tuneforge.tasks.starter import starter_config

    target = Path(args.output)
    if target.exists():
        raise UserError(f"{target}: already exists; choose another --output")
    target.write_text(starter_config(args.task or available_tasks()[0]), encoding="utf-8")
    print(f"wrote {target}: edit model.name and data.path, then: tuneforge config validate {target}")
    return 0


def _train_help() -> int:
    parser = argparse.ArgumentParser(prog="tuneforge train", description="Fine-tune from a YAML run config.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _train_args(parser)
    from tuneforge.config.help import describe_keys

    print(parser.format_help() + "\nconfig keys (override any with key.sub=value):\n" + describe_keys())
    return 0


def _train(args: Any) -> int:
    from tuneforge.config import load_config
    from tuneforge.pipelines.finetune import finetune
    from tuneforge.summary import print_summary

    if args.nproc or args.nnodes > 1:
        from tuneforge.pipelines.launch import Topology, launch

        topology = Topology(args.nproc or 1, args.nnodes, args.node_rank, args.master_addr, args.master_port)
        return launch(args.config, args.overrides, topology, args.output, args.resume, args.keep_checkpoints)
    from tuneforge.training.distributed import world

    config = load_config(args.config, args.overrides)
    result = finetune(config, output=args.output, resume=args.resume, keep_checkpoints=args.keep_checkpoints)
    if world().main:  # under torchrun the first process prints the summary
        print_summary(result)
    return 0


def _quickstart(args: Any) -> int:
    from tuneforge.pipelines.quickstart import quickstart
    from tuneforge.summary import print_summary

    result = quickstart(output=args.output, overrides=args.overrides, task=args.task)
    print_summary(result)
    return 0


def _predict(args: Any) -> int:
    from tuneforge.errors import UserError
    from tuneforge.io import strict_json
    from tuneforge.pipelines.predict import Predictor, load_predictor, predict_file, read_model_meta
    from tuneforge.tasks.registry import task_spec

    from tuneforge.tasks.run_folder import task_of

    task = task_spec(task_of(read_model_meta(args.run_dir)[1]))
    if task.generates:
        raise UserError(f"{args.run_dir}: a {task.name} run writes text; use tuneforge generate or chat")
    qa = task.inputs == ("question", "context")
    if qa != bool(args.question) or (args.question and not args.context):
        raise UserError(f"{args.run_dir}: a question-answering run answers --question with --context" if qa else
                        f"{args.run_dir}: --question/--context need a question-answering run; this one labels "
                        f"--text or --file")
    predictor = load_predictor(args.run_dir, args.precision)
    if qa:
        answer = predictor.answer([args.question], [args.context])[0]
        print(strict_json({"question": args.question, "answer": answer["text"], "score": answer["score"],
                           "start": answer["start"], "end": answer["end"]}))
        return 0
    if args.file:
        if not isinstance(predictor, Predictor):
            raise UserError(f"{args.run_dir}: --file labels a CSV with a classification run; give --text here")
        output = args.output or f"{os.path.splitext(args.file)[0]}.predictions.csv"
        count = predict_file(predictor, args.file, output, args.text_column, overwrite=args.overwrite)
        print(f"labelled {count} rows -> {output}")
        return 0
    for text, result in zip(args.text, predictor.predict(args.text)):  # the field names of --file's columns
        print(strict_json({"text": text, "predicted": result["label"], "probabilities": result["probabilities"]}))
    return 0


def _generator(args: Any) -> Any:
    from tuneforge.pipelines.generate import load_generator

    return load_generator(args.run_dir, args.precision, max_new_tokens=args.max_new_tokens, do_sample=args.sample or None,
                          temperature=args.temperature, num_beams=args.num_beams)


def _generate(args: Any) -> int:
    from tuneforge.io import strict_json

    for result in _generator(args).generate(args.prompt, system=args.system):
        print(strict_json(result))
    return 0


def _chat(args: Any) -> int:
    from tuneforge.pipelines.generate import chat_loop

    generator = _generator(args)
    print("chat: /exit or Ctrl-D ends, /reset starts over")
    chat_loop(generator, system=args.system)
    return 0


def _compare_methods(args: Any) -> int:
    from tuneforge.config import load_config
    from tuneforge.pipelines.compare_methods import compare_methods, headline_metric, print_comparison

    config = load_config(args.config, args.overrides)
    output = args.output or f"runs/compare-{config.name}"
    rows = compare_methods(config, [m.strip() for m in args.methods.split(",") if m.strip()], output)
    print_comparison(rows, headline_metric(config))
    print(f"table and plot: {output}/compare.html")
    return 0


def _estimate(args: Any) -> int:
    from tuneforge.config import load_config
    from tuneforge.planning.memory import advise, available_memory, estimate, measure_flops_per_second, \
        seconds_per_epoch

    config = load_config(args.config, args.overrides)
    num_labels, tokens = _data_facts(config, args.num_labels, args.tokens)
    result = estimate(config, args.gradient_checkpointing, args.device, num_labels=num_labels)
    print(result.table())
    flops = measure_flops_per_second()
    print(f"training FLOPs per token: {result.flops_per_token:.3g}; this device's matmul throughput: "
          f"{flops / 1e9:.0f} GFLOP/s")
    if tokens:
        print(f"time per epoch ({tokens:,} tokens) at that throughput: "
              f"{seconds_per_epoch(result, tokens, flops):.0f} s (a lower bound: training rarely reaches it)")
    available = available_memory(args.device)
    advice = advise(result, available)
    print(f"available memory: {available / 2**20:,.0f} MiB: " + ("fits" if not advice else "will not fit"))
    for line in advice:
        print(f"- {line}")
    return 0


def _data_facts(config: Any, num_labels: int | None, tokens: int | None) -> tuple[int, int | None]:
    """The head's size and the training tokens per epoch: as given, else read from the config's data (as train
    reads it); when the data cannot be read, 2 labels and no time estimate, said in one line."""
    if num_labels is not None and tokens is not None:
        return num_labels, tokens
    from tuneforge.errors import UserError
    from tuneforge.pipelines.finetune import read_inputs
    from tuneforge.tasks.registry import task_spec

    try:
        data = read_inputs(task_spec(config.model.task), config).data
    except UserError as exc:
        print(f"data not read ({exc}); assuming {num_labels or 2} labels (--num-labels, --tokens)")
        return num_labels or 2, tokens
    counted = sum(len(item["input_ids"]) for item in data.train)
    print(f"from the data: {len(data.labels)} labels, {counted:,} training tokens per epoch")
    return num_labels or max(2, len(data.labels)), tokens or counted


def _tune(args: Any) -> int:
    from tuneforge.config import load_config
    from tuneforge.pipelines.tune import tune

    config = load_config(args.config, args.overrides)
    result = tune(config, output=args.output, storage=args.storage, n_trials=args.n_trials, workers=args.workers,
                  worker_only=args.worker_only)
    if result is not None:
        from tuneforge.summary import print_tune_summary

        print_tune_summary(result)
    return 0


def _runs(args: Any) -> int:
    from tuneforge.config.schema import TrackingConfig
    from tuneforge.summary import print_comparison, print_run, print_runs

    tracking = TrackingConfig(dir=args.tracking_dir, uri=args.tracking_uri)
    if args.action == "ui":
        from tuneforge.tracking.base import artifact_root, tracking_uri

        command = ["mlflow", "ui", "--backend-store-uri", tracking_uri(tracking), "--host", "127.0.0.1",
                   "--port", str(args.port)]
        root = artifact_root(tracking)
        if root:
            command += ["--default-artifact-root", root]
        os.execvp(os.path.join(os.path.dirname(sys.executable), "mlflow"), command)
    from tuneforge.tracking import query

    if args.action == "list":
        print_runs(query.list_runs(tracking, args.experiment, args.study))
    elif args.action == "show":
        print_run(query.compare(tracking, [args.run])[0], everything=args.all)
    else:
        if not args.runs and not args.study:
            from tuneforge.errors import UserError

            raise UserError("runs compare needs run ids/names or --study NAME")
        print_comparison(query.compare(tracking, args.runs, args.study))
    return 0


def _config(args: Any) -> int:
    from tuneforge.config import dump_config, load_config

    if args.action == "keys":
        from tuneforge.config.help import describe_keys

        print(describe_keys())
        return 0
    if args.config is None:  # config show alone: every default, around placeholders for what has none
        config = load_config({"name": "my-run", "model": {"name": "minilm"}, "data": {"path": "data.csv"}},
                             args.overrides)
        print("# every default (model.name and data.path are placeholders; tuneforge init writes a starter)")
    else:
        config = load_config(args.config, args.overrides)
    if args.action == "show":
        print(dump_config(config), end="")
    else:
        from tuneforge.models.assets import resolve_model
        from tuneforge.tasks.registry import task_spec

        resolved = resolve_model(config.model.name, config.model.revision)  # the model exists and can do the task
        task_spec(config.model.task).check_model(config.model.name, resolved.path, config.model.revision)
        print(f"{args.config}: valid ({config.model.task}, method {config.method.name}, model {resolved.path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
