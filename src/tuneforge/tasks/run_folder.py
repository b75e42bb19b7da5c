"""A trained run's model folder and its ``tuneforge.json`` (task, base model, labels, precision ...)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tuneforge.errors import UserError


def read_model_meta(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The model folder of a run (or the folder itself) and its ``tuneforge.json``, checked before anything loads:
    a damaged folder (no or unreadable tuneforge.json, no weights, no tokenizer) is one line naming what is
    missing, not a traceback from deep inside a loader."""
    model_dir = Path(run_dir)
    if (model_dir / "model").is_dir():
        model_dir = model_dir / "model"
    meta_path = model_dir / "tuneforge.json"
    if not meta_path.exists():
        raise UserError(f"{run_dir}: not a tuneforge run folder (no model/tuneforge.json); give the folder that "
                        f"tuneforge train wrote")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UserError(f"{meta_path}: unreadable ({str(exc).splitlines()[0][:80] or 'empty'}); the run folder is "
                        f"damaged: train again or restore model/ from a copy") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("base_model", ""), str):
        raise UserError(f"{meta_path}: not a tuneforge model record (expected an object with task, base_model, "
                        f"labels); the run folder is damaged: train again or restore it")
    missing = [what for what, names in REQUIRED.items() if not any((model_dir / n).exists() for n in names)]
    if missing:
        raise UserError(f"{model_dir}: no {' and no '.join(missing)} (looked for {', '.join(REQUIRED[missing[0]])}); "
                        f"the run folder is damaged: train again or restore model/ from a copy")
    return model_dir, meta


REQUIRED = {  # what every saved model folder holds, by any of these names
    "weights": ("adapter_model.safetensors", "adapter_model.bin",
                "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model"),
}


@contextmanager
def loading(model_dir: Path) -> Iterator[None]:
    """Load a model folder whose files exist but may not load (truncated weights, a broken tokenizer file, a base
    model that is not on this machine): any such failure becomes one line naming the folder (the original error
    stays chained for ``--debug``)."""
    from safetensors import SafetensorError

    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{model_dir}: the saved model does not load ({type(exc).__name__}: {detail}); if a file "
                        f"is truncated or missing, train again or restore model/ from a copy") from exc


def task_of(record: dict[str, Any]) -> str:
    """The task a run folder's ``tuneforge.json`` or ``metrics.json`` names; folders written before the task was
    recorded hold a classification run."""
    return str(record.get("task") or LEGACY_TASK)


LEGACY_TASK = "sequence-classification"
