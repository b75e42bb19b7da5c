"""``tuneforge quickstart``: the embedded default jobs on the CPU: MiniLM on BBC News topics (classification),
or SmolLM2-135M-Instruct instruction-tuned on chatterbot-corpus Q/A pairs (chat)."""

from __future__ import annotations

from pathlib import Path

from tuneforge.config.loader import load_config, preset_path
from tuneforge.pipelines.finetune import RunResult, finetune


PRESETS = {"classification": "quickstart", "chat": "quickstart-chat"}


def quickstart(output: str | Path | None = None, overrides: list[str] | None = None,
               task: str = "classification") -> RunResult:
    config = load_config(preset_path(PRESETS[task]), overrides)
    return finetune(config, output=output)
