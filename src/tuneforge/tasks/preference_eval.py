"""The test split of the preference tasks, read once after training.

reward-model: each test pair scored; pairwise accuracy (chosen above rejected) and mean margin, against chance (0.5)
and the longer answer winning, with paired bootstrap intervals.

A policy, against the model it started from (the SFT baseline, also its reference): on held-out prompts both
answer (greedy unless evaluation.generation samples); a reward-model run that did not train the policy
(preference.judge_run) scores both answers: win rate and mean reward with their paired difference; KL to the
reference from answers sampled from the policy (the mean of log pi - log pi_ref over their tokens); answer length
(reward hacking shows as length); and on the test pairs, the accuracy of the implicit reward
beta * (log pi - log pi_ref) (DPO's), chosen above rejected.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.config.schema import GenerationConfig, RunConfig
from tuneforge.data.chat import IGNORE, ChatFormatter, Encoded
from tuneforge.evaluation.metrics import bootstrap_indices
from tuneforge.evaluation.preference_metrics import (against_constant, mean_with_interval, paired_difference,
                                                     wins)
from tuneforge.io import atomic_write_text
from tuneforge.tasks.preference_data import answer, conversation, scored_ids
from tuneforge.tasks.spec import Prepared


def evaluate_reward_model(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig, run_dir: Path,
                          resolved: Any) -> dict[str, Any]:
    rows, items = prepared.extra["rows"]["test"], prepared.data.splits["test"]
    chosen = score_ids(model, tokenizer, [r["chosen_ids"] for r in rows])
    rejected = score_ids(model, tokenizer, [r["rejected_ids"] for r in rows])
    longer = wins([len((i.chosen or "").split()) for i in items], [len((i.rejected or "").split()) for i in items])
    ev = config.evaluation
    indices = bootstrap_indices(len(rows), ev.bootstrap_samples, config.train.seed)
    correct = wins(chosen, rejected)
    accuracy = lambda values: mean_with_interval("pairwise_accuracy", values, indices, ev.confidence)  # noqa: E731
    test = {
        "n_pairs": len(rows), "confidence": ev.confidence, "bootstrap_samples": ev.bootstrap_samples,
        "finetuned": {**accuracy(correct), **mean_with_interval("mean_margin", chosen - rejected, indices,
                                                                ev.confidence)},
        "baselines": {"chance": {"pairwise_accuracy": 0.5}, "length": accuracy(longer)},
        "finetuned_minus_baseline": {
            "chance": against_constant("pairwise_accuracy", correct, 0.5, indices, ev.confidence),
            "length": paired_difference("pairwise_accuracy", correct, longer, indices, ev.confidence)},
    }
    _write_jsonl(run_dir / "predictions.jsonl", [
        {"prompt": i.prompt[-1]["content"], "chosen": i.chosen, "rejected": i.rejected, "reward_chosen": round(c, 4),
         "reward_rejected": round(r, 4), "text_chosen": row["text_chosen"], "text_rejected": row["text_rejected"]}
        for i, row, c, r in zip(items, rows, chosen.tolist(), rejected.tolist())])
    return {"test": test}


def score_ids(model: Any, tokenizer: Any, sequences: list[list[int]], batch_size: int = 8) -> np.ndarray:
    """The scalar output of a sequence scorer for each token sequence (right-padded batches)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros(len(sequences))
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            part = sequences[start:start + batch_size]
            width = max(len(s) for s in part)
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in part], device=device)
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in part], device=device)
            out[start:start + len(part)] = model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().numpy()
    return out


