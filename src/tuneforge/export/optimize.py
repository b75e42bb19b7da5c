"""One optimized variant of a run's model: the standalone fp32 model (an adapter merged into its base), optionally
pruned (calibrated on the run's own training split), optionally quantized, written as a model folder that
``predict``/``generate``/``serve`` load like any run's (its tuneforge.json records what was done)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json

CALIBRATION_EXAMPLES = 64  # training examples whose activations score the weights (Wanda used 128 of 2048 tokens)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "tokenizer.model", "chat_template.jinja", "merges.txt", "vocab.json", "added_tokens.json")


def run_config(run_dir: Path) -> Any:
    from tuneforge.config.loader import load_config

    path = run_dir / "config.yaml"
    if not path.exists():
        raise UserError(f"{run_dir}: no config.yaml (optimize reads the run's data through it); give the folder that "
                        f"tuneforge train wrote")
    return load_config(path)


def prepared_data(run_dir: Path, model_dir: Path, config: Any) -> tuple[Any, Any]:
    """The run's data as its task prepared it (the same split, read through the run's tokenizer)."""
    from transformers import AutoTokenizer

    from tuneforge.models.assets import resolve_model
    from tuneforge.tasks.registry import task_spec

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    resolved = resolve_model(config.model.name, config.model.revision)
    return task_spec(config.model.task).call("prepare", config, tokenizer, resolved), tokenizer


def calibration_sample(prepared: Any, n: int = CALIBRATION_EXAMPLES) -> list[list[int]]:
    items = list(prepared.train)[:n]
    return [list(item["input_ids"] if isinstance(item, dict) else item.input_ids) for item in items]


def standalone(run_dir: Path, model_dir: Path, meta: dict[str, Any], target: Path) -> Path:
    """The run's model as one fp32 HF folder: a full model's own folder, an adapter merged into its base."""
    if (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        return model_dir
    from tuneforge.export.merge import MERGEABLE, export_run

    if meta.get("method") not in MERGEABLE:
        raise UserError(f"method {meta.get('method')} keeps its own layers outside the weights, so there is no "
                        f"standalone model to optimize (mergeable: {', '.join(MERGEABLE)}, or a full/freeze run)")
    return Path(export_run(run_dir, target, merge=True)["output"])


def build_variant(run_dir: str | Path, output: str | Path, quantize: str | None = None, prune: str | None = None,
                  sparsity: float = 0.5, log: Callable[[str], None] = print,
                  prepared: Any = None, precision: str | None = None, merged: Path | None = None) -> dict[str, Any]:
    """Write the variant to ``output`` (atomically); returns what was done. ``precision`` alone: the unoptimized
    standalone model, computing in that precision (the table's reference rows). ``merged``: the run's standalone
    model made once already (see :func:`standalone`), for a table of many variants."""
    from tuneforge.export.quantize import check_quantizer
    from tuneforge.models.loading import quiet_libraries
    from tuneforge.tasks.run_folder import read_model_meta

    quiet_libraries()

    if quantize is None and prune is None and precision is None:
        raise UserError("nothing to do: give --quantize and/or --prune (or --compare for the table of all of them)")
    run_dir, output = Path(run_dir), Path(output)
    model_dir, meta = read_model_meta(run_dir)
    if quantize is not None:
        check_quantizer(quantize)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=staging.parent) as scratch:
            source = merged or standalone(run_dir, model_dir, meta, Path(scratch) / "merged")
            facts = _build(run_dir, model_dir, meta, source, Path(scratch), staging, quantize, prune, sparsity, log,
                           prepared, precision)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return {**facts, "output": str(output)}


def _build(run_dir: Path, model_dir: Path, meta: dict[str, Any], source: Path, scratch: Path, staging: Path,
           quantize: str | None, prune: str | None, sparsity: float, log: Callable[[str], None], prepared: Any,
           precision: str | None) -> dict[str, Any]:
    import torch

    from tuneforge.export.merge import auto_class_of
    from tuneforge.export.quantize import quantize_folder

    auto, _ = auto_class_of(meta)
    facts: dict[str, Any] = {"source_run": str(run_dir.resolve())}
    if prune is not None:
        from tuneforge.export.prune import prune as prune_model

        if prepared is None:
            prepared, _ = prepared_data(run_dir, model_dir, run_config(run_dir))
        model = auto.from_pretrained(str(source), dtype=torch.float32).eval()
        log(f"pruning ({prune}, {sparsity:.0%}) calibrated on {CALIBRATION_EXAMPLES} training examples")
        facts.update(prune_model(model, prune, sparsity, calibration_sample(prepared)))
        model.save_pretrained(str(scratch / "pruned"))
        _copy_tokenizer(source, scratch / "pruned")
        source = scratch / "pruned"
    if quantize is not None:
        log(f"quantizing ({quantize})")
        from tuneforge.tasks.registry import task_spec
        from tuneforge.tasks.run_folder import task_of

        skip = task_spec(task_of(meta)).head_modules
        facts.update(quantize_folder(source, staging, auto, quantize, skip))
    else:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("tuneforge.json", "export.json", "*.lock"))
    _copy_tokenizer(source, staging)
    record = {**meta, "method": "full", "merged_from": meta.get("merged_from") or meta.get("method"),
              "optimized": facts}
    # fp32 unless told: quantized kernels set their own arithmetic (no autocast around them), and a pruned model is
    # compared with the fp32 original on what pruning changed alone (--compare has a bf16 row of its own)
    record["precision"] = precision or "fp32"
    atomic_write_json(staging / "tuneforge.json", record)
    return facts


def _copy_tokenizer(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists() and not (target / name).exists():
            shutil.copy2(source / name, target / name)


def folder_bytes(folder: Path) -> int:
    """What the variant costs on disk: its weights and config (tokenizer files are the same for every variant)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in TOKENIZER_FILES)
