"""optimize.html: the table of a run's optimized variants (size, memory, speed, quality with intervals, the paired
difference to the unoptimized model) and a size-vs-quality plot, from optimize.json alone."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tuneforge.evaluation.figures import with_interval
from tuneforge.io import atomic_write_text


def table_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """The table as text cells (also what the console prints)."""
    rows = []
    for row in result["rows"]:
        if "figures" not in row:
            rows.append({"variant": row["name"], "note": f"failed: {row.get('error', '?')}"})
            continue
        figures, speed = row["figures"], row["speed"]
        rows.append({
            "variant": row["name"],
            "size MB": f"{row['bytes'] / 1e6:.1f} ({row['ratios']['size']:.2f}x)",
            "memory MB": f"{row['model_memory_mb']:.0f}",
            f"{speed['unit']}/s": f"{speed['per_second']:.1f} ({row['ratios']['speed']:.2f}x)",
            figures["metric"]: with_interval(figures["value"], figures["ci"]),
            "minus fp32": with_interval(figures["minus_reference"], figures["minus_reference_ci"]),
            "same answer": f"{100 * figures.get('same_prediction_share', figures.get('same_greedy_answer_share', 0)):.0f}%",
            "note": _note(row),
        })
    return rows


def _note(row: dict[str, Any]) -> str:
    built = row.get("built", {})
    if built.get("prune") == "structured":
        kept = built.get("mlp_channels", ["?", "?"])
        heads = built.get("kv_groups")
        return f"MLP {kept[0]}->{kept[1]} channels" + (f", kv groups {heads[0]}->{heads[1]}" if heads else "")
    if built.get("prune"):
        return f"{100 * built.get('zeroed_share_of_block_weights', 0):.0f}% of block weights zero (dense file)"
    if built.get("on_load"):
        return "quantized when loaded (fp32 file)"
    if built.get("gguf"):
        top1 = built.get("agreement", {}).get("top1_agreement")
        return "run by llama.cpp" + (f"; top-1 tokens as the merged model's: {100 * top1:.1f}%" if top1 else "")
    return ""


def write_optimize_report(folder: Path, result: dict[str, Any]) -> Path:
    rows = table_rows(result)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(row.get(c, ''))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    metric = next((r["figures"]["metric"] for r in result["rows"] if "figures" in r), "metric")
    parts = [f"<h1>tuneforge optimize: {html.escape(Path(result['run']).name)}</h1>",
             f"<p>Task {html.escape(result['task'])}; every variant measured in its own process on "
             f"{html.escape(result['cpu'])} with {result['threads']} threads: size of weights and config, peak memory "
             f"of loading and running it, throughput (median of 3 timed passes after a warm-up), {metric} on the run's "
             f"test split with its bootstrap interval, and the paired difference to the unoptimized fp32 model (the "
             f"same resamples). 'Same answer': the share of test examples (generative: greedy answers to the first "
             f"prompts) where the variant answers as the fp32 model does.</p>",
             "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>" + body + "</table>",
             _plot(result, metric)]
    from tuneforge.evaluation.report import CSS

    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge optimize</title><style>{CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(folder / "optimize.html", page)


def _plot(result: dict[str, Any], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuneforge.evaluation.report import _img

    measured = [r for r in result["rows"] if "figures" in r]
    if not measured:
        return ""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for row in measured:
        figures = row["figures"]
        low, high = figures["ci"]
        size = row["bytes"] / 1e6
        ax.errorbar(size, figures["value"], yerr=[[figures["value"] - low], [high - figures["value"]]], fmt="o",
                    capsize=3)
        ax.annotate(row["name"], (size, figures["value"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    reference = measured[0]["figures"]["value"]
    ax.axhline(reference, color="#999", linestyle="--", linewidth=1, label=f"{measured[0]['name']} {metric}")
    ax.set_xlabel("size of weights and config (MB)")
    ax.set_ylabel(f"{metric} on the test split (95% interval)")
    ax.set_title("size against quality")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _img(fig)
