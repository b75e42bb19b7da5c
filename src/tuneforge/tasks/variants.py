"""Scoring variants of one run's model (quantized, pruned, exported) on its test split, for a table of trade-offs:
each variant's outputs (``*_outputs``: JSON-able, computed where the variant is loaded) and the figures comparing it
with the unoptimized model (``*_figures``: the task metric with its interval and the paired difference)."""

from __future__ import annotations

from typing import Any

from tuneforge.tasks.spec import Prepared

SPEED_EXAMPLES = 192  # classification: examples per timed pass (~2 s on 2 cores: shorter passes were noisy)
SPEED_PROMPTS, SPEED_TOKENS = 4, 32  # generation: prompts of a timed batch, tokens written for each
SAME_ANSWER_PROMPTS = 16  # greedy answers compared with the unoptimized model's


def classification_outputs(model: Any, tokenizer: Any, prepared: Prepared, config: Any) -> dict[str, Any]:
    from tuneforge.evaluation.speed import median_rate
    from tuneforge.tasks.sequence_classification import predict_logits

    data = prepared.data
    texts = data.texts("test")
    logits = predict_logits(model, tokenizer, texts, config.data.max_length, batch_size=16)
    sample = texts[:SPEED_EXAMPLES]
    speed = median_rate(lambda: predict_logits(model, tokenizer, sample, config.data.max_length, batch_size=16),
                        len(sample))
    return {"labels": data.labels, "y_true": [int(y) for y in data.label_ids("test")],
            "y_pred": [int(y) for y in logits.argmax(axis=1)], "speed": {**speed, "unit": "examples"}}


def classification_figures(reference: dict[str, Any], variant: dict[str, Any], config: Any) -> dict[str, Any]:
    from tuneforge.evaluation.metrics import bootstrap_indices, classification_metrics, paired_difference

    y_true = variant["y_true"]
    indices = bootstrap_indices(len(y_true), config.evaluation.bootstrap_samples, config.train.seed)
    confidence = config.evaluation.confidence
    figures = classification_metrics(y_true, variant["y_pred"], variant["labels"], indices, confidence)
    difference = paired_difference(y_true, variant["y_pred"], reference["y_pred"], len(variant["labels"]), indices,
                                   confidence)
    agree = sum(a == b for a, b in zip(variant["y_pred"], reference["y_pred"])) / max(1, len(y_true))
    return {"metric": "macro_f1", "value": figures["macro_f1"], "ci": figures["macro_f1_ci"],
            "minus_reference": difference["macro_f1"], "minus_reference_ci": difference["macro_f1_ci"],
            "accuracy": figures["accuracy"], "same_prediction_share": round(agree, 4), "n": len(y_true)}


def generative_outputs(model: Any, tokenizer: Any, prepared: Prepared, config: Any) -> dict[str, Any]:
    from tuneforge.evaluation.generation import generate, sequence_nll
    from tuneforge.evaluation.speed import median_rate
    from tuneforge.tasks.generative_eval import sample_for_generation
    from tuneforge.tasks.generative import test_prompts

    seq2seq = config.model.task == "seq2seq"
    encoded = prepared.extra["encoded"]
    prompts_of = test_prompts(prepared, tokenizer, config)
    nll, tokens = sequence_nll(model, encoded["test"], encoder_decoder=seq2seq, prompts=prompts_of["encoder_inputs"])
    sampled = sample_for_generation(prepared.data.splits["test"], SAME_ANSWER_PROMPTS, config.train.seed)
    prompts = prompts_of["prompts"](sampled)
    greedy = config.evaluation.generation.model_copy(update={"max_new_tokens": SPEED_TOKENS, "do_sample": False})
    stop = prompts_of["stop"]
    answers = generate(model, tokenizer, prompts, greedy, stop, seq2seq, "greedy answers")
    speed = median_rate(_fixed_generation(model, tokenizer, prompts[:SPEED_PROMPTS], seq2seq),
                        SPEED_PROMPTS * SPEED_TOKENS)
    return {"nll": nll.tolist(), "tokens": tokens.tolist(), "answers": [g.text for g in answers],
            "speed": {**speed, "unit": "tokens"}}


