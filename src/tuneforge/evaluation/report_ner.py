"""The token-classification part of report.html: entity-level P/R/F1 of the fine-tuned model against the
memorization baseline with intervals, per entity type, and entity counts per split. Reads artifacts only."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tuneforge.evaluation.report import _comparison_table, _difference_table, _training_facts, _training_plots, \
    pairs_table

NER_SHOWN = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")


def ner_parts(run_dir: Path, metrics: dict[str, Any], data_report: dict[str, Any], params: dict[str, Any],
              log: list[dict[str, Any]]) -> list[str]:
    test = metrics["test"]
    return [
        f"<p>Test split: {test['finetuned']['n']} sentences, read once after training. Entities count when type "
        f"and both ends match (IOB2 chunks, as seqeval). Intervals: {int(test['confidence'] * 100)}% bootstrap over "
        f"sentences ({test['bootstrap_samples']} resamples, the same for every model). Run time "
        f"{metrics.get('seconds', '?')} s.</p>",
        "<h2>Fine-tuned model vs baselines (test split)</h2>", _comparison_table(test, NER_SHOWN),
        "<h2>Difference from each baseline (paired bootstrap)</h2>", _difference_table(test, NER_SHOWN),
        "<h2>Per entity type (fine-tuned)</h2>", _per_type(test["finetuned"]["per_type"]),
        "<h2>Training</h2>", _training_plots(log), _training_facts(metrics, params),
        "<h2>Data</h2>", _data(data_report),
    ]


def _per_type(per_type: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(kind)}</td><td>{v['precision']:.4f}</td><td>{v['recall']:.4f}</td>"
                   f"<td>{v['f1']:.4f}</td><td>{v['support']}</td></tr>" for kind, v in per_type.items())
    return ("<table id='per_type'><tr><th>type</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{rows}</table>")


def _data(report: dict[str, Any]) -> str:
    splits = report["splits"]
    types = sorted({kind for part in splits.values() for kind in part["per_class"]})
    head = "".join(f"<th>{name}</th>" for name in splits)
    rows = "".join(f"<tr><td>{html.escape(kind)}</td>" + "".join(
        f"<td>{splits[s]['per_class'].get(kind, 0)}</td>" for s in splits) + "</tr>" for kind in types)
    totals = "<tr><th>sentences</th>" + "".join(f"<th>{splits[s]['rows']}</th>" for s in splits) + "</tr>"
    dropped = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report["cleaning"]["dropped"].items())
    return (f"<p>{report['source']['rows_read']} sentences read from {html.escape(report['source']['path'])}; "
            f"{report['rows_kept']} kept.</p>"
            + pairs_table(report["cleaning"]["modified"], "changed (kept)", "sentences")
            + pairs_table(report["leakage"]["overlapping_texts"], "sentences in two splits", "count", "leakage") +
            f"<div class='grid'><table id='splits'><tr><th>entities</th>{head}</tr>{rows}{totals}</table>"
            f"<table id='dropped'><tr><th>dropped</th><th>sentences</th></tr>"
            f"{dropped or '<tr><td>none</td><td>0</td></tr>'}</table></div>")
