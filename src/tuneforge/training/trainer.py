"""transformers' Trainer with two additions: it measures its own speed (tokens/s, padding, MFU in every training
log line), and for a causal LM it computes the LM head and the cross-entropy only at positions that carry a label.

The head (hidden x vocabulary: 576 x 49,152 for SmolLM2, a fifth of its FLOPs per token) is usually applied at
every position and the logits of prompt and padding positions thrown away by the loss. A forward pre-hook on the
output embedding hands it only the hidden states of labelled positions, so the model's own forward (and any
wrapper around it: peft, DDP, FSDP) runs unchanged and the loss is the same mean token cross-entropy.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer

from tuneforge.training.speed import IGNORE, SpeedMeter

STATS_KEYS = ("tf_lengths", "tf_real", "tf_attention")


class TuneforgeTrainer(Trainer):
    def __init__(self, *args: Any, speed: SpeedMeter | None = None, labelled_head: bool = False,
                 precision: str = "fp32", class_weights: list[float] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.speed = speed
        self.labelled_head = labelled_head
        self.precision = precision  # the resolved train.precision, for the run's speed report
        self.class_weights = class_weights  # a weighted cross-entropy over the classes, else the model's own loss

    def create_accelerator_and_postprocess(self) -> None:
        from tuneforge.training.distributed import enable_cpu_fsdp

        super().create_accelerator_and_postprocess()
        enable_cpu_fsdp(self)  # distributed.strategy fsdp on CPU processes (accelerate enables it on GPUs only)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.speed is not None and model.training:
            self.speed.add(inputs)
        inputs = {k: v for k, v in inputs.items() if k not in STATS_KEYS}
        if self.class_weights is not None and "labels" in inputs:
            return weighted_class_loss(model, inputs, self.class_weights, return_outputs)
        if not self.labelled_head or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = labelled_head_loss(model, self.accelerator.unwrap_model(model), inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, {"loss": loss}) if return_outputs else loss

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """The Trainer's evaluation, on its own copy of the random state: each evaluation dataloader draws a seed
        from torch's global generator, which shifted every later dropout mask, so how often a run validated
        changed what it learned (same seed, eval_steps 2 vs 3: different losses from the first step after)."""
        started = time.perf_counter()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=devices):
                return super().evaluate(*args, **kwargs)
        finally:
            if self.speed is not None:
                self.speed.pause(time.perf_counter() - started)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self.speed is not None and "loss" in logs:  # a training log line: the rates since the last one
            logs = {**logs, **self.speed.rates()}
        super().log(logs, *args, **kwargs)


def weighted_class_loss(model: Any, inputs: dict[str, Any], weights: list[float], return_outputs: bool) -> Any:
    """Cross-entropy with a weight per class (train.class_weights), in fp32, over the model's logits."""
    labels = inputs["labels"]
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
    logits = outputs.logits.float()
    weight = torch.tensor(weights, dtype=torch.float32, device=logits.device)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), weight=weight,
                                             ignore_index=IGNORE)
    return (loss, outputs) if return_outputs else loss


def output_head(unwrapped: Any) -> Any:
    """The module that maps hidden states to vocabulary logits (inside a peft wrapper too)."""
    core = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
    return core.get_output_embeddings()


def labelled_head_loss(model: Any, unwrapped: Any, inputs: dict[str, Any], num_items_in_batch: Any) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions (summed / ``num_items_in_batch`` when the Trainer
    counts the tokens of the whole accumulated batch), with the head applied to those positions only."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE

    def select(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0][:, :-1][keep], *args[1:])

    handle = output_head(unwrapped).register_forward_pre_hook(select)
    try:
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
    finally:
        handle.remove()
    logits = outputs.logits.float()
    total = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    return total / count
