"""``tuneforge train``: one run, top to bottom.

config -> data -> model -> method -> train -> evaluate (fine-tuned vs baselines, test split read once) ->
artifacts (run folder) -> report.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.config.loader import dump_config
from tuneforge.config.schema import RunConfig
from tuneforge.io import atomic_write_json, atomic_write_text


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float
    tracking_run_id: str | None = None


ARTIFACTS = ["config.yaml", "data_report.json", "params.json", "metrics.json", "train_log.jsonl", "report.html",
             "predictions.csv", "predictions.jsonl"]


def headline_metrics() -> tuple[str, ...]:
    """Every test metric some task shows in its summary: what a run logs to the tracker."""
    from tuneforge.tasks.registry import all_specs

    return tuple(dict.fromkeys(m for spec in all_specs() for m in (*spec.headline, *spec.shown)))


def finetune(config: RunConfig, output: str | Path | None = None, resume: bool = False,
             keep_checkpoints: bool = False, log: Callable[[str], None] = print, *, evaluate_test: bool = True,
             callbacks: list[Any] = (), tags: dict[str, str] | None = None, quiet: bool = False) -> RunResult:
    """One run. With ``evaluate_test=False`` (a search trial) the test split is never scored: the result holds
    validation metrics only."""
    from tuneforge.models.loading import quiet_libraries
    from tuneforge.pipelines.run_dir import RunLock, choose_run_dir
    from tuneforge.tasks.registry import task_spec
    from tuneforge.training.distributed import launched, world

    quiet_libraries()
    started = time.time()
    if not world().main:  # under torchrun the first process speaks and writes; the others train
        log, quiet = (lambda _line: None), True
    if launched() or world().size > 1:  # tuneforge train --nproc (its launcher holds the folder), torchrun, accelerate
        return _launched_run(config, output or config.output_dir, resume, keep_checkpoints, log, evaluate_test,
                             callbacks, tags, quiet, started)
    run_dir = choose_run_dir(config.name, output or config.output_dir, resume)
    config, resumed = _with_saved_settings(config, run_dir, resume)
    inputs = read_inputs(task_spec(config.model.task), config)  # bad data or model: stop before any folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)  # a second run into this folder stops here, before writing anything
    try:
        if output or config.output_dir:  # a run that took the folder while this one read its data: refused now
            choose_run_dir(config.name, run_dir, resume)
        if lock.took_over:
            log(f"run folder: {run_dir} (its previous run, PID {lock.took_over}, was killed)")
        else:
            log(f"run folder: {run_dir}")
        result = _locked_run(config, run_dir, resume, resumed, keep_checkpoints, log, evaluate_test, callbacks,
                             tags, quiet, inputs)
    except KeyboardInterrupt as interrupt:
        interrupt.run_dir = run_dir  # type: ignore[attr-defined]  # the CLI prints the command that resumes it
        raise
    finally:
        lock.release()
    return RunResult(run_dir=run_dir, metrics=result[0], seconds=time.time() - started, tracking_run_id=result[1])


def _launched_run(config: RunConfig, output: str | Path | None, resume: bool, keep_checkpoints: bool,
                  log: Callable[[str], None], evaluate_test: bool, callbacks: list[Any], tags: dict[str, str] | None,
                  quiet: bool, started: float) -> RunResult:
    """One of several processes, in the folder ``tuneforge train --nproc`` chose and locked; started by torchrun or
    accelerate directly, the folder is ``--output`` (the same for every process) and the first process locks it."""
    from tuneforge.errors import UserError
    from tuneforge.pipelines.run_dir import RunLock
    from tuneforge.tasks.registry import task_spec
    from tuneforge.training.distributed import launched, world

    if output is None:
        raise UserError("several processes (torchrun/accelerate): give --output RUN_DIR, the same for every process")
    run_dir = Path(output)
    lock = None
    if not launched() and world().main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
    try:
        config, resumed = _with_saved_settings(config, run_dir, resume)
        inputs = read_inputs(task_spec(config.model.task), config)
        metrics, run_id = _locked_run(config, run_dir, resume, resumed, keep_checkpoints, log, evaluate_test,
                                      callbacks, tags, quiet, inputs)
    finally:
        if lock is not None:
            lock.release()
    return RunResult(run_dir=run_dir, metrics=metrics, seconds=time.time() - started, tracking_run_id=run_id)


def _with_saved_settings(config: RunConfig, run_dir: Path, resume: bool) -> tuple[RunConfig, bool]:
    """Resuming a run that saved its config: the saved settings (what may change is checked), so the data is read as
    the run read it. Returns the config and whether it was resumed."""
    saved = run_dir / "config.yaml"
    if not (resume and saved.exists()):
        return config, False
    from tuneforge.config.loader import load_config
    from tuneforge.pipelines.run_dir import resumed_config

    return resumed_config(load_config(saved), config, saved), True


@dataclass
class Inputs:
    """What a run reads before it writes anything: the model (found, and able to do the task), its tokenizer, and
    the data (read, checked, split and encoded by the task)."""

    resolved: Any
    tokenizer: Any
    data: Any


def read_inputs(task: Any, config: RunConfig) -> Inputs:
    from tuneforge.models.assets import resolve_model
    from tuneforge.models.loading import load_tokenizer

    resolved = resolve_model(config.model.name, config.model.revision)
    task.check_model(config.model.name, resolved.path, config.model.revision)
    tokenizer = load_tokenizer(resolved, config.model.revision, config.model.trust_remote_code)
    return Inputs(resolved, tokenizer, task.call("prepare", config, tokenizer, resolved))


def _locked_run(config: RunConfig, run_dir: Path, resume: bool, resumed: bool, keep_checkpoints: bool,
                log: Callable[[str], None],
                evaluate_test: bool, callbacks: list[Any], tags: dict[str, str] | None,
                quiet: bool, inputs: Inputs) -> tuple[dict[str, Any], str | None]:
    """The run, holding the folder's lock: settle the config (every ``auto`` decided once and recorded), train and
    evaluate through the task's recipe, write metrics.json and the report, close the tracker."""
    import torch

    from tuneforge.tasks.registry import task_spec
    from tuneforge.tracking import open_tracker
    from tuneforge.tracking.base import NullTracker
    from tuneforge.training.distributed import world

    started = time.time()
    main = world().main
    config = _settled(config, run_dir, resumed, log if not quiet else (lambda _line: None))
    task = task_spec(config.model.task)
    if not main:  # trains its share; the first process writes the run folder and scores the test split
        run_task(task, config, run_dir, resume, log, evaluate_test, list(callbacks), NullTracker(), quiet, inputs)
        return {}, None
    atomic_write_text(run_dir / "config.yaml", dump_config(config))  # the full record of the run
    tracker = open_tracker(config.tracking, config.name, run_dir.name, {"tuneforge.run_dir": str(run_dir.resolve()),
                                                                       **(tags or {})})
    tracker.log_params(config.model_dump(mode="json", exclude={"hpo", "tracking"}))
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    try:
        metrics = run_task(task, config, run_dir, resume, log, evaluate_test, list(callbacks), tracker, quiet, inputs)
        metrics = {"task": task.name, **metrics, "seconds": round(time.time() - started, 1)}
        if evaluate_test:
            metrics["verdict"] = run_verdict(task, config, metrics["test"])  # the summary and the report show it
        params = json.loads((run_dir / "params.json").read_text())
        tracker.log_metrics({"params_total": params["total"], "params_trainable": params["trainable"]})
        atomic_write_json(run_dir / "metrics.json", metrics)
        if evaluate_test:
            from tuneforge.pipelines.model_card import write_model_card
            from tuneforge.pipelines.report import write_report

            write_report(run_dir)
            write_model_card(run_dir)
        tracker.log_metrics(_headline(metrics))
        tracker.log_artifacts(run_dir, ARTIFACTS)
    except BaseException:
        tracker.finish("KILLED" if sys.exc_info()[0] is KeyboardInterrupt else "FAILED")
        raise
    tracker.finish("FINISHED")
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return metrics, tracker.run_id