def evaluate_policy(model: Any, tokenizer: Any, prepared: Prepared, config: RunConfig, run_dir: Path,
                    resolved: Any) -> dict[str, Any]:
    from tuneforge.models.loading import load_generative
    from tuneforge.models.precision import compute_in, precision_of
    from tuneforge.tasks.registry import task_spec

    p, ev = config.preference, config.evaluation
    formatter: ChatFormatter = prepared.extra["formatter"]
    items = prepared.data.splits["test"]
    prompts = _unique_prompts(items, p.max_prompts, config.train.seed)
    reference = compute_in(load_generative(resolved, task_spec(config.model.task), config.model.revision,
                                           config.model.trust_remote_code), precision_of(model))
    ids = [formatter.prompt_ids(prompt) for prompt in prompts]
    greedy = GenerationConfig(**{**ev.generation.model_dump(), "max_new_tokens": p.max_new_tokens})
    answers = {"finetuned": _answers(model, tokenizer, ids, greedy, formatter),
               "sft": _answers(reference, tokenizer, ids, greedy, formatter)}
    sampled = _answers(model, tokenizer, ids, GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                                                max_new_tokens=p.max_new_tokens,
                                                                seed=ev.generation.seed), formatter)
    kl = _log_ratio(model, reference, formatter, prompts, sampled, config.data.max_length)
    indices = bootstrap_indices(len(prompts), ev.bootstrap_samples, config.train.seed)
    words = {name: [len(a.split()) for a in texts] for name, texts in answers.items()}
    fine = {**mean_with_interval("kl", kl, indices, ev.confidence),
            **mean_with_interval("answer_words", words["finetuned"], indices, ev.confidence)}
    sft = {"kl": 0.0, **mean_with_interval("answer_words", words["sft"], indices, ev.confidence)}
    diff = paired_difference("answer_words", words["finetuned"], words["sft"], indices, ev.confidence)
    rewards: dict[str, Any] = {}
    if p.judge_run:
        rewards = _judged(p.judge_run, prompts, answers)
        won = wins(rewards["finetuned"], rewards["sft"])
        fine.update(**mean_with_interval("win_rate", won, indices, ev.confidence),
                    **mean_with_interval("mean_reward", rewards["finetuned"], indices, ev.confidence))
        sft.update(win_rate=0.5, **mean_with_interval("mean_reward", rewards["sft"], indices, ev.confidence))
        diff.update(**against_constant("win_rate", won, 0.5, indices, ev.confidence),
                    **paired_difference("mean_reward", rewards["finetuned"], rewards["sft"], indices, ev.confidence))
    pairs = [i for i in items if i.rejected is not None]
    if pairs:
        implicit = _implicit_rewards(model, reference, formatter, pairs, p.beta, config.data.max_length)
        pair_indices = bootstrap_indices(len(pairs), ev.bootstrap_samples, config.train.seed)
        correct = wins(*implicit)
        fine.update(**mean_with_interval("implicit_accuracy", correct, pair_indices, ev.confidence),
                    implicit_margin=round(float(np.mean(implicit[0] - implicit[1])), 4))
        sft["implicit_accuracy"] = 0.5  # the reference's implicit reward is 0 for every answer: all ties
        diff.update(**against_constant("implicit_accuracy", correct, 0.5, pair_indices, ev.confidence))
    _write_predictions(run_dir / "predictions.jsonl", prompts, answers, rewards, kl)
    test = {"n_prompts": len(prompts), "n_pairs": len(pairs), "max_new_tokens": p.max_new_tokens,
            "judge": p.judge_run, "confidence": ev.confidence, "bootstrap_samples": ev.bootstrap_samples,
            "finetuned": fine, "baselines": {"sft": sft}, "finetuned_minus_baseline": {"sft": diff}}
    return {"test": test}


