"""Post-training quantization of a standalone HF model folder (fp32 weights), into a folder that loads with
``from_pretrained`` like any model (the quantization is recorded in its config.json), except torch's dynamic int8,
which has no saved form in transformers: its folder keeps the fp32 weights and is quantized when loaded.

Measured on this CPU (MiniLM classifier, SmolLM2-135M): torchao's int8 weight-only and int8 dynamic-activation
configs and bitsandbytes' int8 and NF4 run and round-trip through save_pretrained; torch's ``quantize_dynamic`` runs
but its modules do not save. bitsandbytes' 4-bit CPU kernels repack their weights on the first forward, after which
save_pretrained writes the repacked layout wrongly: the folder is saved before any forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import UserError


@dataclass(frozen=True)
class Quantizer:
    name: str
    description: str
    library: str
    config: Callable[[tuple[str, ...]], Any] | None  # (modules kept in float) -> a transformers quantization_config;
    # None: applied when loaded


def _torchao(kind: str) -> Callable[[tuple[str, ...]], Any]:
    def make(skip: tuple[str, ...]) -> Any:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig() if kind == "weight" else Int8DynamicActivationInt8WeightConfig(),
                             modules_to_not_convert=list(skip) or None)

    return make


def _bnb(bits: int) -> Callable[[tuple[str, ...]], Any]:
    def make(skip: tuple[str, ...]) -> Any:
        import torch
        from transformers import BitsAndBytesConfig

        if bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip) or None)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                                  llm_int8_skip_modules=list(skip) or None)

    return make


QUANTIZERS = {q.name: q for q in (
    Quantizer("int8", "int8 weights, float activations (torchao Int8WeightOnly)", "torchao", _torchao("weight")),
    Quantizer("int8-dynamic", "int8 weights and activations quantized per batch (torchao Int8DynamicActivation"
                              "Int8Weight)", "torchao", _torchao("dynamic")),
    Quantizer("torch-int8-dynamic", "torch.ao quantize_dynamic of every Linear (applied when loaded)", "torch", None),
    Quantizer("bnb-int8", "bitsandbytes LLM.int8()", "bitsandbytes", _bnb(8)),
    Quantizer("nf4", "bitsandbytes 4-bit NormalFloat, float32 compute", "bitsandbytes", _bnb(4)),
)}


def check_quantizer(name: str) -> Quantizer:
    if name not in QUANTIZERS:
        raise UserError(f"--quantize {name}: unknown (choose from {', '.join(QUANTIZERS)})")
    quantizer = QUANTIZERS[name]
    if quantizer.library == "torchao":
        try:
            import torchao  # noqa: F401
        except ImportError:
            raise UserError(f"--quantize {name} needs torchao: pip install torchao") from None
    return quantizer


def quantize_folder(source: Path, target: Path, auto: Any, name: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``source`` (an fp32 HF folder) quantized into ``target`` (weights and config only; the caller adds the rest);
    ``skip``: modules kept in float (the task's small head: a 5-way classifier is too narrow for 4-bit kernels and
    costs nothing to keep). Returns what was done, for tuneforge.json."""
    import shutil

    quantizer = check_quantizer(name)
    if quantizer.config is None:  # torch's dynamic int8: the weights stay, the loader quantizes
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file():
                shutil.copy2(path, target / path.name)
        return {"quantize": name, "on_load": True}
    model = auto.from_pretrained(str(source), quantization_config=quantizer.config(skip), device_map="cpu")
    model.save_pretrained(str(target))  # before any forward (see the module's note on bitsandbytes' 4-bit)
    return {"quantize": name, "on_load": False}
