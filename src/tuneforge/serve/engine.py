"""Batched generation for the server: one worker thread per model copy (a base with its adapters, or one full
model) collects requests up to ``max_batch`` or ``max_wait`` seconds, generates them together -- each row with its
own adapter (peft's mixed-adapter batches), its own token budget and stop strings -- and streams every row's text
to its own request as tokens arrive.

Rows of one batch share the decoding mode (greedy, or sampling with one temperature/top_p); requests that differ
wait for the next batch. A request whose client went away is dropped from its batch at the next token.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Job:
    """One generation request: prompt token ids, the adapter (or None), and how to decode and stop."""

    prompt_ids: list[int]
    adapter: str | None
    max_tokens: int
    stop_ids: list[int]
    stop_strings: list[str] = field(default_factory=list)
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    emit: Callable[[str, Any], None] = lambda kind, value: None  # ("delta", text) then ("done", result)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def mode(self) -> tuple[bool, float, float]:
        sampling = self.temperature > 0
        return (sampling, self.temperature if sampling else 0.0, self.top_p if sampling else 1.0)


@dataclass
class _Row:
    job: Job
    tokens: list[int] = field(default_factory=list)
    sent: str = ""  # text already streamed
    done: bool = False
    reason: str = "length"

    def text(self, tokenizer: Any) -> str:
        return tokenizer.decode(self.tokens, skip_special_tokens=True)


class GenerationEngine:
    """Owns one model copy; ``submit`` queues a job, the worker batches and generates."""

    def __init__(self, name: str, model: Any, tokenizer: Any, encoder_decoder: bool = False, max_batch: int = 8,
                 max_wait: float = 0.01, max_queue: int = 64, multi_adapter: bool = False,
                 on_batch: Callable[[int], None] = lambda size: None):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.encoder_decoder, self.multi_adapter = encoder_decoder, multi_adapter
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.on_batch = on_batch
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.waiting: deque[Job] = deque()  # taken from the queue but not fitting the last batch's mode
        self.stopping = False
        self.cancelled_rows = 0  # rows dropped mid-generation because their client went away
        self.batch_stops: set[int] = set()
        self.thread = threading.Thread(target=self._work, name=f"generate-{name}", daemon=True)
        self.thread.start()

    def depth(self) -> int:
        return self.jobs.qsize() + len(self.waiting)

    def submit(self, job: Job) -> bool:
        """Queue a job; False when the queue is full (the caller answers 429)."""
        if self.stopping or not self.thread.is_alive() or self.depth() >= self.max_queue:
            return False
        self.jobs.put(job)
        return True

    def close(self) -> None:
        self.stopping = True
        self.jobs.put(None)
        self.thread.join(timeout=30)

    # --- the worker

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            batch = [job for job in batch if not job.cancelled.is_set()]
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                self._generate(batch)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the server
                for job in batch:
                    _emit(job, "error", f"{type(exc).__name__}: {exc}")

    def _next_batch(self) -> list[Job] | None:
        first = self.waiting.popleft() if self.waiting else self.jobs.get()
        if first is None:
            return None
        batch, deadline = [first], time.perf_counter() + self.max_wait
        kept: deque[Job] = deque()
        while self.waiting and len(batch) < self.max_batch:  # earlier arrivals first
            job = self.waiting.popleft()
            (batch if job.mode == first.mode else kept).append(job)
        while len(batch) < self.max_batch:
            try:
                job = self.jobs.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if job is None:
                self.jobs.put(None)  # stop after this batch
                break
            (batch if job.mode == first.mode else kept).append(job)
        self.waiting.extendleft(reversed(kept))
        return batch

    def _generate(self, batch: list[Job]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from tuneforge.evaluation.generation import pad_prompts

        tokenizer = self.tokenizer
        stop_ids = sorted({t for job in batch for t in job.stop_ids})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
        ids, mask = pad_prompts([job.prompt_ids for job in batch], pad, self.encoder_decoder)
        offset = 1 if self.encoder_decoder else len(ids[0])  # new tokens start after the decoder's start token
        rows = [_Row(job) for job in batch]
        engine = self
        self.batch_stops = set(stop_ids)  # generate ends a row at any of them: so does the row's own account

        class PerRow(StoppingCriteria):
            """Called after every new token: stream each row's new text, and end a row at a stop token, a stop
            string, its own max_tokens, or when its client is gone."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                new = input_ids[:, offset:].tolist()
                for row, tokens in zip(rows, new):
                    if not row.done:
                        engine._advance(row, tokens)
                return torch.tensor([row.done for row in rows], device=input_ids.device)

        sampling, temperature, top_p = batch[0].mode
        options: dict[str, Any] = {"max_new_tokens": max(job.max_tokens for job in batch), "do_sample": sampling,
                                   "num_beams": 1, "eos_token_id": stop_ids, "pad_token_id": pad,
                                   "stopping_criteria": StoppingCriteriaList([PerRow()])}
        options.update(temperature=temperature, top_p=top_p, top_k=0) if sampling else \
            options.update(temperature=None, top_p=None, top_k=None)
        device = next(self.model.parameters()).device
        with torch.inference_mode(), self._adapters(batch, options):
            out = self.model.generate(input_ids=torch.tensor(ids, device=device),
                                      attention_mask=torch.tensor(mask, device=device), **options)
        for row, tokens in zip(rows, out[:, offset:].tolist()):
            if not row.done:  # ended by max_new_tokens of the batch, or by the last token
                self._advance(row, tokens)
            self._finish(row)

    def _adapters(self, batch: list[Job], options: dict[str, Any]) -> Any:
        """The adapters of a batch: one adapter for every row is set as the active one (the plain LoRA forward);
        the base alone runs with adapters disabled; a mix goes row by row (``adapter_names``)."""
        import contextlib

        if not self.multi_adapter:
            return contextlib.nullcontext()
        names = {job.adapter or BASE_ADAPTER for job in batch}
        if len(names) > 1:
            options["adapter_names"] = [job.adapter or BASE_ADAPTER for job in batch]
            return contextlib.nullcontext()
        (name,) = names
        if name == BASE_ADAPTER:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _advance(self, row: _Row, tokens: list[int]) -> None:
        job = row.job
        if job.cancelled.is_set():
            row.done, row.reason = True, "cancelled"
            self.cancelled_rows += 1
            return
        stop_at = next((i for i, t in enumerate(tokens) if t in job.stop_ids or t in self.batch_stops), None)
        if stop_at is not None:
            row.tokens, row.done, row.reason = tokens[:stop_at], True, "stop"
        else:
            row.tokens = tokens[:job.max_tokens]
            row.done = len(tokens) >= job.max_tokens
        text = row.text(self.tokenizer)
        for stop in job.stop_strings:
            if stop in text:
                text, row.done, row.reason = text.split(stop, 1)[0], True, "stop"
        if not row.done:  # hold back what may be the start of a stop string or half a character
            text = _safe_prefix(text, job.stop_strings)
        if len(text) > len(row.sent) and text.startswith(row.sent):
            _emit(job, "delta", text[len(row.sent):])
            row.sent = text

    def _finish(self, row: _Row) -> None:
        if row.reason == "cancelled":
            return
        text = row.text(self.tokenizer)
        for stop in row.job.stop_strings:
            if stop in text:
                text, row.reason = text.split(stop, 1)[0], "stop"
        if len(text) > len(row.sent) and text.startswith(row.sent):
            _emit(row.job, "delta", text[len(row.sent):])
        _emit(row.job, "done", {"text": text, "finish_reason": row.reason, "prompt_tokens": len(row.job.prompt_ids),
                              "completion_tokens": len(row.tokens)})


def _safe_prefix(text: str, stops: list[str]) -> str:
    """``text`` without a trailing partial character (U+FFFD from half a UTF-8 sequence) and without the longest
    trailing piece that could be the start of any stop string (so what was streamed is always a prefix of the
    final text)."""
    text = text.rstrip("\ufffd")
    held = max((size for stop in stops for size in range(1, min(len(stop) - 1, len(text)) + 1)
                if text.endswith(stop[:size])), default=0)
    return text[:-held] if held else text


def _emit(job: Job, kind: str, value: Any) -> None:
    """Hand an event to the job's request; a request whose event loop is gone is cancelled, never the worker."""
    try:
        job.emit(kind, value)
    except RuntimeError:  # the server's loop closed (shutdown): nobody is listening
        job.cancelled.set()
