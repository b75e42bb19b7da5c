"""report.html: one self-contained page (plots inlined as PNG data URIs) built from the run folder's files.

It reads only artifacts (metrics.json, data_report.json, params.json, train_log.jsonl, config.yaml), so the
numbers on the page are the numbers in the files.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from tuneforge.io import atomic_write_text

SHOWN = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1")

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.ci{color:#777;font-size:.85em}
.win{background:#e8f5e9}.lose{background:#ffebee}img{max-width:100%}pre{background:#f7f7f7;padding:1em}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid img{max-width:520px}#training td,#samples td{text-align:left}
#verdict{font-size:1.15em;padding:.6em 1em;border-radius:4px;background:#f3f3f3}#verdict.verdict-better{background:#e8f5e9}
#verdict.verdict-worse{background:#ffebee}.warning{background:#fff3e0;border-left:4px solid #e65100;padding:.6em 1em}"""


def fmt(value: float) -> str:
    return f"{value:.4f}"


def classification_parts(run_dir: Path, metrics: dict[str, Any], data_report: dict[str, Any],
                         params: dict[str, Any], log: list[dict[str, Any]]) -> list[str]:
    """The sequence-classification sections of report.html."""
    test = metrics["test"]
    return [
        f"<p>Test split: {test['finetuned']['n']} examples, read once after training. Intervals: "
        f"{int(test['confidence'] * 100)}% bootstrap ({test['bootstrap_samples']} resamples, the same resamples "
        f"for every model). Run time {metrics.get('seconds', '?')} s.</p>",
        "<h2>Fine-tuned model vs baselines (test split)</h2>", _comparison_table(test),
        "<h2>Difference from each baseline (paired bootstrap)</h2>", _difference_table(test),
        "<h2>Training</h2>", _training_plots(log), _training_facts(metrics, params),
        "<h2>Per class (fine-tuned)</h2>", _per_class_table(test["finetuned"]),
        "<h2>Confusion matrix (fine-tuned, test split)</h2>", _img(_confusion_plot(test["finetuned"])),
        _confusion_rates_table(test["finetuned"]["confusion_matrix"]),
        "<h2>Data</h2>", _data_section(data_report),
    ]


