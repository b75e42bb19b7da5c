"""LoRA through peft (optionally rsLoRA scaling or DoRA)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tuneforge.config.schema import MethodConfig
from tuneforge.methods.spec import MethodSpec, TaskFacts, register

if TYPE_CHECKING:
    import torch



class LoraConfig(MethodConfig):
    name: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names to adapt, or all-linear; default: peft's choice for the architecture.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained fully and saved (the task head is added automatically).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    layers: list[int] | None = Field(
        None, description="Adapt only these transformer layers (0 = nearest the input, -1 = the last); the layers "
                          "below the lowest one then need no backward pass. Default: every layer.")


def apply(model: torch.nn.Module, config: LoraConfig, task: TaskFacts) -> torch.nn.Module:
    """LoRA through peft for the task's head type; the task head (``task.head_modules``) trains fully (peft's
    modules_to_save for the task type), so it never also gets an adapter."""
    import peft

    targets = config.target_modules
    if targets is None and getattr(model.config, "model_type", "") == "encoder-decoder":
        targets = ["query", "value"]  # peft has no default for a joined encoder-decoder: BERT's choice, both sides
    if config.layers is not None:
        targets = _layer_targets(model, targets, config.layers, list(task.head_modules))
    head = {"exclude_modules": list(task.head_modules)} if targets == "all-linear" and task.head_modules else {}
    peft_config = peft.LoraConfig(
        **head,  # the task head trains fully (modules_to_save); it must not also get an adapter
        task_type=task.peft_task_type,
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias=config.bias,
        modules_to_save=config.modules_to_save,
        use_rslora=config.use_rslora,
        use_dora=config.use_dora,
    )
    return peft.get_peft_model(model, peft_config)


def _layer_targets(model: torch.nn.Module, targets: list[str] | str | None, layers: list[int],
                   heads: list[str]) -> list[str]:
    """The full names of the linear modules to adapt: those matching ``targets`` inside the chosen transformer
    blocks or outside every block (a pooler), never the task head (peft's ``layers_to_transform`` does not
    combine with all-linear)."""
    import torch

    from tuneforge.methods.freeze import _layer_prefixes

    prefixes = _layer_prefixes(model)
    count = len(prefixes)
    wrong = [index for index in layers if not -count <= index < count]
    if not count or wrong:
        raise ValueError(f"method.layers: {wrong or layers} out of range for a model with {count} layers "
                         f"(use 0..{count - 1}, or -1 for the last)")
    chosen = [prefixes[index] for index in sorted({index % count for index in layers})]

    def wanted(name: str) -> bool:
        if any(name == h or name.startswith(f"{h}.") or f".{h}." in f".{name}." for h in heads):
            return False
        inside = [prefix for prefix in prefixes if f"{name}.".startswith(prefix)]
        if inside and inside[0] not in chosen:
            return False
        return targets in (None, "all-linear") or any(name == t or name.endswith(f".{t}") for t in targets)

    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and wanted(name)]
    if targets is None:  # peft's default for the architecture, restricted to the chosen layers
        import peft

        default = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(
            getattr(model.config, "model_type", ""))
        if default is None:
            raise ValueError("method.layers: set method.target_modules too (peft has no default for this model)")
        names = [name for name in names if name.rsplit(".", 1)[-1] in default]
    if not names:
        raise ValueError(f"method.layers: no linear modules matching target_modules={targets} in layers {layers}")
    return names


register(MethodSpec("lora", LoraConfig, "tuneforge.methods.lora:apply",
                    "Low-rank adapters on chosen linear layers (peft); DoRA and rsLoRA as options.",
                    learning_rates=(2e-3, 2e-4)))  # MiniLM on imbalanced tweets: 5e-4 learned nothing, 2e-3 did
