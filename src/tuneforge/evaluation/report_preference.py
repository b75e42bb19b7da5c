"""The preference part of report.html: a reward model against chance and the longer answer; a policy against the
model it started from (win rate and reward by a held-out judge, KL, answer length, the implicit reward), the curves
the trainer logged (reward, KL, margins) and sample answers side by side. Reads artifacts only."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tuneforge.evaluation.report import _comparison_table, _difference_table, _img, _training_facts, \
    _training_plots, pairs_table

REWARD_SHOWN = ("pairwise_accuracy", "mean_margin")
POLICY_SHOWN = ("win_rate", "mean_reward", "kl", "answer_words", "implicit_accuracy", "implicit_margin")
# what TRL's preference trainers log per step (and tuneforge's PPO response_length), drawn when present
CURVES = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "reward", "kl",
          "objective/kl", "objective/entropy", "objective/scores", "objective/rlhf_reward", "entropy",
          "completions/mean_length", "response_length", "val/num_eos_tokens", "margin", "accuracy")


def reward_parts(run_dir: Path, metrics: dict[str, Any], data_report: dict[str, Any], params: dict[str, Any],
                 log: list[dict[str, Any]]) -> list[str]:
    test = metrics["test"]
    intro = (f"<p>Test split: {test['n_pairs']} pairs, each answer scored; a pair is right when the chosen answer "
             f"scores above the rejected one. Baselines: chance (0.5) and the longer answer wins. Intervals: "
             f"{int(test['confidence'] * 100)}% bootstrap ({test['bootstrap_samples']} resamples, paired).</p>")
    return [intro, "<h2>Reward model vs baselines (test split)</h2>", _comparison_table(test, REWARD_SHOWN),
            "<h2>Difference from each baseline (paired bootstrap)</h2>", _difference_table(test, REWARD_SHOWN),
            "<h2>Training</h2>", _training_plots(log), _curves(log), _training_facts(metrics, params),
            "<h2>Data</h2>", _data(data_report, metrics)]


def policy_parts(run_dir: Path, metrics: dict[str, Any], data_report: dict[str, Any], params: dict[str, Any],
                 log: list[dict[str, Any]]) -> list[str]:
    test = metrics["test"]
    judge = (f"judged by the reward-model run {html.escape(str(test['judge']))}, which did not train this policy"
             if test.get("judge") else "no judge (set preference.judge_run to a held-out reward-model run for win "
                                       "rate and reward)")
    intro = (f"<p>Baseline: the model this run started from (its SFT parent and reference). {test['n_prompts']} "
             f"held-out prompts answered by both (at most {test['max_new_tokens']} new tokens), {judge}. KL: mean of "
             f"log pi - log pi_ref over answers sampled from the policy; answer_words: a rise is how reward hacking "
             f"by length shows; implicit_accuracy: on {test['n_pairs']} test pairs, beta * log(pi/pi_ref) of the "
             f"chosen answer above the rejected one. Intervals: {int(test['confidence'] * 100)}% bootstrap "
             f"({test['bootstrap_samples']} resamples, paired).</p>")
    return [intro, "<h2>Tuned policy vs its SFT start (test split)</h2>", _comparison_table(test, POLICY_SHOWN),
            "<h2>Difference from the SFT model (paired bootstrap)</h2>", _difference_table(test, POLICY_SHOWN),
            "<h2>Sample answers</h2>", _samples(run_dir / "predictions.jsonl"),
            "<h2>Training</h2>", _training_plots(log), _curves(log), _training_facts(metrics, params),
            "<h2>Data</h2>", _data(data_report, metrics)]


def _curves(log: list[dict[str, Any]]) -> str:
    """The preference trainer's own figures per logged step (training lines only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [key for key in CURVES if sum(isinstance(e.get(key), (int, float)) for e in log) >= 1]
    if not shown:
        return ""
    columns = min(3, len(shown))
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, key in zip([a for row in axes for a in row], shown):
        points = [(e["step"], e[key]) for e in log if isinstance(e.get(key), (int, float)) and "step" in e]
        ax.plot(*zip(*points), "o-" if len(points) < 3 else "-")
        ax.set(xlabel="step", title=key)
    for ax in [a for row in axes for a in row][len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return _img(fig)


def _samples(path: Path, count: int = 6) -> str:
    if not path.exists():
        return "<p>No samples.</p>"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:count]]
    cells = "".join(
        f"<tr><td>{html.escape(r['prompt'][:300])}</td><td>{html.escape(r['finetuned'])}"
        f"{_reward(r, 'finetuned')}</td><td>{html.escape(r['sft'])}{_reward(r, 'sft')}</td></tr>" for r in rows)
    return f"<table class='samples'><tr><th>prompt</th><th>tuned</th><th>SFT</th></tr>{cells}</table>"


def _reward(row: dict[str, Any], name: str) -> str:
    value = row.get(f"reward_{name}")
    return f"<br><span class='ci'>reward {value:+.3f}</span>" if isinstance(value, (int, float)) else ""


def _data(report: dict[str, Any], metrics: dict[str, Any]) -> str:
    source, cleaning = report["source"], report["cleaning"]
    splits = ", ".join(f"{name} {part['rows']} ({part['prompts']} prompts)" for name, part in report["splits"].items())
    parents = metrics.get("training", {}).get("parents") or {}
    chain = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in parents.items())
    return (f"<p>{source['rows_read']} records read from {html.escape(source['path'])} ({source['format']}, "
            f"{source['dataset_format']}); kept {splits}; split on the prompt. Template: "
            f"{html.escape(str(report.get('template')))}.</p>"
            + (f"<p>Built from:</p><ul>{chain}</ul>" if chain else "")
            + "<div class='grid'>" + pairs_table(report["leakage"]["overlapping_prompts"], "prompts in two splits",
                                                 "count", "leakage")
            + pairs_table(cleaning["dropped"] or {"none": 0}, "dropped", "records", "dropped")
            + pairs_table(report.get("truncated_to_max_length", {}), "cut to max_length", "rows", "truncated")
            + pairs_table(report.get("answers", {}), "answers", "", "answers") + "</div>")