def page(run_dir: Path, name: str, parts: list[str]) -> Path:
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneforge: {html.escape(name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write_text(run_dir / "report.html", page)


def _cell(figures: dict[str, Any], metric: str) -> str:
    if figures.get(metric) is None:
        return "<td class='ci'>n/a</td>"
    if f"{metric}_ci" not in figures:
        return f"<td>{fmt(figures[metric])}</td>"
    low, high = figures[f"{metric}_ci"]
    return f"<td>{fmt(figures[metric])}<br><span class='ci'>[{fmt(low)}, {fmt(high)}]</span></td>"


def _comparison_table(test: dict[str, Any], shown: tuple[str, ...] = SHOWN) -> str:
    models = {"fine-tuned": test["finetuned"], **{f"baseline: {k}": v for k, v in test["baselines"].items()}}
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    rows = "".join(f"<tr><td>{metric}</td>{''.join(_cell(f, metric) for f in models.values())}</tr>"
                   for metric in shown if any(metric in f for f in models.values()))
    return f"<table id='comparison'><tr><th>metric</th>{head}</tr>{rows}</table>"


def _difference_table(test: dict[str, Any], shown: tuple[str, ...] = SHOWN) -> str:
    diffs = test.get("finetuned_minus_baseline", {})
    if not diffs:
        return "<p>No baselines were run.</p>"
    head = "".join(f"<th>fine-tuned − {html.escape(name)}</th>" for name in diffs)
    rows = []
    for metric in shown:
        if not any(f.get(f"{metric}_ci") for f in diffs.values()):
            continue
        cells = []
        for figures in diffs.values():
            if not figures.get(f"{metric}_ci"):
                cells.append("<td class='ci'>n/a</td>")
                continue
            low, high = figures[f"{metric}_ci"]
            verdict = "win" if low > 0 else "lose" if high < 0 else ""
            cells.append(f"<td class='{verdict}'>{figures[metric]:+.4f}<br>"
                         f"<span class='ci'>[{low:+.4f}, {high:+.4f}]</span></td>")
        rows.append(f"<tr><td>{metric}</td>{''.join(cells)}</tr>")
    return (f"<table id='differences'><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"
            "<p class='ci'>Green: the interval is above zero; red: below zero; plain: not distinguishable.</p>")


def _per_class_table(figures: dict[str, Any]) -> str:
    rows = []
    for label, f in figures["per_class"].items():
        cells = "".join(_cell(f, m) for m in ("precision", "recall", "f1"))
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}<td>{f['support']}</td></tr>")
    return ("<table id='per-class'><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th><th>support</th>"
            f"</tr>{''.join(rows)}</table>")


def _confusion_rates_table(cm: dict[str, Any]) -> str:
    labels = cm["labels"]
    head = "".join(f"<th>predicted {html.escape(label)}</th>" for label in labels)
    rows = []
    for i, label in enumerate(labels):
        cells = "".join(f"<td>{cm['rates'][i][j]:.3f}<br><span class='ci'>[{cm['rates_ci_low'][i][j]:.3f}, "
                        f"{cm['rates_ci_high'][i][j]:.3f}]</span></td>" for j in range(len(labels)))
        rows.append(f"<tr><td>true {html.escape(label)}</td>{cells}</tr>")
    return (f"<p>Share of each true class predicted as each class, with bootstrap intervals:</p>"
            f"<table id='confusion-rates'><tr><th></th>{head}</tr>{''.join(rows)}</table>")


def _training_facts(metrics: dict[str, Any], params: dict[str, Any]) -> str:
    training, validation = metrics.get("training", {}), metrics.get("validation", {})
    facts = {
        "method": training.get("method"),
        "trainable parameters": f"{params['trainable']:,} of {params['total']:,} ({params['trainable_pct']:.2f}%)",
        "epochs run / max": f"{training.get('epochs_run')} / {training.get('max_epochs')}",
        "optimizer steps": training.get("global_steps"),
        "best validation " + (validation.get("metric") or "metric"): _rounded(validation.get("best_metric")),
        "best checkpoint (restored)": validation.get("best_checkpoint"),
        **_speed_facts(training.get("speed") or {}),
    }
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    return f"<table id='training'>{rows}</table>"


def _rounded(value: Any) -> Any:
    return f"{value:.4f}" if isinstance(value, float) else value


def pairs_table(pairs: dict[str, Any], key: str, value: str, ident: str = "") -> str:
    """A two-column table of a small mapping (leakage counts, cleaning counts), instead of raw JSON."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in pairs.items())
    return (f"<table{f' id={ident!r}' if ident else ''}><tr><th>{html.escape(key)}</th><th>{html.escape(value)}</th>"
            f"</tr>{rows or '<tr><td>none</td><td>0</td></tr>'}</table>")


def _data_section(report: dict[str, Any]) -> str:
    labels = report["labels"]
    splits = report["splits"]
    head = "".join(f"<th>{name}</th>" for name in splits)
    rows = "".join(f"<tr><td>{html.escape(label)}</td>"
                   + "".join(f"<td>{splits[s]['per_class'].get(label, 0)}</td>" for s in splits) + "</tr>"
                   for label in labels)
    totals = "<tr><th>total</th>" + "".join(f"<th>{splits[s]['rows']}</th>" for s in splits) + "</tr>"
    cleaning = report["cleaning"]
    dropped = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in cleaning["dropped"].items())
    modified = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in cleaning["modified"].items())
    lengths = report.get("token_lengths", {})
    length_rows = "".join(
        f"<tr><td>{s}</td>" + "".join(f"<td>{v.get(k, '')}</td>" for k in ("mean", "p50", "p95", "max",
                                                                         "truncated", "truncated_pct")) + "</tr>"
        for s, v in lengths.items())
    return (f"<p>{report['source']['rows_read']} rows read from {html.escape(report['source']['path'])} "
            f"({report['source']['format']}); {report['rows_kept']} kept.</p>"
            f"<div class='grid'><table id='splits'><tr><th>class</th>{head}</tr>{rows}{totals}</table>"
            + pairs_table(report["leakage"]["overlapping_texts"], "texts in two splits", "count", "leakage") +
            f"<table id='dropped'><tr><th>dropped</th><th>rows</th></tr>{dropped or '<tr><td>none</td><td>0</td></tr>'}"
            f"</table><table><tr><th>changed (kept)</th><th>rows</th></tr>{modified}</table></div>"
            "<table id='lengths'><tr><th>split</th><th>mean tokens</th><th>p50</th><th>p95</th><th>max</th>"
            f"<th>truncated</th><th>truncated %</th></tr>{length_rows}</table>")


def augmentation_parts(report: dict[str, Any]) -> str:
    """How many augmented copies each operation added to the training split (and dropped, and why), and a few of
    them (every task's report, from data_report.json)."""
    done = report.get("augmentation")
    if not done:
        return ""
    samples = "".join(f"<tr><td>{html.escape(s['operation'])}</td><td>{html.escape(s['source'])}</td>"
                      f"<td>{html.escape(s['augmented'])}</td></tr>" for s in done["samples"])
    return ("<h3>Augmentation (training split only)</h3><div class='grid'>"
            + pairs_table(done["copies_made"], "operation", "copies added", "augmentation")
            + pairs_table(done["copies_unchanged_dropped"], "operation", "copies equal to their source (dropped)")
            + "".join(pairs_table(counts, "operation", f"dropped: {reason.replace('_', ' ')}")
                      for reason, counts in done.get("copies_rejected", {}).items())
            + f"</div><table id='samples'><tr><th>operation</th><th>source</th><th>augmented</th></tr>{samples}"
            "</table>")


def _speed_facts(speed: dict[str, Any]) -> dict[str, str]:
    """What the run got: throughput over training steps (validation excluded), padding and MFU."""
    if "tokens_per_s" not in speed:
        return {}
    facts = {"training speed": f"{speed['tokens_per_s']:,.1f} real tokens/s, {speed['loss_tokens_per_s']:,.1f} "
                               f"tokens with loss/s ({speed['real_tokens']:,} real tokens in "
                               f"{speed['measured_seconds']:,.1f} s)",
             "padding": f"{100 * speed['padding_share']:.1f}% of computed positions",
             "precision": f"{speed.get('precision')}" + (", gradient checkpointing"
                                                         if speed.get("gradient_checkpointing") else "")}
    if "mfu" in speed:
        facts["model FLOPs utilisation"] = f"{100 * speed['mfu']:.1f}% of {speed['peak_flops']:,.0f} GFLOP/s (measured " \
                                           f"matmul peak)"
    return facts


def _training_plots(log: list[dict[str, Any]]) -> str:
    """Loss (training and validation) and, when the task computes any, validation metrics; a panel with nothing to
    show is left out, and a curve of one point is drawn as a marked point (not an invisible line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log if isinstance(e.get("loss"), (int, float))]
    evals = [e for e in log if isinstance(e.get("eval_loss"), (int, float))]
    metrics = [key for key in ("eval_macro_f1", "eval_accuracy", "eval_entity_f1", "eval_f1", "eval_exact_match")
               if any(isinstance(e.get(key), (int, float)) for e in evals)]
    if not train and not evals:
        return "<p>No training or validation losses were logged.</p>"
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 6, 3.6), squeeze=False)
    left = axes[0][0]
    if train:
        left.plot(*zip(*train), "o-" if len(train) == 1 else "-", label="training loss")
    if evals:
        left.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss")
    left.set(xlabel="step", ylabel="loss", title="Loss")
    left.legend()
    if metrics:
        right = axes[0][1]
        for key in metrics:
            right.plot([e["step"] for e in evals], [e.get(key) for e in evals], "o-", label=key[5:])
        low = min(e[k] for e in evals for k in metrics if isinstance(e.get(k), (int, float)))
        right.set(xlabel="step", title="Validation metrics", ylim=(min(0.0, low), 1.0))  # a 1-point change stays small
        right.legend()
    fig.tight_layout()
    return _img(fig)


def _confusion_plot(figures: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, matrix = figures["confusion_matrix"]["labels"], np.asarray(figures["confusion_matrix"]["matrix"])
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    return fig


def _img(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
