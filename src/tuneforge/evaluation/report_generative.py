"""The generative part of report.html: fine-tuned vs base model (zero-shot, few-shot) with intervals, whether
answers end, sample prompts with each model's output, the template lint and the data. Reads artifacts only."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tuneforge.evaluation.report import _comparison_table, _difference_table, _training_facts, _training_plots, \
    pairs_table

GENERATIVE_SHOWN = ("rougeL", "rouge1", "rouge2", "bleu", "chrf", "meteor", "exact_match", "ended_rate",
                    "perplexity", "mean_new_tokens")


def generative_parts(run_dir: Path, metrics: dict[str, Any], data_report: dict[str, Any], params: dict[str, Any],
                     log: list[dict[str, Any]]) -> list[str]:
    test = metrics["test"]
    n = test.get("n_prompts")
    intro = (f"<p>Test split: {n} prompts answered by each model (at most {test.get('max_new_tokens')} new "
             f"tokens), perplexity over {test.get('n_perplexity', '')} held-out examples; read once after training. "
             if n else "<p>Perplexity on held-out documents, before and after training. ")
    intro += (f"Intervals: {int(test['confidence'] * 100)}% bootstrap ({test['bootstrap_samples']} resamples, the "
              f"same for every model). Run time {metrics.get('seconds', '?')} s.</p>")
    meteor = test["finetuned"].get("meteor_unavailable")
    return [
        intro, "<h2>Fine-tuned model vs baselines (test split)</h2>", _comparison_table(test, GENERATIVE_SHOWN),
        f"<p class='ci'>METEOR: {html.escape(meteor)}</p>" if meteor else "",
        "<p class='ci'>ended_rate: share of answers that stopped with the end-of-turn token instead of running "
        "to max_new_tokens. BLEU and chrF are corpus-level (0-100); ROUGE, METEOR, exact match are means (0-1).</p>",
        "<h2>Difference from each baseline (paired bootstrap)</h2>", _difference_table(test, GENERATIVE_SHOWN),
        "<h2>Sample prompts</h2>", _samples(run_dir / "predictions.jsonl", _samples_wanted(run_dir)),
        "<h2>Training</h2>", _training_plots(log), _training_facts(metrics, params),
        "<h2>Data and template</h2>", _data(data_report),
    ]


def _samples_wanted(run_dir: Path) -> int:
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return int(config.get("evaluation", {}).get("samples_in_report", 12))


def _samples(path: Path, count: int) -> str:
    if not path.exists() or count == 0:
        return "<p>No generated samples (raw text: perplexity only).</p>"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:count]
    models = [key for key in rows[0] if key not in ("source", "prompt", "reference") and not key.endswith("_ended")]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)

    def cell(row: dict[str, Any], model: str) -> str:
        stop = "" if row.get(f"{model}_ended", True) else " <span class='ci'>(did not stop)</span>"
        return f"<td style='text-align:left'>{html.escape(row[model])}{stop}</td>"

    body = "".join(f"<tr><td>{html.escape(r['prompt'])}</td><td style='text-align:left'>"
                   f"{html.escape(r['reference'])}</td>{''.join(cell(r, m) for m in models)}</tr>" for r in rows)
    return f"<table id='samples'><tr><th>prompt</th><th>reference</th>{head}</tr>{body}</table>"


def _data(report: dict[str, Any]) -> str:
    source, cleaning = report["source"], report["cleaning"]
    splits = ", ".join(f"{name} {part['rows']}" for name, part in report["splits"].items())
    dropped = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in cleaning["dropped"].items())
    lint = report.get("template_lint", {})
    lint_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                        for k, v in lint.items() if k != "warnings")
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in lint.get("warnings", []))
    tokens = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in report.get("tokens", {}).items())
    return (f"<p>{source['rows_read']} records read from {html.escape(source['path'])} ({source['format']}, "
            f"{source['dataset_format']}); kept {splits}.</p>"
            f"<div class='grid'>" + pairs_table(report["leakage"]["overlapping_prompts"], "prompts in two splits",
                                                "count", "leakage") + f"<table id='dropped'><tr><th>dropped</th><th>records</th></tr>"
            f"{dropped or '<tr><td>none</td><td>0</td></tr>'}</table>"
            f"<table id='lint'><tr><th>template lint</th><th></th></tr>{lint_rows}</table>"
            f"<table id='tokens'><tr><th>tokens</th><th></th></tr>{tokens}</table></div>"
            + (f"<ul>{warnings}</ul>" if warnings else ""))
