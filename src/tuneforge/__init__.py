"""tuneforge: fine-tune a pretrained model on your data and evaluate it honestly against baselines.

The library API mirrors the CLI: ``load_config`` (config validate/show), ``finetune`` (train), ``quickstart``,
``load_predictor`` / ``predict_file`` (predict), ``load_generator`` (generate, chat), ``tune`` (search),
``export_run`` (export), ``compare_methods``, ``evaluate_saved_run`` (score a saved run on its test split),
``available_tasks`` / ``task_spec``, ``available_methods`` and ``serve`` (a server in the background). Heavy packages are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "UserError", "available_methods", "available_tasks", "compare_methods", "evaluate_saved_run",
           "export_run", "finetune", "load_config", "load_generator", "load_predictor", "predict_file", "quickstart",
           "serve", "task_spec", "tune"]

_LAZY = {
    "RunConfig": "tuneforge.config.schema",
    "load_config": "tuneforge.config.loader",
    "finetune": "tuneforge.pipelines.finetune",
    "quickstart": "tuneforge.pipelines.quickstart",
    "load_predictor": "tuneforge.pipelines.predict",
    "predict_file": "tuneforge.pipelines.predict",
    "UserError": "tuneforge.errors",
    "load_generator": "tuneforge.pipelines.generate",
    "tune": "tuneforge.pipelines.tune",
    "export_run": "tuneforge.pipelines.export",
    "compare_methods": "tuneforge.pipelines.compare_methods",
    "evaluate_saved_run": "tuneforge.pipelines.evaluate",
    "available_tasks": "tuneforge.tasks.registry",
    "task_spec": "tuneforge.tasks.registry",
    "available_methods": "tuneforge.methods.registry",
    "serve": "tuneforge.serve.server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
