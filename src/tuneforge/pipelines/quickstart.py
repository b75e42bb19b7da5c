"""``tuneforge quickstart``: the embedded default job, fine-tuning MiniLM on BBC News topics on the CPU."""

from __future__ import annotations

from pathlib import Path

from tuneforge.config.loader import load_config, preset_path
from tuneforge.pipelines.finetune import RunResult, finetune


def quickstart(output: str | Path | None = None, overrides: list[str] | None = None) -> RunResult:
    config = load_config(preset_path("quickstart"), overrides)
    return finetune(config, output=output)
