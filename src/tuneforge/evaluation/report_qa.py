"""The question-answering part of report.html: SQuAD exact match and F1 of the fine-tuned model against the
sliding-window baseline with intervals, sample test questions with each answer, and the data (questions and
contexts per split, repaired offsets, dropped rows, windows). Reads artifacts only."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tuneforge.evaluation.report import _comparison_table, _difference_table, _training_facts, _training_plots, \
    pairs_table

QA_SHOWN = ("exact_match", "f1")


def qa_parts(run_dir: Path, metrics: dict[str, Any], data_report: dict[str, Any], params: dict[str, Any],
             log: list[dict[str, Any]]) -> list[str]:
    from tuneforge.evaluation.report_generative import _samples_wanted

    test = metrics["test"]
    return [
        f"<p>Test split: {test['finetuned']['n']} questions on {test.get('contexts', '?')} contexts (no context is "
        f"in two splits), read once after training. Exact match and token F1 as the SQuAD script computes them "
        f"(lowercase, punctuation and a/an/the removed; the best gold answer counts). Intervals: "
        f"{int(test['confidence'] * 100)}% bootstrap over questions ({test['bootstrap_samples']} resamples, the same "
        f"for every model). Run time {metrics.get('seconds', '?')} s.</p>",
        "<h2>Fine-tuned model vs baselines (test split)</h2>", _comparison_table(test, QA_SHOWN),
        "<p class='ci'>sliding_window: the context sentence sharing the most words with the question.</p>",
        "<h2>Difference from each baseline (paired bootstrap)</h2>", _difference_table(test, QA_SHOWN),
        "<h2>Sample test questions</h2>", _samples(run_dir / "predictions.jsonl", _samples_wanted(run_dir)),
        "<h2>Training</h2>", _training_plots(log), _training_facts(metrics, params),
        "<h2>Data</h2>", _data(data_report),
    ]


def _samples(path: Path, count: int) -> str:
    if not path.exists() or count == 0:
        return "<p>No predictions written.</p>"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:count] if line.strip()]
    cells = "".join(
        f"<tr><td>{html.escape(r['question'])}</td><td>{html.escape(r['context_snippet'])}</td>"
        f"<td>{html.escape(' | '.join(r['gold']))}</td><td>{html.escape(r['predicted'])}</td>"
        f"<td>{r['f1']:.2f}</td><td>{html.escape(' | '.join(r['baselines'].values()))}</td></tr>" for r in rows)
    return ("<table id='samples'><tr><th>question</th><th>context (around the gold answer)</th><th>gold</th>"
            f"<th>fine-tuned</th><th>F1</th><th>baseline</th></tr>{cells}</table>")


def _data(report: dict[str, Any]) -> str:
    splits, windows = report["splits"], report.get("windows", {})
    head = "".join(f"<th>{name}</th>" for name in splits)
    rows = [("questions", {s: splits[s]["rows"] for s in splits}),
            ("contexts", {s: splits[s]["contexts"] for s in splits})]
    for key in ("windows", "windows_without_answer", "questions_truncated"):
        rows.append((key.replace("_", " "), {s: windows.get(s, {}).get(key, "") for s in splits}))
    body = "".join(f"<tr><td>{name}</td>" + "".join(f"<td>{values[s]}</td>" for s in splits) + "</tr>"
                   for name, values in rows)
    dropped = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
                      for k, v in report["cleaning"]["dropped"].items())
    return (f"<p>{report['source']['rows_read']} questions read from {html.escape(report['source']['path'])}; "
            f"{report['rows_kept']} kept.</p>"
            f"<div class='grid'><table id='splits'><tr><th></th>{head}</tr>{body}</table>"
            + pairs_table(report["cleaning"]["modified"], "changed (kept)", "questions")
            + pairs_table(report["leakage"]["overlapping_contexts"], "contexts in two splits", "count", "leakage") +
            f"<table id='dropped'><tr><th>dropped</th><th>questions</th></tr>"
            f"{dropped or '<tr><td>none</td><td>0</td></tr>'}</table></div>")