def _settled(config: RunConfig, run_dir: Path, resumed: bool, log: Callable[[str], None]) -> RunConfig:
    """The config with every ``auto`` decided: a resumed run's saved config already holds them; else the precision
    from this machine's probe and gradient checkpointing from the memory estimate."""
    import torch

    from tuneforge.training.engine import resolve_precision

    if not resumed:
        config = config.model_copy(deep=True)
        config.train.precision = resolve_precision(config.train.precision, torch.cuda.is_available())
    return _check_memory(config, run_dir, log)


def run_task(task: Any, config: RunConfig, run_dir: Path, resume: bool, log: Callable[[str], None],
             evaluate_test: bool, callbacks: list[Any], tracker: Any, quiet: bool, inputs: Inputs) -> dict[str, Any]:
    """The recipe, the same for every task; the task's spec supplies the steps that differ. ``inputs``: the model
    and data, read before the run folder was made."""
    from transformers import set_seed

    from tuneforge.models.inspection import count_parameters, parameter_line
    from tuneforge.pipelines.evaluate import best_checkpoint_info
    from tuneforge.training.distributed import world

    resolved, tokenizer, data = inputs.resolved, inputs.tokenizer, inputs.data
    main = world().main

    def build() -> Any:  # model + method (seeded before the head and the adapter are created)
        set_seed(config.train.seed)
        return _apply_method(task.call("load_model", resolved, data, config, tokenizer), config, task)

    model = build()
    if main:
        atomic_write_json(run_dir / "data_report.json", data.report)
    log(data.summary)
    for warning in data.warnings:
        log(f"warning: {warning}")
    params = count_parameters(model)
    if main:
        atomic_write_json(run_dir / "params.json", params)
    tracker.log_metrics(data.tracked)
    log(parameter_line(params, config.method.name))
    # train
    parts = task.call("trainer_parts", model, tokenizer, data, config)
    trainer, train_seconds = train_with_resume(model, tokenizer, data.train, data.validation, config, run_dir, resume,
                                               log, callbacks, tracker, quiet, parts, task, build)
    if not main:
        return {}
    model = trainer.model
    save_model(model, tokenizer, run_dir / "model", resolved.path, config, data.labels,
               {**data.meta, "base": portable_base(resolved, config.model.revision)})
    training = {"global_steps": trainer.state.global_step, "epochs_run": round(trainer.state.epoch or 0.0, 3),
                "max_epochs": config.train.epochs, "method": config.method.name,
                "train_seconds": round(train_seconds, 2), "params_trainable": params["trainable"],
                **data.training, "speed": trainer.speed_summary, **scale_record(config)}
    result = {"validation": best_checkpoint_info(trainer.state, trainer.args.metric_for_best_model),
              "training": training}
    # evaluate: the test split is read here, once
    if evaluate_test:
        result.update(task.call("evaluate", model, tokenizer, data, config, run_dir, resolved))
    return result


