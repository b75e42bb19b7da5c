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
