"""The task registry: a name -> :class:`TaskSpec`, one module per task. No scanning, no magic imports.

A task spec holds what differs between tasks, so that nothing outside ``tasks/`` branches on a task's name: the
baselines it is scored against, the validation metrics that may select checkpoints and drive a search, its headline
test metric (for summaries, run lists, compare-methods and search reports), the transformers class of its model and
where its recipe, test scoring, report sections and predictor live (``"module:function"``, imported on first use).
This module imports no torch, so configs validate instantly.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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
    group_by_length: bool  # a loss per token: batches of similar length waste less padding (unless packed)
    next_token_loss: bool  # a decoder's next-token loss (the LM head computed at labelled positions only)
    generates: bool  # its model writes text (generate, chat), rather than labelling it (predict)
    inputs: tuple[str, ...]  # what its predictor reads per example: ("text",), or ("question", "context")
    recipe: str  # run(config, run_dir, resume, log, evaluate_test, callbacks, tracker, quiet) -> metrics
    evaluate_saved: str  # (run_dir, config) -> test metrics of a finished run's saved model (a search's best trial)
    report: str  # (run_dir, metrics, data_report, params, log) -> HTML parts of report.html
    predictor: str  # (model_dir, meta, precision) -> an object with the task's predict method

    def headline_of(self, figures: dict[str, Any]) -> str:
        """The headline metric that ``figures`` (a model's test metrics) has."""
        return next((m for m in self.headline if figures.get(m) is not None), self.headline[0])

    def call(self, hook: str, *args: Any, **kwargs: Any) -> Any:
        return resolve(getattr(self, hook))(*args, **kwargs)


_TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> None:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is registered twice")
    _TASKS[spec.name] = spec


def available_tasks() -> list[str]:
    _load_builtin()
    return list(_TASKS)


def task_spec(name: str) -> TaskSpec:
    _load_builtin()
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r} (allowed: {', '.join(_TASKS)})")
    return _TASKS[name]


def all_specs() -> list[TaskSpec]:
    _load_builtin()
    return list(_TASKS.values())


def resolve(reference: str) -> Callable[..., Any]:
    module_name, _, function = reference.partition(":")
    return getattr(importlib.import_module(module_name), function)


def direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER or metric in COSTS else "maximize"


_BUILTIN_LOADED = [False]


def _load_builtin() -> None:
    """Import the built-in task modules once (each registers itself)."""
    if not _BUILTIN_LOADED[0]:
        _BUILTIN_LOADED[0] = True
        from tuneforge.tasks import sequence_classification  # noqa: F401  (the order of listings)
        from tuneforge.tasks import token_classification  # noqa: F401
        from tuneforge.tasks import question_answering  # noqa: F401
        from tuneforge.tasks import causal_lm  # noqa: F401
        from tuneforge.tasks import seq2seq  # noqa: F401
