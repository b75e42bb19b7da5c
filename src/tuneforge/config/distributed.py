"""The ``distributed:`` section: how ``tuneforge train --nproc N`` (torchrun underneath) spreads one run over
processes, GPUs and machines. The engines are transformers' Trainer with accelerate: DDP, FSDP (torch's fully_shard)
and DeepSpeed ZeRO; tuneforge only chooses their settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.errors import ConfigError

STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")


class DistributedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section (schema.Section)

    strategy: Literal["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"] = Field(
        "ddp", description="With more than one process: ddp (each process holds the whole model), fsdp (weights, "
        "gradients and optimizer states sharded: torch's fully_shard), deepspeed-zero2 (gradients and optimizer "
        "states sharded), deepspeed-zero3 (weights too). FSDP and ZeRO-3 let a model that does not fit one device "
        "train on several.")
    keep_effective_batch: bool = Field(
        False, description="Keep the single-process effective batch (train.batch_size x "
        "train.gradient_accumulation_steps) on N processes: the accumulation steps, else the per-device batch, "
        "are divided by N (the same updates, so the same loss curve). Off: every process takes train.batch_size, "
        "so the effective batch grows N times.")
    offload: bool = Field(False, description="fsdp and deepspeed: keep optimizer states (and, for fsdp and zero3, "
                          "weights) in CPU memory between uses (less GPU memory, slower steps).")
    backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="Collective backend: auto = nccl on GPUs, gloo on CPUs.")


def effective_batch(train: Any, size: int, keep: bool) -> tuple[int, int]:
    """(per-device batch, accumulation steps) on ``size`` processes. ``keep``: the single-process effective batch
    (batch x accumulation) is kept by dividing the accumulation steps, else the per-device batch, by ``size``."""
    batch, steps = train.batch_size, train.gradient_accumulation_steps
    if not keep or size == 1:
        return batch, steps
    if steps % size == 0:
        return batch, steps // size
    if batch % size == 0:
        return batch // size, steps
    raise ConfigError(f"distributed.keep_effective_batch: the effective batch {batch} x {steps} cannot be split over "
                       f"{size} processes; make train.batch_size or train.gradient_accumulation_steps a multiple of "
                       f"{size}, or set distributed.keep_effective_batch=false")
