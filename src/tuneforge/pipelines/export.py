"""``tuneforge export RUN_DIR --output DIR``: the merged (or copied) HF model; ``--format gguf``: see export_gguf."""

from __future__ import annotations

from tuneforge.export.merge import export_run

__all__ = ["export_run"]
