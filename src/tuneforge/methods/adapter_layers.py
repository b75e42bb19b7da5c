"""The bottleneck adapter's modules and its apply/save/load (torch): see :mod:`tuneforge.methods.adapter` for the
method, its config and its saved format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tuneforge.methods.adapter import CONFIG_FILE, FORMAT, VERSION, WEIGHTS_FILE, AdapterConfig  # noqa: F401
from tuneforge.methods.freeze import _head_prefixes

_ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}
# Block layouts, by structure: (Linear paths that must all exist, attention-output sites, feed-forward-output sites);
# a site that does not exist in a matched block (BERT's cross-attention outside a decoder) is skipped.
_LAYOUTS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (("attention.output.dense", "intermediate.dense", "output.dense"),  # BERT-style layer (RoBERTa, MiniLM, ...)
     ("attention.output.dense", "crossattention.output.dense"), ("output.dense",)),
    (("self_attn.o_proj", "mlp.down_proj"), ("self_attn.o_proj",), ("mlp.down_proj",)),  # Llama-style decoder layer
    (("SelfAttention.o",), ("SelfAttention.o",), ()),  # T5-style sub-layers
    (("EncDecAttention.o",), ("EncDecAttention.o",), ()),
    (("DenseReluDense.wo",), (), ("DenseReluDense.wo",)),
)


class Bottleneck(torch.nn.Module):
    """``x + up(act(down(x)))`` (or without ``x`` when not residual), computed in the adapter's own dtype."""

    def __init__(self, hidden: int, bottleneck: int, non_linearity: str = "relu", residual: bool = True,
                 init_scale: float = 1e-3) -> None:
        super().__init__()
        self.down = torch.nn.Linear(hidden, bottleneck)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = torch.nn.Linear(bottleneck, hidden)
        self.residual = residual
        with torch.no_grad():
            self.down.bias.zero_()
            self.up.bias.zero_()
            if init_scale > 0:
                self.up.weight.normal_(0.0, init_scale)
            else:
                self.up.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x.to(self.down.weight.dtype)))).to(x.dtype)
        return x + out if self.residual else out


class Adapted(torch.nn.Module):
    """A wrapped ``Linear``: ``adapter(base(x))``; exposes ``weight``/``bias`` of the base for code that reads them."""

    def __init__(self, base: torch.nn.Linear, adapter: Bottleneck) -> None:
        super().__init__()
        self.base = base
        self.adapter = adapter

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def adapter_parameter_count(hidden: int, bottleneck: int) -> int:
    """Parameters of one bottleneck: two weight matrices and two biases."""
    return 2 * hidden * bottleneck + bottleneck + hidden


def find_sites(model: torch.nn.Module, kind: str) -> list[str]:
    """Paths of the Linear layers an adapter of ``kind`` wraps, in model order."""
    sites: list[str] = []
    for name, block in model.named_modules():
        for required, attention, feed_forward in _LAYOUTS:
            if not all(isinstance(_submodule(block, path), torch.nn.Linear) for path in required):
                continue
            for path in (attention if kind == "houlsby" else ()) + feed_forward:
                if isinstance(_submodule(block, path), torch.nn.Linear):
                    sites.append(f"{name}.{path}" if name else path)
    return list(dict.fromkeys(sites))


def apply(model: torch.nn.Module, config: AdapterConfig, task: Any) -> torch.nn.Module:
    if any(isinstance(module, Adapted) for module in model.modules()):
        raise ValueError(f"method 'adapter': {type(model).__name__} already has bottleneck adapters")
    sites = find_sites(model, config.kind)
    if not sites:
        raise ValueError(f"method 'adapter' found no transformer blocks it knows in {type(model).__name__} "
                         "(BERT-, Llama- and T5-style are supported)")
    model.requires_grad_(False)
    outside = set()
    if config.train_head and not task.vocabulary_head:
        head = tuple(_head_prefixes(model))
        outside |= {n for n, _ in model.named_parameters() if n.startswith(head)}
    if config.train_norms:
        outside |= {f"{m}.{p}" if m else p for m, module in model.named_modules() if _is_norm(module)
                    for p, _ in module.named_parameters(recurse=False)}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in outside)
    _insert(model, sites, config)
    return model


