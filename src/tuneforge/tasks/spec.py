"""What a task is: its spec and the call that registers it. Imports no torch and no task module."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
COSTS = ("trainable_params", "train_seconds")  # search objectives that are costs, not validation metrics


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    baselines: tuple[str, ...]  # scored on the same test split; all of them by default
    selection: tuple[str, ...]  # validation metrics that select the best checkpoint and drive a search; first: default
    headline: tuple[str, ...]  # the one test metric a summary shows: the first one a run has
    shown: tuple[str, ...]  # test metrics of the console summary
    auto_class: str  # the transformers Auto class of its model (export, predictors)
    labelled_head: bool  # its head is sized by the run's labels (classes or tags)
    next_token_loss: bool  # a decoder's next-token loss (the LM head computed at labelled positions only)
    generates: bool  # its model writes text (generate, chat), rather than labelling it (predict)
    inputs: tuple[str, ...]  # what its predictor reads per example: ("text",), or ("question", "context")
    # what the layers below read of a task (methods, planning, loading: they are handed the spec, never the name)
    peft_task_type: str  # peft's TaskType name for this head
    head_modules: tuple[str, ...]  # names of the task head's modules: trained fully, never adapted
    per_token_head: bool  # the head reads every position (tags, answer start/end): nothing may shift them
    vocabulary_head: bool  # an LM head over the vocabulary (generative), else a small head
    head_size: int | None  # the head's outputs when the labels do not size it (QA: start and end)
    windows: bool  # long inputs are read in overlapping windows (data.doc_stride)
    # the recipe's steps that differ (pipelines/finetune.py runs them in order), each a "module:function":
    prepare: str  # (config, tokenizer, resolved) -> Prepared: records read, checked, split, encoded
    load_model: str  # (resolved, prepared, config, tokenizer) -> the base model with the task's head
    trainer_parts: str  # (model, tokenizer, prepared, config) -> TrainerParts: collator, validation metrics
    evaluate: str  # (model, tokenizer, prepared, config, run_dir, resolved) -> {"test": ...} against the baselines
    report: str  # (run_dir, metrics, data_report, params, log) -> HTML parts of report.html
    predictor: str  # (model_dir, meta, precision) -> an object with the task's predict method
    # endings of the pretrained architectures it can start from (e.g. "ForCausalLM"); empty: any model
    architectures: tuple[str, ...] = ()
    needs: str = ""  # what a model that does not fit lacks, in words
    class_weighted: bool = False  # train.class_weights applies (a loss over classes of whole examples)
    augments: bool = False  # data.augment applies (copies of training examples; tagged words: span-keeping ones)
    slices: bool = False  # evaluation.slices applies (per-slice test metrics, fairness figures)
    # the monitor watches its served traffic (a labelled text reference rebuilt from the run's data) and retrain
    # learns its labelled feedback
    monitored: bool = False
    starter: tuple[str, str, str] = ("minilm", "data/train.jsonl", "")  # tuneforge init: model, data, data's shape
    starter_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # more sections a starter writes
    # optimize --compare: (model, tokenizer, prepared, config) -> a variant's test outputs (JSON-able), and
    # (reference outputs, variant outputs, config) -> its figures; empty: the task has no table of variants yet
    variant_outputs: str = ""
    variant_figures: str = ""

    def check_model(self, name: str, path: str, revision: str | None = None) -> None:
        """Refuse, before anything loads, a model that cannot do this task (an encoder-only model for a decoder's
        task) or cannot be found (not a folder, not an offline short name, not in the Hugging Face cache when
        offline). Reads only the model's config.json (no torch)."""
        from tuneforge.errors import UserError

        config = model_config_json(name, path, revision)
        found = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
        if self.architectures and found and not any(a.endswith(self.architectures) for a in found):
            raise UserError(f"model {name!r} is a {found[0]}, but task {self.name} needs {self.needs}; choose such "
                            f"a model, or a task this model can do (model.task)")

    def headline_of(self, figures: dict[str, Any]) -> str:
        """The headline metric that ``figures`` (a model's test metrics) has."""
        return next((m for m in self.headline if figures.get(m) is not None), self.headline[0])

    def call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        return resolve(getattr(self, hook))(*args, **kwargs)


def model_config_json(name: str, path: str, revision: str | None = None) -> dict[str, Any]:
    """A model's config.json: from its folder, else from the Hugging Face hub (or its cache, offline)."""
    import json
    from pathlib import Path

    from tuneforge.errors import UserError

    local = Path(path) / "config.json"
    try:
        if local.exists():
            return json.loads(local.read_text(encoding="utf-8"))
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "config.json", revision=revision)).read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - not found, offline and not cached, unreadable: one line each
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"model {name!r}: cannot read its config.json ({detail}); give a model folder, an offline "
                        f"short name (minilm, smollm2-135m) or a hub id that is downloaded or reachable") from None


@dataclass
class Prepared:
    """What a task's data step hands the recipe."""

    train: list[Any]  # encoded training items (or packed rows)
    validation: list[Any]
    labels: list[str]  # classes or tags (empty for tasks without a labelled head)
    report: dict[str, Any]  # data_report.json
    summary: str  # the console line about the data
    data: Any  # the task's own data object, for its evaluation
    meta: dict[str, Any] = field(default_factory=dict)  # more for model/tuneforge.json (template, stride, ...)
    training: dict[str, Any] = field(default_factory=dict)  # more for metrics.json's training section
    tracked: dict[str, float] = field(default_factory=dict)  # more metrics for the tracker
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # what else the task's later steps need


@dataclass
class TrainerParts:
    """What a task adds to the Trainer (see ``training.engine.build_trainer``)."""

    collator: Any = None  # None: pad to the longest in the batch
    metrics_fn: Any = None  # (label_ids, logits) -> validation metrics; None: a classifier's, from num_labels
    num_labels: int = 0
    exact_token_loss: bool = True  # False for a model whose loss ignores num_items_in_batch
    setup: Any = None  # (trainer) -> None, for a task that needs more of the Trainer
    group_by_length: bool = False  # default of train.group_by_length: a loss per token in unpacked batches
    class_weights: list[float] | None = None  # weighted cross-entropy over the labels, in label order
    # a task trained by another library's Trainer (TRL's preference trainers): its arguments class (a TrainingArguments
    # subclass) with its own fields, and (model, args, train_dataset, eval_dataset, processing_class, callbacks) ->
    # the trainer; the engine still sets the schedule, precision, checkpoints, resume, logs and callbacks
    arguments: Any = None
    argument_fields: dict[str, Any] = field(default_factory=dict)
    trainer: Any = None
    trained_model: Any = None  # (trainer) -> the model to save, when it is not trainer.model (PPO: the policy)
    resumable: bool = True  # whether the trainer continues from a checkpoint (TRL's PPO loop does not)


TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> None:
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    TASKS[spec.name] = spec


def resolve(reference: str) -> Callable[..., Any]:
    module_name, _, function = reference.partition(":")
    return getattr(importlib.import_module(module_name), function)


def direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER or metric in COSTS else "maximize"


STEPS = ("prepare", "load_model", "trainer_parts", "evaluate", "predictor")


def steps(module: str, **renamed: str) -> dict[str, str]:
    """The step references of a task whose steps are functions of ``module`` named after the step (``renamed``:
    step -> another function name)."""
    return {step: f"{module}:{renamed.get(step, step)}" for step in STEPS}