def run_verdict(task: Any, config: RunConfig, test: dict[str, Any]) -> dict[str, Any]:
    """Better, worse or not distinguishable from the best baseline, and whether the run learned nothing (with what
    to try then)."""
    from tuneforge.evaluation.verdict import verdict
    from tuneforge.tasks.spec import direction

    headline = task.headline_of(test["finetuned"])
    hints = (f"try a higher train.learning_rate (this run: {config.train.learning_rate:g}), more train.epochs"
             + (", train.class_weights=balanced" if task.class_weighted and config.train.class_weights != "balanced"
                else "") + ", or another method (freeze, full)")
    return verdict(test, headline, direction(headline) == "maximize", task.baselines[0], hints)


def _apply_method(model: Any, config: RunConfig, task: Any) -> Any:
    from tuneforge.errors import ConfigError
    from tuneforge.methods.registry import apply_method

    try:
        return apply_method(model, config.method, task)
    except ValueError as exc:
        raise ConfigError(f"method: {exc}") from None


def _check_memory(config: RunConfig, run_dir: Path, log: Callable[[str], None]) -> RunConfig:
    """Predict the run's peak memory from the config before loading anything; warn with suggestions when it
    will not fit this device. ``train.gradient_checkpointing: auto`` is decided here: on only when the run would
    not fit without it. Returns the config with that decision made. An estimate that cannot be made never stops
    the run (checkpointing stays off)."""
    import torch

    from tuneforge.planning.memory import SAFETY_MARGIN, advise, available_memory, estimate
    from tuneforge.training.distributed import world

    device = "cuda" if torch.cuda.is_available() else "cpu"
    processes = world().size
    auto = config.train.gradient_checkpointing == "auto"
    try:
        predicted = estimate(config, gradient_checkpointing=config.train.gradient_checkpointing is True,
                             device=device, processes=processes)
        available = available_memory(device)
        budget = available * (1 - SAFETY_MARGIN)
        checkpointing = config.train.gradient_checkpointing is True or (auto and predicted.total > budget)
        if checkpointing and not predicted.gradient_checkpointing:
            without, predicted = predicted, estimate(config, gradient_checkpointing=True, device=device,
                                                     processes=processes)
            log(f"gradient checkpointing on (train.gradient_checkpointing=auto): without it the peak would be "
                f"{without.total / 2**20:,.0f} MiB of {available / 2**20:,.0f} MiB available")
    except Exception as exc:  # noqa: BLE001 - an unknown architecture must not block training
        log(f"memory estimate unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return _with_checkpointing(config, config.train.gradient_checkpointing is True)
    if world().main:
        atomic_write_json(run_dir / "estimate.json", {"parts_bytes": predicted.parts, "total_bytes": predicted.total,
                                                      "available_bytes": available, "device": device,
                                                      "processes": processes,
                                                      "flops_per_token": predicted.flops_per_token,
                                                      "gradient_checkpointing": checkpointing})
    advice = advise(predicted, available)
    per = f" per process ({predicted.notes['sharding']})" if processes > 1 else ""
    log(f"memory estimate: peak {predicted.total / 2**20:,.0f} MiB{per} of {available / 2**20:,.0f} MiB available "
        f"on {device}" + ("" if not advice else " -- it will not fit; try:"))
    for line in advice:
        log(f"  - {line}")
    return _with_checkpointing(config, checkpointing)


def _with_checkpointing(config: RunConfig, on: bool) -> RunConfig:
    resolved = config.model_copy(deep=True)
    resolved.train.gradient_checkpointing = on
    return resolved


def train_with_resume(model: Any, tokenizer: Any, train_set: list[Any], eval_set: list[Any], config: RunConfig,
                      run_dir: Path, resume: bool, log: Callable[[str], None], callbacks: list[Any], tracker: Any,
                      quiet: bool, parts: Any, task: Any, build: Callable[[], Any] | None = None) -> tuple[Any, float]:
    """Build the Trainer with the task's ``parts`` (collator, validation metrics), continue from the last checkpoint
    when resuming, train; returns it and the seconds. Under torchrun the trained model comes back whole to the first
    process (``build`` makes the fresh copy that sharded weights load into); the others return after training."""
    from tuneforge.training.distributed import batch_line, whole_model, world

    from tuneforge.training.callbacks import TrackingCallback
    from tuneforge.training.engine import build_trainer, incomplete_checkpoints, last_checkpoint

    method_checkpoints = bool(getattr(config.method, "gradient_checkpointing", False))  # qlora prepares its own
    checkpointing = config.train.gradient_checkpointing is True  # "auto" was decided by _check_memory
    group = parts.group_by_length if config.train.group_by_length is None else config.train.group_by_length
    trainer = build_trainer(model, tokenizer, train_set, eval_set, config.train, parts.num_labels, run_dir,
                            [TrackingCallback(tracker), *callbacks], config.tracking.extra, quiet, parts.collator,
                            parts.metrics_fn, causal_lm=task.next_token_loss,
                            gradient_checkpointing=checkpointing and not method_checkpoints, group_by_length=group,
                            selection=task.selection[0], class_weights=parts.class_weights, parts=parts,
                            distributed=config.distributed)
    if world().size > 1:
        log(f"{world().size} processes, strategy {config.distributed.strategy}; "
            + batch_line(config.train, world().size, config.distributed.keep_effective_batch))
    if not parts.exact_token_loss:
        # a model whose loss is a plain per-batch mean (EncoderDecoderModel) ignores num_items_in_batch: let the
        # Trainer divide by the accumulation steps itself
        trainer.model_accepts_loss_kwargs = False
    if parts.setup is not None:
        parts.setup(trainer)
    checkpoint = last_checkpoint(run_dir / "checkpoints") if resume and parts.resumable else None
    if resume and not parts.resumable:
        log(f"{task.name} cannot continue from a checkpoint (its trainer's loop does not resume): training again "
            f"from the start")
    elif resume:
        for name in incomplete_checkpoints(run_dir / "checkpoints"):
            log(f"skipping {name}: incomplete (no trainer_state.json: the run was stopped while writing it)")
    _trim_log(run_dir / "train_log.jsonl", checkpoint)
    if checkpoint:
        log(f"resuming from {checkpoint}")
    started = time.time()
    try:
        if parts.resumable:
            trainer.train(resume_from_checkpoint=checkpoint)
        else:
            trainer.train()
    finally:  # a live display gives the terminal back even when training raised
        from tuneforge.training.progress import ProgressDisplay

        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressDisplay):
                callback.close()
    seconds = time.time() - started
    if world().size > 1:
        trainer.model = whole_model(trainer, build or (lambda: model))
        if not world().main:
            return trainer, seconds
    if parts.trained_model is not None:
        trainer.model = parts.trained_model(trainer)
    from tuneforge.models.precision import compute_in, without_trainer_autocast

    # the test split, the baselines and every later reader compute in the run's precision, the same way
    trainer.model = compute_in(without_trainer_autocast(trainer.model), trainer.precision)
    trainer.speed_summary = {"precision": trainer.precision, "gradient_checkpointing": checkpointing or method_checkpoints,
                             **trainer.speed.summary()}
    speed = trainer.speed_summary
    if "tokens_per_s" in speed:
        mfu = f", MFU {100 * speed['mfu']:.0f}% of {speed['peak_flops']:.0f} GFLOP/s" if "mfu" in speed else ""
        log(f"speed: {speed['tokens_per_s']:,.0f} real tokens/s, {speed['loss_tokens_per_s']:,.0f} tokens with "
            f"loss/s, padding {100 * speed['padding_share']:.1f}%{mfu} ({speed['precision']}"
            f"{', gradient checkpointing' if speed['gradient_checkpointing'] else ''})")
        tracker.log_metrics({f"speed_{k}": v for k, v in speed.items() if isinstance(v, (int, float))})
    return trainer, seconds


