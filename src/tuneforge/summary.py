"""Console summary of a finished run: the comparison table, the time taken and where the report is."""

from __future__ import annotations

from typing import Any

SHOWN = ("accuracy", "macro_f1", "weighted_f1")


def print_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    test = result.metrics["test"]
    models = {"fine-tuned": test["finetuned"], **{f"baseline: {k}": v for k, v in test["baselines"].items()}}
    table = Table(title=f"Test split ({test['finetuned']['n']} examples), {int(test['confidence'] * 100)}% "
                        f"bootstrap intervals")
    table.add_column("metric")
    for name in models:
        table.add_column(name, justify="right")
    for metric in SHOWN:
        cells = [f"{m[metric]:.4f} [{m[f'{metric}_ci'][0]:.4f}, {m[f'{metric}_ci'][1]:.4f}]" for m in models.values()]
        table.add_row(metric, *cells)
    console = Console()
    console.print(table)
    for name, diff in test.get("finetuned_minus_baseline", {}).items():
        low, high = diff["macro_f1_ci"]
        console.print(f"macro_f1 fine-tuned - {name}: {diff['macro_f1']:+.4f} [{low:+.4f}, {high:+.4f}]")
    console.print(f"time taken: {result.seconds:.0f} s ({result.seconds / 60:.1f} min)")
    console.print(f"report: {result.run_dir / 'report.html'}")


def print_tune_summary(result: Any) -> None:
    from rich.console import Console

    console = Console()
    states = [t["state"] for t in result.trials]
    console.print(f"trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
                  f"{states.count('FAIL')} failed; training steps in all: "
                  f"{sum(t.get('steps') or 0 for t in result.trials)}")
    console.print(f"best (validation): {result.best_values} with {result.best_params}")
    if result.test_metrics:
        fine = result.test_metrics["finetuned"]
        console.print(f"test macro_f1 of the best configuration: {fine['macro_f1']:.4f} "
                      f"[{fine['macro_f1_ci'][0]:.4f}, {fine['macro_f1_ci'][1]:.4f}]; baselines: "
                      + ", ".join(f"{k} {v['macro_f1']:.4f}" for k, v in result.test_metrics["baselines"].items()))
    console.print(f"best.yaml and hpo_report.html: {result.study_dir}")


def print_runs(rows: list[dict[str, Any]], with_params: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    from tuneforge.tracking.query import HEADLINE, differing_params

    metrics = [m for m in HEADLINE if any(m in r["metrics"] for r in rows)]
    for extra in sorted({k for r in rows for k in r["metrics"] if k.startswith("eval_")})[:4]:
        metrics.append(extra)
    params = differing_params(rows) if with_params else []
    table = Table()
    for column in ("run", "status", "started", "trial", *params, *metrics):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["name"] or r["run_id"][:8], r["status"], r["started"], r["trial"] or "",
                      *[str(r["params"].get(p, "")) for p in params],
                      *[f"{r['metrics'][m]:.4g}" if m in r["metrics"] else "" for m in metrics])
    Console(width=200).print(table)


def print_run(row: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    console.print(f"run {row['run_id']} ({row['name']}), experiment {row['experiment']}, {row['status']}, "
                  f"started {row['started']}")
    for title, values in (("metrics", row["metrics"]), ("params", row["params"])):
        table = Table(title=title)
        table.add_column("key")
        table.add_column("value")
        for key in sorted(values):
            value = values[key]
            table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
        console.print(table)
