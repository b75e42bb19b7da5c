"""QLoRA: the base model's linear weights quantized to 4-bit NF4 (with double quantization) or 8-bit by
bitsandbytes at load time, prepared for k-bit training, with LoRA adapters on top (peft). bitsandbytes 0.50
runs on the CPU as well as on CUDA. The adapter saves in peft's format; it loads on the full-precision base
for inference or merging (merging into 4-bit weights would lose quality)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tuneforge.methods.lora import LoraConfig
from tuneforge.methods.lora import apply as apply_lora
from tuneforge.methods.spec import MethodSpec, register

if TYPE_CHECKING:
    import torch


class QLoraConfig(LoraConfig):
    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="Quantize base weights to 4-bit (NF4/FP4) or 8-bit (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: NF4 (normal float) or FP4.")
    double_quant: bool = Field(True, description="Also quantize the quantization constants (saves ~0.4 bit/param).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Dtype of the matmuls on dequantized weights; auto: bfloat16 on GPUs that support it, "
        "else float32.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (less "
                                         "memory, ~30% slower).")


HEADS = ["classifier", "score", "qa_outputs", "lm_head"]  # task heads stay in full precision (they train)


def quantization_config(config: QLoraConfig) -> Any:
    from transformers import BitsAndBytesConfig

    if config.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=HEADS)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                              bnb_4bit_use_double_quant=config.double_quant,
                              bnb_4bit_compute_dtype=_compute_dtype(config.compute_dtype),
                              llm_int8_skip_modules=HEADS)


def _compute_dtype(name: str) -> torch.dtype:
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def load_kwargs(config: QLoraConfig) -> dict[str, Any]:
    """What ``from_pretrained`` needs to load the base already quantized."""
    import torch

    return {"quantization_config": quantization_config(config),
            "device_map": {"": 0} if torch.cuda.is_available() else {"": "cpu"}}


def apply(model: torch.nn.Module, config: QLoraConfig, task: Any) -> torch.nn.Module:
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    keep_training_layout(model)
    return apply_lora(model, config, task)


def keep_training_layout(model: torch.nn.Module) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for its CPU inference kernel on the first forward in eval mode
    and does not undo it when training resumes, after which the backward pass breaks (or is wrong). Training
    alternates with validation, so keep the layout that both understand."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


register(MethodSpec("qlora", QLoraConfig, "tuneforge.methods.qlora:apply",
                    "LoRA on a 4-bit NF4 (double-quantized) or 8-bit base model (bitsandbytes; CPU or CUDA).",
                    load="tuneforge.methods.qlora:load_kwargs", learning_rates=(2e-3, 2e-4)))
