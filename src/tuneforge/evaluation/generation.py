"""Batched generation with configurable decoding, and per-example log-likelihoods for perplexity.

Prompts are token ids (rendered by the run's chat template). Decoder-only prompts are padded on the left so
that every answer starts right after its prompt; a generation "ended" when it produced a stop token (the
template's end-of-turn token or EOS) or a stop string before ``max_new_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneforge.config.schema import GenerationConfig
from tuneforge.data.chat import IGNORE, Encoded


@dataclass
class Generated:
    text: str
    ended: bool  # stopped by a stop token or stop string, not by max_new_tokens
    new_tokens: int


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], config: GenerationConfig,
             stop_ids: list[int], encoder_decoder: bool = False, description: str = "generating",
             max_new_tokens: int | None = None) -> list[Generated]:
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    set_seed(config.seed)
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    limit = max_new_tokens or config.max_new_tokens
    order = np.argsort([len(p) for p in prompts], kind="stable")
    results: list[Generated | None] = [None] * len(prompts)
    options: dict[str, Any] = {"max_new_tokens": limit, "do_sample": config.do_sample, "num_beams": config.num_beams,
                               "repetition_penalty": config.repetition_penalty, "eos_token_id": stop_ids,
                               "pad_token_id": pad}
    if config.do_sample:
        options.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    else:  # keep a model's own sampling defaults from leaking into greedy decoding (and its warnings out)
        options.update(temperature=None, top_p=None, top_k=None)
    if config.stop_strings:
        options.update(stop_strings=config.stop_strings, tokenizer=tokenizer)
    with torch.inference_mode():
        for start in tqdm(range(0, len(prompts), config.batch_size), desc=description, leave=False, disable=None):
            batch = [prompts[i] for i in order[start:start + config.batch_size]]
            width = max(len(p) for p in batch)
            ids, mask = pad_prompts(batch, pad, encoder_decoder)
            out = model.generate(input_ids=torch.tensor(ids, device=device),
                                 attention_mask=torch.tensor(mask, device=device), **options)
            new = out[:, 1:] if encoder_decoder else out[:, width:]  # drop decoder start / the prompt
            for index, row in zip(order[start:start + config.batch_size], new.tolist()):
                results[index] = _finish(row, tokenizer, stop_ids, pad, config.stop_strings)
    return [r for r in results if r is not None]


def pad_prompts(batch: list[list[int]], pad: int, encoder_decoder: bool) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and attention masks of prompts of different lengths: an encoder's inputs pad on the right, a
    decoder's on the left (generation continues from the last position)."""
    width = max(len(p) for p in batch)
    if encoder_decoder:
        return ([p + [pad] * (width - len(p)) for p in batch],
                [[1] * len(p) + [0] * (width - len(p)) for p in batch])
    return [[pad] * (width - len(p)) + p for p in batch], [[0] * (width - len(p)) + [1] * len(p) for p in batch]


def _finish(row: list[int], tokenizer: Any, stop_ids: list[int], pad: int, stop_strings: list[str]) -> Generated:
    cut = next((i for i, token in enumerate(row) if token in stop_ids), None)
    tokens = row[:cut] if cut is not None else [t for t in row if t != pad]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    ended = cut is not None
    for stop in stop_strings:
        if stop in text:
            text, ended = text.split(stop, 1)[0], True
    return Generated(text=text.strip(), ended=ended, new_tokens=len(tokens))


def sequence_nll(model: Any, examples: list[Encoded], batch_size: int = 8, encoder_decoder: bool = False,
                 prompts: list[list[int]] | None = None, description: str = "perplexity") -> tuple[np.ndarray, np.ndarray]:
    """Per example: the summed negative log-likelihood (nats) of its label tokens and how many there are.
    Decoder-only: labels align with input_ids and are shifted here; encoder-decoder: ``prompts`` are the
    encoder inputs and labels are the target ids."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    sums, counts = np.zeros(len(examples)), np.zeros(len(examples), dtype=np.int64)
    with torch.inference_mode():
        for start in tqdm(range(0, len(examples), batch_size), desc=description, leave=False, disable=None):
            part = examples[start:start + batch_size]
            if encoder_decoder:
                assert prompts is not None
                encoder = prompts[start:start + batch_size]
                width = max(len(p) for p in encoder)
                ids = torch.tensor([p + [0] * (width - len(p)) for p in encoder], device=device)
                mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in encoder], device=device)
                label_width = max(len(e.labels) for e in part)
                labels = torch.tensor([e.labels + [IGNORE] * (label_width - len(e.labels)) for e in part],
                                      device=device)
                logits = model(input_ids=ids, attention_mask=mask, labels=labels).logits
                targets = labels
            else:
                width = max(len(e.input_ids) for e in part)
                ids = torch.tensor([e.input_ids + [0] * (width - len(e.input_ids)) for e in part], device=device)
                mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in part],
                                    device=device)
                labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in part], device=device)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                targets = labels[:, 1:]
            loss = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
            sums[start:start + len(part)] = loss.sum(dim=1).cpu().numpy()
            counts[start:start + len(part)] = (targets != IGNORE).sum(dim=1).cpu().numpy()
    return sums, counts
