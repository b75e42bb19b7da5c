"""The training engine: transformers' Trainer configured from the run config (we do not rewrite what it does).

Validation every epoch or N steps, early stopping with patience, the best checkpoint restored at the end,
warm-up + schedule, weight decay, gradient accumulation, seeded; ``resume`` continues from the last
checkpoint in the run folder with optimizer, scheduler, RNG and data position restored by the Trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.config.schema import TrainConfig
from tuneforge.evaluation.metrics import eval_metrics
from tuneforge.training.callbacks import JsonlLogCallback, NanGuardCallback


def last_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last, so a checkpoint that a
    kill interrupted while saving (no trainer_state.json) is skipped."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [p for p in checkpoint_dir.glob("checkpoint-*")
                if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def incomplete_checkpoints(checkpoint_dir: Path) -> list[str]:
    """Checkpoints a kill interrupted while they were written (no trainer_state.json): resume skips them."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted((p.name for p in checkpoint_dir.glob("checkpoint-*")
                   if p.name.split("-")[-1].isdigit() and not (p / "trainer_state.json").exists()),
                  key=lambda name: int(name.split("-")[-1]))


def build_trainer(model: Any, tokenizer: Any, train_set: list[dict[str, Any]], eval_set: list[dict[str, Any]],
                  config: TrainConfig, num_labels: int, run_dir: Path, extra_callbacks: list[Any] = (),
                  report_to: list[str] = (), quiet: bool = False, collator: Any = None,
                  metrics_fn: Any = None, causal_lm: bool = False, gradient_checkpointing: bool = False,
                  group_by_length: bool = False, selection: str = "macro_f1",
                  class_weights: list[float] | None = None, parts: Any = None, distributed: Any = None) -> Any:
    """A Trainer for a classifier (``num_labels`` classes, metrics from argmax); given a ``collator`` and a
    ``metrics_fn(label_ids, logits)``, for a token classifier; given a ``collator`` alone, for a generative
    model (validation loss only: no logits are kept). ``causal_lm``: next-token loss with the LM head computed
    at labelled positions only (not with virtual-token methods, whose rows peft extends). ``selection``: the
    validation metric that picks the best checkpoint when early stopping (which names its own) is off. ``parts``
    with a ``trainer`` factory (TRL's preference trainers): that Trainer, with the same arguments, in its own class.
    ``distributed``: the run's distributed section (used under torchrun: see training/distributed.py)."""
    import os

    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    from tuneforge.training.speed import SpeedMeter, flops_model, matmul_peak
    from tuneforge.training.trainer import TuneforgeTrainer

    generative = collator is not None and metrics_fn is None
    cuda = torch.cuda.is_available()
    if not cuda:  # DeepSpeed, imported by transformers when installed, guesses its accelerator (and says so) otherwise
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    precision = resolve_precision(config.precision, cuda)

    early = config.early_stopping
    metric = early.metric if early else selection
    library = parts is not None and parts.trainer is not None
    args = _training_arguments(config, run_dir, metric, generative, precision, cuda, report_to,
                               gradient_checkpointing, group_by_length,
                               (parts.arguments, parts.argument_fields) if library else None,
                               _scale_arguments(config, distributed, model, cuda))
    callbacks: list[Any] = [JsonlLogCallback(run_dir / "train_log.jsonl"), NanGuardCallback(fp16=precision == "fp16"),
                                 *extra_callbacks]
    callbacks += _distributed_callbacks(distributed)
    if early:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early.patience,
                                               early_stopping_threshold=early.min_delta))

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        if metrics_fn is not None:
            return metrics_fn(prediction.label_ids, logits)
        return eval_metrics(prediction.label_ids, np.argmax(logits, axis=-1), num_labels)

    device = "cuda" if cuda else "cpu"
    if not cuda:
        from tuneforge.training.fast_dropout import use_fast_dropout

        use_fast_dropout(model)  # same drop rates, cheaper masks (torch's CPU bernoulli_ is slow)
    peak = matmul_peak(_DTYPES[precision], device)
    if not cuda:  # CPU autocast leaves part of the work in fp32: the device's best is the faster of the two
        peak = max(peak, matmul_peak("float32", device))
    speed = SpeedMeter(flops_model(model, causal=causal_lm), peak, causal_lm)
    if library:
        return _library_trainer(parts, model, args, train_set, eval_set, tokenizer, callbacks, speed, precision, quiet)
    trainer = TuneforgeTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                               processing_class=tokenizer, data_collator=collator or DataCollatorWithPadding(tokenizer),
                               compute_metrics=None if generative else compute_metrics, callbacks=callbacks,
                               speed=speed, labelled_head=causal_lm and not _prompt_learning(model),
                               precision=precision, class_weights=class_weights)
    if not generative:
        # transformers 5 assumes a model whose forward takes **kwargs scales its loss by num_items_in_batch, and
        # then skips dividing by the accumulation steps. Classification heads take **kwargs but return a plain
        # mean, so with accumulation the gradient (and the logged loss) came out accumulation-steps times too big.
        trainer.model_accepts_loss_kwargs = False
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tuneforge.training.progress import ProgressDisplay

    trainer.remove_callback(ProgressCallback)  # transformers' bar and its printed dicts of strings make way for ours
    trainer.remove_callback(PrinterCallback)
    if not quiet:  # search trials print nothing (the study reports each trial)
        trainer.add_callback(ProgressDisplay())
    return trainer


