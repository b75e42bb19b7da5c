"""Load a trained run's model folder, whatever the method saved: a peft adapter (loaded on its base model), a
tuneforge bottleneck adapter (``tuneforge_adapter.json``, re-applied to its base) or a full model."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_trained(model_dir: Path, meta: dict[str, Any], auto: Any, precision: str | None = None,
                 **base_kwargs: Any) -> Any:
    """``meta`` is the folder's tuneforge.json; ``auto`` the transformers Auto class of the task; ``base_kwargs``
    size the base (e.g. num_labels). The base loads as in training (QLoRA: quantized the same way) and computes in
    the precision the run evaluated in (``precision`` overrides it), so its outputs reproduce the run's."""
    from tuneforge.models.loading import quiet_libraries
    from tuneforge.models.precision import compute_in, recorded_precision

    quiet_libraries()
    return compute_in(_load(model_dir, meta, auto, **base_kwargs), recorded_precision(meta, precision))


def _load(model_dir: Path, meta: dict[str, Any], auto: Any, **base_kwargs: Any) -> Any:
    if "method_config" in meta:
        from tuneforge.methods.registry import load_kwargs, validate_method

        base_kwargs = {**base_kwargs, **load_kwargs(validate_method(meta["method_config"]))}

    from tuneforge.models.first_token import first_token_only

    def base() -> Any:
        from tuneforge.models.assets import base_path

        model = auto.from_pretrained(base_path(meta), **base_kwargs)
        first_token_only(model)  # as in training: the last layer computes only the position a classifier reads
        if meta.get("method") == "qlora":  # the same 4-bit kernels as in training, so outputs reproduce exactly
            from tuneforge.methods.qlora import keep_training_layout

            keep_training_layout(model)
        return model

    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(base(), str(model_dir))
    if (model_dir / "tuneforge_adapter.json").exists():
        from tuneforge.methods.adapter_layers import load_adapter

        return load_adapter(base(), model_dir)
    from tuneforge.models.quantized import quantize_on_load

    model = auto.from_pretrained(str(model_dir))
    first_token_only(model)
    return quantize_on_load(model, meta)  # an optimized folder whose quantization has no saved form


def load_adapters(base_model: str, auto: Any, adapters: dict[str, Path], precision: str) -> Any:
    """One copy of ``base_model`` with several LoRA adapters loaded by name (``adapters``: name -> folder), for
    mixed-adapter batches (``adapter_names`` in generate); computes in ``precision``."""
    from peft import PeftModel

    from tuneforge.models.precision import compute_in

    (first, folder), *rest = adapters.items()
    model = PeftModel.from_pretrained(auto.from_pretrained(base_model), str(folder), adapter_name=first)
    for name, folder in rest:
        model.load_adapter(str(folder), adapter_name=name)
    return compute_in(model, precision)
