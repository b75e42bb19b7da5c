"""The commands after deployment: ``monitor check`` (alerts; exit 1 when any, for cron and CI), ``monitor report``
(the page of every signal over time) and ``retrain`` (from labelled feedback, with replay; promoted only when the
old test split did not get worse). Thin: parse, call, print."""

from __future__ import annotations

import json
from typing import Any

from tuneforge.io import strict_json


def add_commands(sub: Any) -> None:
    monitor = sub.add_parser("monitor", help="drift and quality of a served run from its prediction log: check "
                                             "(alerts, exit 1 when any) or report (monitor.html)")
    actions = monitor.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    for action, text in (("check", "apply the alert rules to every window; print the result as JSON; announce the "
                                   "alerts no earlier check announced, and exit 1 when there are any"),
                         ("report", "write an HTML page with every signal over time, the rules and the alerts")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("log", metavar="LOG", help="the prediction log: an SQLite file (tuneforge serve --log-db) "
                                                       "or postgresql://...")
        parser.add_argument("--run", required=True, metavar="RUN_DIR", help="the served run (its validation split "
                                                                            "is the reference)")
        parser.add_argument("--config", metavar="YAML", help="windows and alert rules (e.g. examples/monitor.yaml)")
        parser.add_argument("--model", help="the model name in the log (default: the run folder's name)")
        if action == "report":
            parser.add_argument("--output", default="monitor.html", help="the page to write (default monitor.html)")
        else:
            parser.add_argument("--no-notify", action="store_true", help="do not announce alerts (no log lines, no "
                                "webhook, nothing remembered); the exit code then counts every alert")
    add_retrain(sub)
    add_continual(sub)
    multi = sub.add_parser("multitask", help="several classification datasets on one encoder, a head each, mixed by "
                                             "sampling weights (the config's multitask section)")
    multi.add_argument("config", help="a run config with a multitask section")
    multi.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    multi.add_argument("--output", help="run folder (default runs/<name>-<timestamp>)")


def add_retrain(sub: Any) -> None:
    retrain = sub.add_parser("retrain", help="train a run again on its labelled feedback, replaying its old training "
                                             "data; old vs new on the old test split and the new data")
    retrain.add_argument("run_dir", metavar="RUN_DIR", help="the run to start from")
    retrain.add_argument("--feedback", required=True, metavar="LOG", help="the prediction log with labelled requests")
    retrain.add_argument("--output", required=True, help="the new run folder")
    retrain.add_argument("--model", help="the model name in the log (default: the run folder's name)")
    retrain.add_argument("--replay", type=float, default=1.0, help="old training rows per new labelled row "
                         "(default 1.0; 0: plain fine-tuning on the new data, which forgets)")
    retrain.add_argument("--ewc", type=float, default=0.0, help="elastic weight consolidation strength (default 0: "
                         "off); the Fisher information from 200 old training rows anchors the weights that mattered")
    retrain.add_argument("--new-test-share", type=float, default=0.3, help="share of the labelled feedback held "
                         "out to score old and new models on the new data (default 0.3)")
    retrain.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for the new run "
                         "(e.g. train.epochs=2)")


def add_continual(sub: Any) -> None:
    steps = sub.add_parser("continual", help="teach one classifier a sequence of datasets with the same labels "
                                             "(replay, EWC); the accuracy matrix, backward transfer, forgetting")
    steps.add_argument("config", nargs="?", help="the run config of every stage (default: --from's)")
    steps.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    steps.add_argument("--stage", action="append", required=True, metavar="DATA", help="a stage's data (a path or "
                       "offline:NAME), in order; repeat")
    steps.add_argument("--from", dest="start_from", metavar="RUN_DIR", help="a trained run as stage 0 (its data)")
    steps.add_argument("--output", required=True, help="folder for the stage runs and continual.json/.html")
    steps.add_argument("--replay", type=float, default=0.0, help="earlier stages' rows per new row (default 0)")
    steps.add_argument("--ewc", type=float, default=0.0, help="EWC strength (default 0: off)")


def continual(args: Any) -> int:
    from pathlib import Path

    from tuneforge.config.loader import load_config
    from tuneforge.errors import UserError
    from tuneforge.pipelines.continual import continual as run_continual

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # no config given: that was the first override
        config, overrides = None, [config, *overrides]
    source = config or (Path(args.start_from) / "config.yaml" if args.start_from else None)
    if source is None:
        raise UserError("continual: give a run config, or --from RUN_DIR to start from a trained run")
    result = run_continual(load_config(source, overrides), args.stage, args.output, args.replay, args.ewc,
                           args.start_from)
    print(strict_json({k: result[k] for k in ("stages", "average_accuracy", "backward_transfer", "forgetting")},
                      indent=2))
    return 0


def multitask(args: Any) -> int:
    from tuneforge.config.loader import load_config
    from tuneforge.pipelines.multitask import multitask as run_multitask

    result = run_multitask(load_config(args.config, args.overrides), args.output)
    for name, figures in result["tasks"].items():
        model, gain = figures["finetuned"], figures["finetuned_minus_majority"]
        print(f"{name}: macro-F1 {model['macro_f1']:.4f} [{model['macro_f1_ci'][0]:.4f}, {model['macro_f1_ci'][1]:.4f}]"
              f", vs majority {gain['macro_f1']:+.4f} [{gain['macro_f1_ci'][0]:+.4f}, {gain['macro_f1_ci'][1]:+.4f}]")
    print(f"report: {result['run_dir'] / 'report.html'}")
    return 0


def monitor(args: Any) -> int:
    from tuneforge.config.monitor import load_monitor_config
    from tuneforge.monitor.check import check

    config = load_monitor_config(args.config)
    quiet = args.monitor_command == "report"
    result = check(args.log, args.run, config, args.model, notify=not quiet and not args.no_notify,
                   log=(lambda line: None) if quiet else _stderr)
    if args.monitor_command == "report":
        from tuneforge.monitor.report import write_report

        print(f"wrote {write_report(result, args.output)} ({len(result['windows'])} windows, "
              f"{len(result['alerts'])} alerts)")
        return 0
    print(strict_json({key: value for key, value in result.items() if key != "windows"} |
                      {"windows": [{k: w[k] for k in ("window", "rows", "signals", "intervals")}
                                   for w in result["windows"]]}))
    return 1 if (result["alerts"] if args.no_notify else result["new_alerts"]) else 0


def retrain(args: Any) -> int:
    from tuneforge.pipelines.retrain import retrain as run_retrain

    result = run_retrain(args.run_dir, args.feedback, args.output, model=args.model, replay=args.replay,
                         new_test_share=args.new_test_share, overrides=args.overrides, ewc=args.ewc)
    print(json.dumps(result["summary"], indent=2))
    return 0


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


COMMANDS = {"monitor": monitor, "retrain": retrain, "continual": continual, "multitask": multitask}
