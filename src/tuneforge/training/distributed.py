"""One run on several processes: which process this is, what the Trainer is told for each strategy, the
effective batch, and the trained model brought back whole to the first process.

torchrun starts the processes and sets RANK / LOCAL_RANK / WORLD_SIZE; transformers' Trainer and accelerate do
the distribution (DDP, FSDP, DeepSpeed ZeRO). What is ours: settings chosen from the ``distributed:`` section, only
the first process writing the run folder, and the test split scored once, by the first process, on the whole model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from transformers import TrainerCallback

from tuneforge.config.distributed import DistributedConfig, effective_batch
from tuneforge.config.schema import TrainConfig
from tuneforge.errors import ConfigError

LAUNCHED_ENV = "TUNEFORGE_LAUNCHED"  # set by tuneforge's launcher: it holds the run folder's lock for its workers


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place among the processes torchrun started (one process without torchrun)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                 int(os.environ.get("WORLD_SIZE", 1)))


def launched() -> bool:
    """Started by ``tuneforge train --nproc``: the launcher chose the run folder and holds its lock."""
    return os.environ.get(LAUNCHED_ENV) == "1"


def batch_line(train: TrainConfig, size: int, keep: bool) -> str:
    batch, steps = effective_batch(train, size, keep)
    line = f"effective batch: {batch} per device x {size} processes x {steps} accumulation = {batch * size * steps}"
    single = train.batch_size * train.gradient_accumulation_steps
    return line + (f" (the single-process run's {single}, kept)" if keep and size > 1 else
                   f" (single process: {single})" if size > 1 else "")


def deepspeed_config(stage: int, offload: bool) -> dict[str, Any]:
    """A DeepSpeed config whose batch, clipping and precision fields are "auto": the Trainer fills them from the
    run's train section, so the config and the run never disagree. No optimizer or scheduler: the Trainer's own
    (the ones a single-process run uses) are handed to DeepSpeed."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # the saved model is whole, not shards
    if offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto", "gradient_clipping": "auto", "zero_allow_untested_optimizer": True}


def fsdp_settings(offload: bool, wrap: list[str]) -> tuple[str, dict[str, Any]]:
    """TrainingArguments' ``fsdp`` and ``fsdp_config``: torch's fully_shard (FSDP2) around each transformer block;
    checkpoints as shards (torch.distributed.checkpoint), the finished model gathered whole."""
    config: dict[str, Any] = {"version": 2, "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": True}
    if wrap:
        config["transformer_layer_cls_to_wrap"] = wrap
    if offload:
        config["cpu_offload"] = True
    return "full_shard auto_wrap", config


def strategy_arguments(settings: DistributedConfig, model: Any, cuda: bool) -> dict[str, Any]:
    """The TrainingArguments fields of the strategy (nothing for one process)."""
    if world().size == 1:
        return {}
    backend = settings.backend if settings.backend != "auto" else ("nccl" if cuda else "gloo")
    kwargs: dict[str, Any] = {"ddp_backend": backend}
    if settings.strategy == "ddp":
        kwargs["ddp_find_unused_parameters"] = False
    elif settings.strategy == "fsdp":
        kwargs["fsdp"], kwargs["fsdp_config"] = fsdp_settings(settings.offload, block_classes(model))
    else:
        _need_deepspeed()
        kwargs["deepspeed"] = deepspeed_config(int(settings.strategy[-1]), settings.offload)
    return kwargs


def block_classes(model: Any) -> list[str]:
    """The transformer block classes FSDP wraps one by one: of the model's own ``_no_split_modules``, those that
    repeat (the blocks; a one-off module such as BERT's embeddings stays with the root, whose shard holds it)."""
    from collections import Counter

    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    counts = Counter(type(module).__name__ for module in core.modules())
    return sorted(name for name in (getattr(core, "_no_split_modules", None) or []) if counts[name] > 1)


def _need_deepspeed() -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("distributed.strategy deepspeed-zero2/3 needs DeepSpeed: pip install deepspeed (or use "
                          "distributed.strategy=fsdp)")
    os.environ.setdefault("DS_ACCELERATOR", _accelerator())


def _accelerator() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def enable_cpu_fsdp(trainer: Any) -> None:
    """accelerate turns FSDP on for several GPUs only; torch's fully_shard also runs on CPU processes over gloo
    (how FSDP is tested without GPUs). Called right after the Trainer made its Accelerator: the same plugin the
    Trainer would have passed, made active."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if trainer.args.fsdp_plugin_args is None or state.distributed_type != DistributedType.MULTI_CPU:
        return
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    trainer.is_fsdp_enabled = True


def whole_model(trainer: Any, rebuild: Callable[[], Any]) -> Any:
    """The trained model, whole, on the first process (None on the others). Sharded (FSDP, ZeRO): every process
    takes part in gathering the full state dict, which loads into a fresh copy of the model built by ``rebuild``
    (outside ZeRO-3's partitioned loading: from here on the first process computes alone)."""
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        return trainer.model if world().main else None
    state = _full_state_dict(trainer)
    if trainer.is_deepspeed_enabled:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # from_pretrained would partition every later model over the (gone) processes
    if not world().main:
        return None
    model = rebuild()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [name for name in missing if not name.endswith("position_ids")]:
        raise RuntimeError(f"gathered weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def _full_state_dict(trainer: Any) -> dict[str, Any]:
    """Every process calls this; the first gets the whole state dict on CPU (the others an empty one)."""
    if trainer.is_fsdp_enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(trainer.model_wrapped, options=StateDictOptions(full_state_dict=True,
                                                                                    cpu_offload=True))
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)  # DeepSpeed: ZeRO-3 gathers its partitions


class BestCheckpointAgreement(TrainerCallback):
    """After each checkpoint is complete, every process records the best one as the first process sees it.
    transformers records the best checkpoint when its folder exists at the moment it looks; with FSDP's sharded
    saves the newest folder is not there yet, so the record lags one checkpoint behind (and differs between
    processes): the best checkpoint was deleted by the rotation, or an older one loaded at the end."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        if state.best_global_step:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.best_global_step}")
            if os.path.isdir(folder):
                state.best_model_checkpoint = folder
        if dist.is_available() and dist.is_initialized():
            best = [state.best_model_checkpoint]
            dist.broadcast_object_list(best, src=0)
            state.best_model_checkpoint = best[0]