def _library_trainer(parts: Any, model: Any, args: Any, train_set: Any, eval_set: Any, tokenizer: Any,
                     callbacks: list[Any], speed: Any, precision: str, quiet: bool) -> Any:
    """Another library's Trainer (TRL) built by the task, with our callbacks and progress display; its steps are not
    metered (its batches are its own), so the speed summary is empty."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tuneforge.training.progress import ProgressDisplay

    trainer = parts.trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                            processing_class=tokenizer, callbacks=callbacks)
    trainer.speed, trainer.precision = speed, precision
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not quiet:
        trainer.add_callback(ProgressDisplay())
    return trainer


def _training_arguments(config: TrainConfig, run_dir: Path, metric: str, generative: bool, precision: str,
                        cuda: bool, report_to: list[str], gradient_checkpointing: bool, group_by_length: bool,
                        library: tuple[Any, dict[str, Any]] | None = None,
                        scale: dict[str, Any] | None = None) -> Any:
    """transformers' TrainingArguments from the run's train section: validation and checkpoints on the same
    schedule, the best checkpoint by ``metric`` restored at the end, autocast in ``precision``. ``library``: another
    library's arguments class (a TrainingArguments subclass) and its own fields, which replace ours where they meet.
    ``scale``: the distributed strategy's fields and the per-device batch and accumulation steps."""
    from transformers import TrainingArguments

    arguments, extra = library or (TrainingArguments, {})
    kwargs = dict(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or 2 * config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy=config.eval_strategy,
        eval_steps=config.eval_steps,
        save_strategy=config.eval_strategy,
        save_steps=config.eval_steps,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=f"eval_{metric}",
        greater_is_better=metric != "loss",
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_nan_inf_filter=False,  # a NaN step must show in the log (the guard reads it), not become 0.0
        report_to=list(report_to),
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        prediction_loss_only=generative,
        label_names=["labels"],
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        activation_checkpointing=gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        optim="adamw_torch_fused",
    )
    if library:  # the trainer computes its own losses and metrics from its own columns
        kwargs.update(prediction_loss_only=False, label_names=None)
    return arguments(**{**kwargs, **(scale or {}), **extra})


def _distributed_callbacks(distributed: Any) -> list[Any]:
    from tuneforge.training.distributed import BestCheckpointAgreement, world

    return [BestCheckpointAgreement()] if distributed is not None and world().size > 1 else []


def _scale_arguments(config: TrainConfig, distributed: Any, model: Any, cuda: bool) -> dict[str, Any]:
    """Under torchrun: the strategy's TrainingArguments fields, and the batch per device (kept to the single-process
    effective batch when asked)."""
    from tuneforge.training.distributed import effective_batch, strategy_arguments, world

    if distributed is None or world().size == 1:
        return {}
    batch, steps = effective_batch(config, world().size, distributed.keep_effective_batch)
    return {**strategy_arguments(distributed, model, cuda), "per_device_train_batch_size": batch,
            "gradient_accumulation_steps": steps}


_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


CPU_BF16_ENV = "TUNEFORGE_CPU_BF16"  # fast | slow: overrides the CPU probe below (the test suite runs both ways)


def resolve_precision(setting: str, cuda: bool) -> str:
    """``auto``: bf16 on a GPU that supports it (else fp16); on a CPU, bf16 only where its bf16 matmul is measurably
    faster than fp32 (without AMX/AVX512-BF16 it is a large slowdown); fp32 otherwise. The environment variable
    TUNEFORGE_CPU_BF16=fast|slow replaces the CPU probe (e.g. to make a fleet of mixed CPUs compute alike)."""
    import os

    import torch

    from tuneforge.errors import ConfigError
    from tuneforge.training.speed import cpu_fast

    if setting == "fp16" and not cuda:
        raise ConfigError("train.precision: fp16 needs a GPU; on a CPU use bf16 or fp32 (or auto)")
    if setting == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision: this GPU has no bf16; use fp16 or auto")
    if setting != "auto":
        return setting
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced and forced not in ("fast", "slow"):
        raise ConfigError(f"{CPU_BF16_ENV}={forced!r}: use fast (bf16 on this CPU) or slow (fp32), or unset it")
    fast = forced == "fast" if forced else cpu_fast("bfloat16")
    return "bf16" if fast else "fp32"


def _prompt_learning(model: Any) -> bool:
    """Prefix / prompt tuning: peft prepends virtual tokens (and their -100 labels) inside its forward."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))