def _fixed_generation(model: Any, tokenizer: Any, prompts: list[list[int]], seq2seq: bool) -> Any:
    """A fixed workload: every prompt writes exactly SPEED_TOKENS tokens (greedy, end tokens ignored), so that a
    variant whose answers end sooner is not counted faster or slower for it."""
    import torch

    from tuneforge.evaluation.generation import pad_prompts

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = pad_prompts(prompts, pad, seq2seq)
    device = next(model.parameters()).device
    inputs = {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device)}

    def work() -> None:
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=SPEED_TOKENS, min_new_tokens=SPEED_TOKENS, do_sample=False,
                           pad_token_id=pad)

    return work


def generative_figures(reference: dict[str, Any], variant: dict[str, Any], config: Any) -> dict[str, Any]:
    import numpy as np

    from tuneforge.evaluation.metrics import bootstrap_indices, percentile_interval
    from tuneforge.evaluation.text_metrics import perplexity

    nll, tokens = np.asarray(variant["nll"]), np.asarray(variant["tokens"], dtype=float)
    ref_nll = np.asarray(reference["nll"])
    indices = bootstrap_indices(len(nll), config.evaluation.bootstrap_samples, config.train.seed)
    confidence = config.evaluation.confidence
    figures = perplexity(nll, tokens, indices, confidence)
    boot_tokens = tokens[indices].sum(axis=1)
    differences = np.exp(nll[indices].sum(axis=1) / boot_tokens) - np.exp(ref_nll[indices].sum(axis=1) / boot_tokens)
    point = figures["perplexity"] - float(np.exp(ref_nll.sum() / tokens.sum())) + 0.0  # (no -0.0)
    same = sum(a == b for a, b in zip(variant["answers"], reference["answers"])) / max(1, len(reference["answers"]))
    return {"metric": "perplexity", "value": figures["perplexity"], "ci": figures["perplexity_ci"],
            "minus_reference": round(point, 4) + 0.0, "minus_reference_ci": percentile_interval(differences, confidence),
            "same_greedy_answer_share": round(same, 4), "n": len(nll)}


def gguf_outputs(llm: Any, tokenizer: Any, prepared: Prepared, config: Any) -> dict[str, Any]:
    """A causal-lm run exported to GGUF, run by llama.cpp (``llm``: a ``llama_cpp.Llama`` with every position's
    logits): the same outputs as ``generative_outputs`` -- each test answer's negative log-likelihood, greedy answers
    to the same sampled prompts, and the same fixed generation workload timed."""
    import numpy as np

    from tuneforge.data.chat import IGNORE
    from tuneforge.evaluation.speed import median_rate
    from tuneforge.tasks.generative import test_prompts
    from tuneforge.tasks.generative_eval import sample_for_generation

    nll, tokens = [], []
    for example in prepared.extra["encoded"]["test"]:
        llm.reset()
        llm.eval(list(example.input_ids))
        logits = np.asarray(llm.scores[:len(example.input_ids)], dtype=np.float64)[:-1]
        peak = logits.max(axis=1, keepdims=True)
        log_probs = logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
        targets = np.asarray(example.labels[1:])
        where = np.flatnonzero(targets != IGNORE)
        nll.append(float(-log_probs[where, targets[where]].sum()))
        tokens.append(int(len(where)))
    prompts_of = test_prompts(prepared, tokenizer, config)
    prompts = prompts_of["prompts"](sample_for_generation(prepared.data.splits["test"], SAME_ANSWER_PROMPTS,
                                                          config.train.seed))
    stop, cut = prompts_of["stop"], config.evaluation.generation.stop_strings
    answers = [_greedy_text(llm, tokenizer, prompt, stop, cut) for prompt in prompts]

    def work() -> None:  # the fixed workload: every prompt writes exactly SPEED_TOKENS tokens
        for prompt in prompts[:SPEED_PROMPTS]:
            for count, _ in enumerate(llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0), 1):
                if count >= SPEED_TOKENS:
                    break

    speed = median_rate(work, SPEED_PROMPTS * SPEED_TOKENS)
    return {"nll": nll, "tokens": tokens, "answers": answers, "speed": {**speed, "unit": "tokens"}}


def _greedy_text(llm: Any, tokenizer: Any, prompt: list[int], stop: list[int], stop_strings: list[str]) -> str:
    """llama.cpp's greedy answer, ended and decoded as transformers' generation ends and decodes it."""
    written: list[int] = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):
        if token in stop or len(written) >= SPEED_TOKENS:
            break
        written.append(token)
    text = tokenizer.decode(written, skip_special_tokens=True)
    for cut in stop_strings:
        text = text.split(cut, 1)[0]
    return text.strip()
