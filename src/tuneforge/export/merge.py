"""``tuneforge export RUN_DIR --merge --output DIR``: fold a LoRA/DoRA/IA3 adapter into its base model and
write a standalone Hugging Face model (plus tokenizer), checked against the unmerged model on sample inputs.

The exported folder keeps the run's ``tuneforge.json``, with the precision the run computed in: tuneforge readers
of the export compute in it as they do for the run. The merge itself is checked in fp32, where W + BA is exact to
float rounding.

QLoRA adapters were trained against the 4-bit base, so the base is loaded quantized as in training and
dequantized first, then the adapter is merged into those weights (merging into 4-bit weights loses quality).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json

MERGEABLE = ("lora", "qlora", "ia3")
TOLERANCE = 1e-4  # max |merged - unmerged| logit difference accepted (float32 rounding of W + BA) ...
RELATIVE_TOLERANCE = 2e-5  # ... or this share of the largest |logit|: float32 rounding grows with the logits' size
# (SmolLM2-135M's LM head, LoRA r16 merged: 1.3e-4, refused by the absolute bound alone)


def export_run(run_dir: str | Path, output: str | Path, merge: bool = True) -> dict[str, Any]:
    import torch

    model_dir = Path(run_dir) / "model" if (Path(run_dir) / "model").is_dir() else Path(run_dir)
    meta_path = model_dir / "tuneforge.json"
    if not meta_path.exists():
        raise UserError(f"{run_dir}: not a tuneforge run folder (no model/tuneforge.json)")
    meta = json.loads(meta_path.read_text())
    from tuneforge.models.precision import recorded_precision

    meta["precision"] = recorded_precision(meta)
    output = Path(output)
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if not merge:
        shutil.copytree(model_dir, staging)
        atomic_write_json(staging / "tuneforge.json", meta)
        return _finish(staging, output, {"merged": False, "method": meta["method"], "precision": meta["precision"]})
    if meta["method"] not in MERGEABLE:
        raise UserError(f"method {meta['method']} has nothing to merge into the weights (mergeable: "
                        f"{', '.join(MERGEABLE)}); export without --merge to copy the adapter")
    from transformers import AutoTokenizer

    auto, base_kwargs = auto_class_of(meta)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    unmerged = _load_adapter_model(model_dir, meta, auto, base_kwargs).eval()
    if getattr(unmerged.config, "pad_token_id", None) is None:  # a decoder scoring sequences finds their ends by it
        unmerged.config.pad_token_id = tokenizer.pad_token_id
    sample = tokenizer(["The quick brown fox jumps over the lazy dog.", "Hello"], padding=True, return_tensors="pt")
    inputs = _inputs(sample, unmerged)
    with torch.no_grad():
        before = _outputs(unmerged(**inputs))
        merged = unmerged.merge_and_unload()
        after = _outputs(merged(**inputs))
    difference = float((before - after).abs().max())
    allowed = max(TOLERANCE, RELATIVE_TOLERANCE * float(before.abs().max()))
    if difference > allowed:
        raise UserError(f"merged outputs differ from unmerged ones by {difference:.2e} (> {allowed:.2e}); "
                        f"export without --merge")
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    atomic_write_json(staging / "tuneforge.json", {**meta, "method": "full", "merged_from": meta["method"]})
    return _finish(staging, output, {"merged": True, "method": meta["method"], "max_abs_logit_difference": difference,
                                     "tolerance": allowed, "precision": meta["precision"]})


def _finish(staging: Path, output: Path, facts: dict[str, Any]) -> dict[str, Any]:
    atomic_write_json(staging / "export.json", facts)
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return {**facts, "output": str(output)}


def auto_class_of(meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The task's transformers class, and for a head sized by the run's labels (classes, tags) their names."""
    import transformers

    from tuneforge.tasks.registry import task_spec

    task = task_spec(meta["task"])
    auto = getattr(transformers, task.auto_class)
    if not task.labelled_head:  # a head of a fixed size (a reward model's one output), else the class's own
        return auto, ({"num_labels": task.head_size} if task.head_size == 1 else {})
    labels = meta["labels"]
    return auto, {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                  "label2id": {label: i for i, label in enumerate(labels)}}


def _load_adapter_model(model_dir: Path, meta: dict[str, Any], auto: Any, base_kwargs: dict[str, Any]) -> Any:
    import torch
    from peft import PeftModel

    from tuneforge.models.assets import base_path

    if meta["method"] == "qlora":
        from tuneforge.methods.registry import load_kwargs, validate_method

        method = validate_method(meta["method_config"])
        base = auto.from_pretrained(base_path(meta), **base_kwargs, **load_kwargs(method))
        base = base.dequantize().to(torch.float32)  # the 4-bit weights as training saw them, in full precision
    else:
        base = auto.from_pretrained(base_path(meta), **base_kwargs)
    return PeftModel.from_pretrained(base, str(model_dir))


def _inputs(sample: Any, model: Any) -> dict[str, Any]:
    inputs = {"input_ids": sample["input_ids"], "attention_mask": sample["attention_mask"]}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = sample["input_ids"][:, :4]
    return inputs


def _outputs(out: Any) -> Any:
    """Every head's outputs as one float tensor: logits, or a span head's start and end logits side by side."""
    import torch

    if getattr(out, "logits", None) is not None:
        return out.logits.float()
    return torch.cat([out.start_logits.float(), out.end_logits.float()], dim=-1)
