"""The task registry: a name -> :class:`TaskSpec`, one module per task. No scanning, no magic imports.

A task spec holds what differs between tasks, so that nothing outside ``tasks/`` branches on a task's name: the
baselines it is scored against, the validation metrics that may select checkpoints and drive a search, its headline
test metric (for summaries, run lists, compare-methods and search reports), the transformers class of its model and
where its recipe, test scoring, report sections and predictor live (``"module:function"``, imported on first use).
This module imports no torch, so configs validate instantly.
"""

from __future__ import annotations

from tuneforge.tasks import causal_lm, question_answering, seq2seq  # noqa: F401  (each registers itself)
from tuneforge.tasks import sequence_classification, token_classification  # noqa: F401
from tuneforge.tasks import preference  # noqa: F401
from tuneforge.tasks.spec import COSTS, LOWER_IS_BETTER, TASKS, TaskSpec, direction, register, resolve  # noqa: F401

ORDER = ("sequence-classification", "token-classification", "question-answering", "causal-lm", "seq2seq",
         "reward-model", "dpo", "kto", "orpo", "grpo", "ppo")


def available_tasks() -> list[str]:
    """The registered tasks, the built-in ones in the order of the docs, then any added later."""
    return sorted(TASKS, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (allowed: {', '.join(available_tasks())})")
    return TASKS[name]


def all_specs() -> list[TaskSpec]:
    return [TASKS[name] for name in available_tasks()]
