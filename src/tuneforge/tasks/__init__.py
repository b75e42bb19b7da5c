"""Tasks: one module per task, registered by name (see :mod:`tuneforge.tasks.registry`)."""

from tuneforge.tasks.registry import TaskSpec, available_tasks, register, task_spec

__all__ = ["TaskSpec", "available_tasks", "register", "task_spec"]