def save_adapter(model: torch.nn.Module, folder: Path) -> None:
    config: AdapterConfig | None = getattr(model, "_tuneforge_adapter_config", None)
    adapted = {name: m for name, m in model.named_modules() if isinstance(m, Adapted)}
    if config is None or not adapted:
        raise ValueError("save_adapter: the model has no bottleneck adapters (apply the 'adapter' method first)")
    widths = {(m.adapter.up.out_features, m.adapter.down.out_features) for m in adapted.values()}
    if len(widths) != 1:
        raise ValueError(f"save_adapter: adapters of different widths {sorted(widths)} cannot be saved in one file")
    (hidden, bottleneck), = widths
    outside = [n for n, p in model.named_parameters() if p.requires_grad and not _in_adapter(n, adapted)]
    wanted = set(outside) | {n for n in dict(model.named_parameters()) if _in_adapter(n, adapted)}
    tensors = {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if n in wanted}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    description = {"format": FORMAT, "version": VERSION, "config": config.model_dump(), "hidden_size": hidden,
                   "bottleneck": bottleneck, "sites": list(adapted), "trained_outside_adapters": outside}
    (folder / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    from safetensors.torch import save_file

    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def load_adapter(base_model: torch.nn.Module, folder: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    folder = Path(folder)
    description: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if description.get("format") != FORMAT or description.get("version") != VERSION:
        raise ValueError(f"{folder / CONFIG_FILE}: not a {FORMAT} version {VERSION} file")
    config = AdapterConfig.model_validate(description["config"])
    base_model.requires_grad_(False)
    _insert(base_model, list(description["sites"]), config)
    adapted = {name: m for name, m in base_model.named_modules() if isinstance(m, Adapted)}
    for name, module in adapted.items():
        width = (module.adapter.up.out_features, module.adapter.down.out_features)
        if width != (description["hidden_size"], description["bottleneck"]):
            raise ValueError(f"adapter at {name}: base model gives (hidden, bottleneck) = {width}, the saved adapter "
                             f"has {(description['hidden_size'], description['bottleneck'])} (a different base model?)")
    parameters = dict(base_model.named_parameters())
    outside = set(description["trained_outside_adapters"])
    expected = outside | {n for n in parameters if _in_adapter(n, adapted)}
    state = load_file(str(folder / WEIGHTS_FILE))
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected or not outside <= parameters.keys():
        raise ValueError(f"{folder / WEIGHTS_FILE} does not match the adapted model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, unknown {sorted(outside - parameters.keys())[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            if tensor.shape != parameters[name].shape:
                raise ValueError(f"{name}: saved shape {tuple(tensor.shape)}, the model's "
                                 f"{tuple(parameters[name].shape)}")
            parameters[name].copy_(tensor)
    for name in outside:
        parameters[name].requires_grad_(True)
    return base_model


def _insert(model: torch.nn.Module, sites: list[str], config: AdapterConfig) -> None:
    for site in sites:
        parent_path, _, child = site.rpartition(".")
        parent = _submodule(model, parent_path) if parent_path else model
        linear = getattr(parent, child, None) if parent is not None else None
        if not isinstance(linear, torch.nn.Linear):
            raise ValueError(f"adapter site {site!r} is not a Linear layer in {type(model).__name__}")
        hidden = linear.out_features
        adapter = Bottleneck(hidden, max(1, hidden // config.reduction_factor), config.non_linearity,
                             config.residual, config.init_scale)
        dtype = linear.weight.dtype if linear.weight.is_floating_point() else torch.float32
        adapter.to(device=linear.weight.device, dtype=dtype).train(linear.training)
        wrapped = Adapted(linear, adapter).train(linear.training)
        setattr(parent, child, wrapped)
    model._tuneforge_adapter_config = config  # read by save_adapter


def _submodule(module: torch.nn.Module, path: str) -> torch.nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if not isinstance(module, torch.nn.Module):
            return None
    return module


def _is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) or "norm" in type(module).__name__.lower()


def _in_adapter(name: str, adapted: dict[str, Adapted]) -> bool:
    site, sep, _ = name.partition(".adapter.")
    return bool(sep) and site in adapted
