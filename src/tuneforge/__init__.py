"""tuneforge: fine-tune a pretrained model on your data and evaluate it honestly against baselines.

The library API mirrors the CLI: ``load_config`` (config validate/show), ``finetune`` (train),
``quickstart``, ``load_predictor`` / ``predict_file`` (predict). Heavy packages are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "UserError", "finetune", "load_config", "load_predictor", "predict_file", "quickstart"]

_LAZY = {
    "RunConfig": "tuneforge.config.schema",
    "load_config": "tuneforge.config.loader",
    "finetune": "tuneforge.pipelines.finetune",
    "quickstart": "tuneforge.pipelines.quickstart",
    "load_predictor": "tuneforge.pipelines.predict",
    "predict_file": "tuneforge.pipelines.predict",
    "UserError": "tuneforge.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
