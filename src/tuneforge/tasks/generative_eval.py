"""Score a generative run on the held-out test split (read once, here): the fine-tuned model against the base
model zero-shot and few-shot (k training examples in the prompt), or copying the input for seq2seq.

Generation metrics (exact match, BLEU, chrF, ROUGE-1/2/L, METEOR), the share of answers that end with the
stop token instead of running to max_new_tokens, and perplexity of the reference answers (raw text: of the
held-out documents), each with a bootstrap interval; differences to each baseline with paired intervals.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.config.schema import RunConfig
from tuneforge.data.chat import ChatFormatter, Encoded
from tuneforge.data.formats import Example
from tuneforge.data.generative import GenerativeData
from tuneforge.evaluation.generation import Generated, generate, sequence_nll
from tuneforge.evaluation.metrics import bootstrap_indices
from tuneforge.evaluation.text_metrics import generation_metrics, paired_generation_difference, perplexity
from tuneforge.io import atomic_write_text


@dataclass
class TestSet:
    """What the test split looks like to each model: prompts as token ids, references, encoded answers."""

    examples: list[Example]  # the (sampled) prompts that get generated answers
    prompts: list[list[int]]
    encoded: list[Encoded]  # every test example, for perplexity
    encoder_inputs: list[list[int]] | None = None  # seq2seq: the encoder side of ``encoded``


def evaluate_generative(model: Any, base_loader: Any, tokenizer: Any, formatter: ChatFormatter | None,
                        data: GenerativeData, test: TestSet, config: RunConfig, run_dir: Path) -> dict[str, Any]:
    ev, seed = config.evaluation, config.train.seed
    seq2seq = config.model.task == "seq2seq"
    ppl_indices = bootstrap_indices(len(test.encoded), ev.bootstrap_samples, seed)
    nll = lambda m, name: perplexity(*sequence_nll(m, test.encoded, encoder_decoder=seq2seq,  # noqa: E731
                                                   prompts=test.encoder_inputs, description=f"perplexity: {name}"),
                                     ppl_indices, ev.confidence)
    result: dict[str, Any] = {"confidence": ev.confidence, "bootstrap_samples": ev.bootstrap_samples}
    finetuned = nll(model, "fine-tuned")
    needs_base = data.raw_text or any(name in ("zero_shot", "few_shot") for name in ev.baselines)
    base = base_loader() if needs_base else None
    if data.raw_text:  # continued pretraining: perplexity on held-out documents before and after
        before = nll(base, "base")
        result.update(finetuned=finetuned, baselines={"base_model": before},
                      finetuned_minus_baseline={"base_model": {
                          "perplexity": round(finetuned["perplexity"] - before["perplexity"], 4)}})
        return {"test": result}

    references = [e.reference for e in test.examples]
    indices = bootstrap_indices(len(references), ev.bootstrap_samples, seed)
    stop = formatter.stop_token_ids if formatter else [tokenizer.sep_token_id or tokenizer.eos_token_id]
    outputs = {"finetuned": generate(model, tokenizer, test.prompts, ev.generation, stop, seq2seq, "generating: fine-tuned")}
    baseline_ppl = {}
    for name in ev.baselines:
        if name == "copy_input":
            outputs[name] = [Generated(_source_text(e), True, 0) for e in test.examples]
        elif name == "zero_shot":
            outputs[name] = generate(base, tokenizer, test.prompts, ev.generation, stop, seq2seq, "generating: base")
            baseline_ppl[name] = nll(base, "base")
        elif name == "few_shot" and formatter is not None:
            shots = _shots(data.splits["train"], ev.few_shot_k, seed)
            prompts = [formatter.prompt_ids(_with_shots(shots, e.prompt_messages)) for e in test.examples]
            outputs[name] = generate(base, tokenizer, prompts, ev.generation, stop, seq2seq,
                                     f"generating: base {ev.few_shot_k}-shot")
    scores = {name: _score(out, references, indices, ev.confidence) for name, out in outputs.items()}
    scores["finetuned"].update(finetuned)
    for name, figures in baseline_ppl.items():
        scores[name].update(figures)
    result.update(
        n_prompts=len(references), n_perplexity=len(test.encoded),
        max_new_tokens=ev.generation.max_new_tokens,
        finetuned=scores.pop("finetuned"), baselines=scores,
        finetuned_minus_baseline={name: paired_generation_difference(
            [g.text for g in outputs["finetuned"]], [g.text for g in out], references, indices, ev.confidence)
            for name, out in outputs.items() if name != "finetuned"})
    _write_predictions(run_dir / "predictions.jsonl", test.examples, outputs)
    return {"test": result}


def _score(outputs: list[Generated], references: list[str], indices: np.ndarray, confidence: float) -> dict[str, Any]:
    figures = generation_metrics([g.text for g in outputs], references, indices, confidence)
    ended = np.array([g.ended for g in outputs], dtype=float)
    lo, hi = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    means = ended[indices].mean(axis=1)
    figures["ended_rate"] = round(float(ended.mean()), 4)
    figures["ended_rate_ci"] = [round(float(np.percentile(means, lo)), 4), round(float(np.percentile(means, hi)), 4)]
    figures["mean_new_tokens"] = round(float(np.mean([g.new_tokens for g in outputs])), 1)
    return figures


def sample_for_generation(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or len(examples) <= limit:
        return examples
    return random.Random(seed).sample(examples, limit)


def _shots(train: list[Example], k: int, seed: int) -> list[Example]:
    """k single-turn training examples, drawn among the shorter half so that the prompt stays short."""
    single = [e for e in train if sum(m["role"] == "assistant" for m in e.messages) == 1] or train
    short = sorted(single, key=lambda e: len(e.messages[-1]["content"]) + len(e.messages[-2]["content"]))
    pool = short[: max(k, len(short) // 2)]
    return random.Random(seed).sample(pool, min(k, len(pool)))


def _with_shots(shots: list[Example], prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    system = [m for m in prompt if m["role"] == "system"]
    turns = [m for shot in shots for m in shot.messages if m["role"] != "system"]
    return system + turns + [m for m in prompt if m["role"] != "system"]


def _source_text(example: Example) -> str:
    return "\n\n".join(m["content"] for m in example.prompt_messages if m["role"] != "system")


def _write_predictions(path: Path, examples: list[Example], outputs: dict[str, list[Generated]]) -> None:
    lines = []
    for i, example in enumerate(examples):
        row = {"source": example.where, "prompt": example.prompt_messages[-1]["content"] if example.messages else "",
               "reference": example.reference}
        for name, out in outputs.items():
            row[name] = out[i].text
            row[f"{name}_ended"] = out[i].ended
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")