def scale_record(config: RunConfig) -> dict[str, Any]:
    """How many processes trained the run, how, and the effective batch (metrics.json's training section)."""
    from tuneforge.training.distributed import effective_batch, world

    size, keep = world().size, config.distributed.keep_effective_batch
    batch, steps = effective_batch(config.train, size, keep)
    return {"processes": size, **({"strategy": config.distributed.strategy} if size > 1 else {}),
            "effective_batch": batch * size * steps, "per_device_batch": batch, "accumulation_steps": steps}


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The figures a run list shows: test metrics with their baselines, each slice's, the best validation metric,
    costs."""
    from tuneforge.evaluation.slices import tracked as slice_figures

    out: dict[str, float] = {}
    test = metrics.get("test", {})
    for name in headline_metrics():
        if isinstance(test.get("finetuned", {}).get(name), (int, float)):
            out[f"test_{name}"] = test["finetuned"][name]
            for baseline, figures in test.get("baselines", {}).items():
                if isinstance(figures.get(name), (int, float)):
                    out[f"test_{name}_{baseline}"] = figures[name]
    out.update(slice_figures(test))
    best = metrics.get("validation", {}).get("best_metric")
    if best is not None:
        out["validation_best"] = best
    for key in ("train_seconds", "global_steps"):
        if key in metrics.get("training", {}):
            out[key] = metrics["training"][key]
    out["seconds"] = metrics.get("seconds", 0.0)
    return out


def _trim_log(path: Path, checkpoint: str | None) -> None:
    """On resume, forget log lines written after the checkpoint (those steps are trained again)."""
    if not path.exists():
        return
    step = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    lines = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def portable_base(resolved: Any, revision: str | None = None) -> dict[str, Any]:
    """How another machine finds the base: the name the run was given (a hub id or an offline short name, not this
    machine's cache path) and, for a GGUF file, its sha256 (the cached conversion is rebuilt from it)."""
    import hashlib

    base: dict[str, Any] = {"name": resolved.name, "source": resolved.source,
                            **({"revision": revision} if revision else {})}
    if resolved.gguf_file:
        digest = hashlib.sha256()
        with open(resolved.gguf_source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        base.update(gguf_file=resolved.gguf_file, sha256=digest.hexdigest())
    return base


def save_model(model: Any, tokenizer: Any, target: Path, base_path: str, config: RunConfig,
               labels: list[str], extra: dict[str, Any] | None = None) -> None:
    """HF format: a peft adapter (adapter_config.json + adapter_model.safetensors) or a full model; with the
    tokenizer and ``tuneforge.json`` (task, base model, labels, template, the precision it computes in) so that
    predict/generate need nothing else."""
    staging = target.with_name(target.name + ".partial")
    from tuneforge.methods.registry import save_trained
    from tuneforge.models.precision import precision_of

    from tuneforge.tasks.registry import task_spec

    shutil.rmtree(staging, ignore_errors=True)
    save_trained(model, config.method, staging)
    tokenizer.save_pretrained(staging)
    task = task_spec(config.model.task)
    head = {"auto_class": task.auto_class, **({"num_labels": len(labels)} if task.labelled_head and labels else {})}
    atomic_write_json(staging / "tuneforge.json", {"task": config.model.task, "base_model": base_path, **head,
                                                   "method": config.method.name, "labels": labels,
                                                   "method_config": config.method.model_dump(mode="json"),
                                                   "max_length": config.data.max_length,
                                                   "precision": precision_of(model),
                                                   **(extra or {})})
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


