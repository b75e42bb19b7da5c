"""A tuneforge run folder used as a base model: how stages chain (sft -> dpo, sft -> reward-model -> ppo).

The run's trained model is merged once (a LoRA adapter folded into its base, in fp32) into a cached Hugging Face
folder with the run's tokenizer and its ``tuneforge.json`` as ``parent_tuneforge.json`` (template, stop tokens,
system prompt); a full model is read where it is. The cache is keyed by the run's model folder and its weights, so a
retrained parent is merged again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json, cache_dir

PARENT_META = "parent_tuneforge.json"


def is_run_folder(path: Path) -> bool:
    return (path / "model" / "tuneforge.json").is_file()


def merged_run_path(folder: Path, base_of: Callable[[dict[str, Any]], str]) -> str:
    """The folder from_pretrained reads for the run's model (merged into the cache when it is an adapter);
    ``base_of`` finds a run's base model on this machine from its ``tuneforge.json``."""
    model_dir = folder / "model"
    meta = json.loads((model_dir / "tuneforge.json").read_text(encoding="utf-8"))
    if (model_dir / "config.json").exists():  # a full model: already a Hugging Face folder (read where it is)
        return str(model_dir)
    if not (model_dir / "adapter_config.json").exists():
        raise UserError(f"{folder}: its model is a {meta.get('method')} adapter that cannot be merged into the base; "
                        f"export it merged first (tuneforge export {folder}) and use that folder")
    weights = sorted(model_dir.glob("adapter_model.*"))
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
    target = cache_dir() / "runs" / f"{folder.resolve().name}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    if not (target / "config.json").exists():
        _merge(model_dir, meta, base_of(meta), target)
    return str(target)


def _merge(model_dir: Path, meta: dict[str, Any], base: str, target: Path) -> None:
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    kwargs: dict[str, Any] = {"num_labels": meta["num_labels"]} if meta.get("num_labels") else {}
    if meta.get("labels") and len(meta["labels"]) == meta.get("num_labels"):  # classes or tags: their names too
        kwargs.update(id2label=dict(enumerate(meta["labels"])), label2id={l: i for i, l in enumerate(meta["labels"])})
    if meta.get("auto_class"):  # the run's own head (classes, tags, a reward model's score), recorded by its task
        auto = getattr(transformers, meta["auto_class"])
    else:
        architecture = (AutoConfig.from_pretrained(base).architectures or ["AutoModelForCausalLM"])[0]
        auto = getattr(transformers, architecture, transformers.AutoModelForCausalLM)
    try:
        model = PeftModel.from_pretrained(auto.from_pretrained(base, dtype=torch.float32, **kwargs), str(model_dir))
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{model_dir}: the run's model does not load to be merged ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]})") from exc
    merged = model.merge_and_unload()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    merged.save_pretrained(staging)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(staging)
    atomic_write_json(staging / PARENT_META, meta)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def parent_meta(path: str | Path) -> dict[str, Any]:
    """The ``tuneforge.json`` of the run a resolved model folder was merged from ({} for any other model)."""
    for name in (PARENT_META, "tuneforge.json"):  # a merged copy, or a full model's own run folder
        file = Path(path) / name
        if file.exists():
            return json.loads(file.read_text(encoding="utf-8"))
    return {}