def _unique_prompts(items: list[Any], limit: int, seed: int) -> list[list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for item in items:
        found.setdefault(item.key, item.prompt)
    prompts = list(found.values())
    return random.Random(seed).sample(prompts, limit) if len(prompts) > limit else prompts


def _answers(model: Any, tokenizer: Any, ids: list[list[int]], decoding: GenerationConfig,
             formatter: ChatFormatter) -> list[str]:
    from tuneforge.evaluation.generation import generate

    return [g.text for g in generate(model, tokenizer, ids, decoding, formatter.stop_token_ids,
                                     description="answering held-out prompts")]


def _answer_nll(model: Any, formatter: ChatFormatter, prompts: list[list[dict[str, str]]],
                texts: list[str], max_length: int) -> np.ndarray:
    """Summed negative log-likelihood of each answer (as the template writes it) after its prompt, the whole cut at
    ``max_length`` as in training."""
    from tuneforge.evaluation.generation import sequence_nll

    examples = []
    for prompt, text in zip(prompts, texts):
        head = formatter.prompt_ids(prompt)
        tail = formatter.tokenizer(answer(formatter, prompt, text), add_special_tokens=False)["input_ids"]
        ids, labels = (head + tail)[:max_length], ([IGNORE] * len(head) + tail)[:max_length]
        examples.append(Encoded(ids, labels, len(head) + len(tail) > max_length))
    return sequence_nll(model, examples, description="answer log-likelihoods")[0]


def _log_ratio(model: Any, reference: Any, formatter: ChatFormatter, prompts: list[Any], texts: list[str],
               max_length: int) -> np.ndarray:
    """Per prompt: log pi(y|x) - log pi_ref(y|x) of the answer y (for the policy's samples, its mean estimates the
    KL)."""
    return (_answer_nll(reference, formatter, prompts, texts, max_length)
            - _answer_nll(model, formatter, prompts, texts, max_length))


def _implicit_rewards(model: Any, reference: Any, formatter: ChatFormatter, pairs: list[Any], beta: float,
                      max_length: int) -> tuple[np.ndarray, np.ndarray]:
    prompts = [p.prompt for p in pairs]
    chosen = _log_ratio(model, reference, formatter, prompts, [p.chosen for p in pairs], max_length)
    rejected = _log_ratio(model, reference, formatter, prompts, [p.rejected for p in pairs], max_length)
    return beta * chosen, beta * rejected


def _judged(judge_run: str, prompts: list[Any], answers: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """The judge's reward for each model's answer, the conversation rendered with the judge's own template."""
    from tuneforge.tasks.preference_train import load_reward_run
    from tuneforge.tasks.run_folder import read_model_meta

    judge, tokenizer = load_reward_run(judge_run)
    meta = read_model_meta(judge_run)[1]
    template = meta.get("template") or "auto"
    formatter = ChatFormatter(tokenizer, "auto" if template == "tokenizer" else template)
    scorer = RewardScorer(judge, tokenizer, int(meta.get("max_length") or 512), bool(meta.get("bos")))
    return {name: np.array([r["reward"] for r in scorer.predict([conversation(formatter, prompt, text)
                                                                 for prompt, text in zip(prompts, texts)])])
            for name, texts in answers.items()}


def _write_predictions(path: Path, prompts: list[Any], answers: dict[str, list[str]], rewards: dict[str, Any],
                       kl: np.ndarray) -> None:
    rows = []
    for n, prompt in enumerate(prompts):
        row: dict[str, Any] = {"prompt": prompt[-1]["content"], "finetuned": answers["finetuned"][n],
                               "sft": answers["sft"][n], "log_ratio_sampled": round(float(kl[n]), 4)}
        for name, values in rewards.items():
            row[f"reward_{name}"] = round(float(values[n]), 4)
        rows.append(row)
    _write_jsonl(path, rows)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


class RewardScorer:
    """A reward-model run as a scorer: ``predict(texts)`` -> a reward per text (a whole rendered conversation)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, bos: bool = False):
        self.model, self.tokenizer, self.max_length, self.bos = model, tokenizer, max_length, bos

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        ids = [scored_ids(self.tokenizer, text, self.bos, self.max_length)[0] for text in texts]
        return [{"reward": float(r)} for r in score_ids(self.model, self.tokenizer, ids)]


def load_reward_scorer(model_dir: Path, meta: dict[str, Any], precision: str | None = None) -> RewardScorer:
    from tuneforge.tasks.preference_train import load_reward_run

    model, tokenizer = load_reward_run(str(model_dir), precision)
    return RewardScorer(model, tokenizer, int(meta.get("max_length") or 512), bool(meta.get("bos")))
