"""Console summary of a finished run: the comparison table, the time taken and where the report is."""

from __future__ import annotations

from typing import Any

def print_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from tuneforge.tasks.registry import task_spec

    test = result.metrics["test"]
    from tuneforge.tasks.run_folder import task_of

    task = task_spec(task_of(result.metrics))
    shown, headline = task.shown, task.headline_of(test["finetuned"])
    models = {"fine-tuned": test["finetuned"], **{f"baseline: {k}": v for k, v in test["baselines"].items()}}
    count = test.get("n_prompts") or test.get("n_pairs") or test["finetuned"].get("n") or test.get("n_perplexity")
    table = Table(title=f"Test split ({count} examples), {int(test['confidence'] * 100)}% bootstrap intervals")
    table.add_column("metric")
    for name in models:
        table.add_column(name, justify="right")
    for metric in shown:
        if any(m.get(metric) is not None for m in models.values()):
            table.add_row(metric, *[_figure(m, metric) for m in models.values()])
    console = Console()
    console.print(table)
    for name, diff in test.get("finetuned_minus_baseline", {}).items():
        if f"{headline}_ci" in diff:
            low, high = diff[f"{headline}_ci"]
            console.print(f"{headline} fine-tuned - {name}: {diff[headline]:+.4f} [{low:+.4f}, {high:+.4f}]")
    verdict = result.metrics.get("verdict")
    if verdict:
        console.print(f"verdict: {verdict['line']}", style="bold", markup=False, highlight=False)
        for warning in verdict["warnings"] + verdict.get("weak_slices", []):
            console.print(f"warning: {warning}", style="bold yellow", markup=False, highlight=False)
    console.print(f"time taken: {result.seconds:.0f} s ({result.seconds / 60:.1f} min)")
    console.print(f"report: {result.run_dir / 'report.html'}")


def _figure(figures: dict[str, Any], metric: str) -> str:
    from tuneforge.evaluation.figures import with_interval

    return with_interval(figures.get(metric), figures.get(f"{metric}_ci"))


def print_tune_summary(result: Any) -> None:
    from rich.console import Console

    console = Console()
    states = [t["state"] for t in result.trials]
    console.print(f"trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
                  f"{states.count('FAIL')} failed; training steps in all: "
                  f"{sum(t.get('steps') or 0 for t in result.trials)}")
    console.print(f"best (validation): {result.best_values} with {result.best_params}")
    if result.test_metrics:
        from tuneforge.tasks.registry import task_spec

        fine = result.test_metrics["finetuned"]
        metric = task_spec(result.task).headline_of(fine)
        baselines = ", ".join(f"{k} {_figure(v, metric)}" for k, v in result.test_metrics["baselines"].items())
        console.print(f"test {metric} of the best configuration: {_figure(fine, metric)}; baselines: "
                      f"{baselines or 'none'}")
    console.print(f"best.yaml and hpo_report.html: {result.study_dir}")


def print_runs(rows: list[dict[str, Any]]) -> None:
    """A run list: one row per run, its headline test metrics and costs (columns only where some run has a value)."""
    from rich.table import Table

    from tuneforge.tracking.query import headline_columns

    metrics = [m for m in headline_columns() if any(m in r["metrics"] for r in rows)]
    trials = any(r["trial"] for r in rows)
    table = Table(show_edge=False)
    for column in ("run", "status", "started", *(["trial"] if trials else []), *(_short(m) for m in metrics)):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(r["name"] or r["run_id"][:8], r["status"], r["started"][5:16], *([r["trial"] or ""] if trials
                                                                                       else []),
                      *[f"{r['metrics'][m]:.4g}" if m in r["metrics"] else "" for m in metrics])
    _console().print(table)


def print_comparison(rows: list[dict[str, Any]]) -> None:
    """Runs side by side: a column per run, a row per metric (test metrics with their intervals when the run
    folder is on this machine) and per parameter that differs."""
    from rich.table import Table

    from tuneforge.tracking.query import differing_params, headline_columns

    metrics = [m for m in headline_columns() if any(m in r["metrics"] for r in rows)]
    metrics += sorted({k for r in rows for k in r["metrics"] if k.startswith("eval_")})[:4]
    table = Table(show_edge=False)
    table.add_column("")
    for r in rows:
        table.add_column((r["name"] or r["run_id"][:8]) + (f" (trial {r['trial']})" if r["trial"] else ""),
                         justify="right")
    table.add_row("status", *[r["status"] for r in rows])
    for metric in metrics:
        table.add_row(_short(metric), *[_with_interval(r, metric) for r in rows])
    for param in differing_params(rows):
        table.add_row(param, *[str(r["params"].get(param, "")) for r in rows], style="dim")
    _console().print(table)


def print_run(row: dict[str, Any], everything: bool = False) -> None:
    """One run: its headline figures and main settings (``everything``: every metric and parameter)."""
    from rich.table import Table

    from tuneforge.tracking.query import headline_columns

    console = _console()
    console.print(f"run {row['run_id']} ({row['name']}), experiment {row['experiment']}, {row['status']}, "
                  f"started {row['started']}")
    shown = list(row["metrics"]) if everything else [m for m in headline_columns() if m in row["metrics"]]
    params = sorted(row["params"]) if everything else [k for k in MAIN_PARAMS if k in row["params"]]
    table = Table(show_edge=False)
    table.add_column("")
    table.add_column("value", justify="right")
    for metric in sorted(shown) if everything else shown:
        table.add_row(_short(metric), _with_interval(row, metric))
    for key in params:
        table.add_row(key, str(row["params"][key]), style="dim")
    console.print(table)
    if not everything:
        console.print(f"({len(row['metrics'])} metrics and {len(row['params'])} parameters in all: --all)")


MAIN_PARAMS = ("model.name", "model.task", "method.name", "method.r", "train.learning_rate", "train.epochs",
               "train.batch_size", "data.path", "data.max_length")


SHORT = {"validation_best": "val best", "train_seconds": "train s", "global_steps": "steps"}


def _short(metric: str) -> str:
    return SHORT.get(metric, metric.removeprefix("test_"))


def _console() -> Any:
    """The terminal's width in a terminal; wide enough for a table otherwise (a file, a pipe, CI)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _with_interval(row: dict[str, Any], metric: str) -> str:
    from tuneforge.evaluation.figures import with_interval

    return with_interval(row["metrics"].get(metric), row.get("intervals", {}).get(metric), missing="", plain=".4g")
