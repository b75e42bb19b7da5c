"""The model a run will train, seen from its config alone: built on PyTorch's meta device with the run's method
applied, then described as blocks of Linear layers (shapes, roles, what trains, LoRA / adapter / IA3 extras) and the
few config facts the estimate needs (see :mod:`tuneforge.planning.memory`)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tuneforge.config.schema import RunConfig

HEADS = ("classifier", "score", "qa_outputs", "lm_head")  # never quantized (tuneforge.methods.qlora.HEADS)


@dataclass(frozen=True)
class _LinearInfo:
    path: str  # inside its block
    role: str  # q k v o gate up down (x-prefixed for cross-attention) | other
    d_in: int
    d_out: int
    trains: bool  # the base weight trains (its input must be kept)
    lora_r: int = 0
    lora_dropout: float = 0.0
    adapter: int = 0  # bottleneck width
    adapter_act: str = "relu"
    ia3: str = ""  # "in" (scales the input) | "out" (scales the output)


@dataclass(frozen=True)
class _Block:
    stack: str  # encoder | decoder
    linears: tuple[_LinearInfo, ...]
    norms: int  # norm modules in the block
    norm_kind: str  # rms | layer
    norms_train: bool
    trainable: bool  # any parameter of the block trains
    heads: int
    hidden: int


@dataclass(frozen=True)
class _Profile:
    family: str  # llama | bert | t5 | generic
    task: str
    vocabulary_head: bool  # an LM head over the vocabulary (generative), else a small task head
    per_token_head: bool  # the small head reads every position (tags, spans)
    hidden: int
    vocab: int
    blocks: tuple[_Block, ...]
    total_base: int  # base model parameters (logical counts, before the method)
    total: int  # after the method
    trainable: int
    param_bytes: int  # bytes per float parameter / activation
    weight_bytes: int  # base weights as stored in memory (quantized for qlora)
    quantized_params: int
    mapped_checkpoint: int  # QLoRA on CPU: float32 checkpoint pages kept mapped
    matmul_params: int
    matmul_trainable: int
    matmul_backward: int  # the matmuls gradients flow through: from the first trained one on
    attention_width: int  # sum over blocks of the attention width (heads x head_dim), self + cross
    embeddings_train: bool  # gradient flows from the first block on
    prompt_tokens: int  # prompt tuning: virtual tokens prepended to every sequence
    prefix_tokens: int  # prefix tuning: key/value positions added in every attention
    fused_attention: bool  # SDPA-capable model
    attention_dropout: float
    hidden_dropout: float
    act: str
    lm_head_trains: bool
    head_hidden_ops: int  # floats/token kept by the LM head's own transform (BERT-style LM head)
    final_norm: str  # "", "rms", "layer"
    method: str
    first_token: bool = False  # a classifier whose last layer computes only the first token


def _profile_key(config: RunConfig, num_labels: int) -> str:
    return json.dumps({"model": config.model.model_dump(), "method": config.method.model_dump(),
                       "num_labels": num_labels}, sort_keys=True, default=str)


@lru_cache(maxsize=32)
def _profile(key: str) -> _Profile:
    spec = json.loads(key)
    model_cfg, method_cfg, num_labels = spec["model"], spec["method"], spec["num_labels"]
    return _build_profile(model_cfg, method_cfg, num_labels)


def _build_profile(model_cfg: dict, method_cfg: dict, num_labels: int) -> _Profile:
    import torch

    from tuneforge.methods.registry import validate_method

    from tuneforge.tasks.registry import task_spec

    task = model_cfg["task"]
    spec = task_spec(task)
    hf_config, path = _hf_config(model_cfg["name"], model_cfg.get("revision"), model_cfg.get("trust_remote_code"))
    model = _meta_model(hf_config, spec, num_labels, bool(model_cfg.get("trust_remote_code")))
    method = validate_method(method_cfg)
    # generative models load in float32; a classifier in its checkpoint's dtype; QLoRA casts what it does not
    # quantize to float32 (peft's prepare_model_for_kbit_training)
    param_bytes = 4 if spec.vocabulary_head or method.name == "qlora" else \
        _dtype_bytes(_checkpoint_dtype(hf_config))

    base_params = {id(p): p.numel() for p in model.parameters()}
    total_base = sum(base_params.values())
    quantized = _quantized_linears(model) if method.name == "qlora" else {}
    quantized_params = sum(m.weight.numel() for m in quantized.values())
    weight_bytes = (total_base - quantized_params) * param_bytes
    for module in quantized.values():
        weight_bytes += _quantized_bytes(module.weight.numel(), module.out_features, method)
        # the bias stays in float32 (counted above with the other unquantized parameters)

    from tuneforge.models.first_token import FIRST_TOKEN_CLASSIFIERS

    first_token = type(model).__name__ in FIRST_TOKEN_CLASSIFIERS and method.name != "prefix"
    model = _apply_on_meta(model, method, spec)
    parameters = list(model.parameters())
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)

    family = _family(model)
    blocks = _blocks(model, hf_config)
    matmul, matmul_trainable, matmul_backward = _matmul_params(model)
    embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    embeddings_train = any(p.requires_grad for m in embeddings for p in m.parameters()) or any(
        p.requires_grad for n, p in model.named_parameters()  # e.g. BERT's embedding LayerNorm (freeze keeps norms)
        if ("embed" in n or n.startswith("shared.")) and "lm_head" not in n)
    prompt = int(method_cfg.get("num_virtual_tokens", 0)) if method.name == "prompt" else 0
    prefix = int(method_cfg.get("num_virtual_tokens", 0)) if method.name == "prefix" else 0
    if prompt:
        embeddings_train = True  # the virtual tokens train: gradient flows through every block
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lm_head_trains = bool(head is not None and any(p.requires_grad for p in head.parameters()))
    mapped = 0
    if method.name == "qlora" and _dtype_bytes(_checkpoint_dtype(hf_config)) == 4 and _local(path):
        mapped = quantized_params * 4  # the float32 pages of the quantized tensors stay mapped (see module doc)
    attention = sum(_attention_width(b) for b in blocks)
    sub = _sub_config(hf_config, "decoder") if spec.vocabulary_head else hf_config
    vocab = int(getattr(sub, "vocab_size", 0) or getattr(hf_config, "vocab_size", 0) or 0)
    final_norm = "" if family == "bert" else ("rms" if family in ("llama", "t5") else "layer")
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    return _Profile(
        family=family, task=task, vocabulary_head=spec.vocabulary_head, per_token_head=spec.per_token_head, hidden=_hidden(hf_config), vocab=vocab, blocks=tuple(blocks),
        total_base=total_base, total=total, trainable=trainable, param_bytes=param_bytes,
        weight_bytes=int(weight_bytes), quantized_params=quantized_params, mapped_checkpoint=mapped,
        matmul_params=matmul, matmul_trainable=matmul_trainable, matmul_backward=matmul_backward,
        attention_width=attention,
        embeddings_train=embeddings_train, prompt_tokens=prompt, prefix_tokens=prefix,
        fused_attention=impl in ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"),
        attention_dropout=_attention_dropout(hf_config), hidden_dropout=_hidden_dropout(hf_config, family),
        act=_activation(hf_config), lm_head_trains=lm_head_trains,
        head_hidden_ops=_bert_lm_head_ops(model) if spec.vocabulary_head else 0,
        final_norm=final_norm if spec.vocabulary_head or family == "llama" else "",
        method=method.name, first_token=first_token and family == "bert")


def _hf_config(name: str, revision: str | None, trust_remote_code: bool | None) -> tuple[Any, str]:
    """The transformers config of the run's model, and the folder it came from (no weights read)."""
    from transformers import AutoConfig

    from tuneforge.models.assets import cache_dir, resolve_model

    kwargs: dict[str, Any] = {"trust_remote_code": bool(trust_remote_code)}
    if revision:
        kwargs["revision"] = revision
    if "+" in name and not Path(name).expanduser().exists():
        cached = cache_dir() / "encoder-decoder" / name.replace("/", "--")
        if (cached / "config.json").exists():
            return AutoConfig.from_pretrained(str(cached)), str(cached)
        from transformers import EncoderDecoderConfig

        encoder, _, decoder = name.partition("+")
        parts = [AutoConfig.from_pretrained(resolve_model(part, revision).path, **kwargs) for part in (encoder, decoder)]
        return EncoderDecoderConfig.from_encoder_decoder_configs(*parts), str(cached)
    resolved = resolve_model(name, revision)
    return AutoConfig.from_pretrained(resolved.path, **kwargs), resolved.path


def _meta_model(hf_config: Any, task: Any, num_labels: int, trust_remote_code: bool) -> torch.nn.Module:
    """The task's model (its spec's transformers class) on the meta device; a small head sized by the labels, or
    by the task itself (QA: start and end)."""
    import copy
    import logging

    import torch
    import transformers
    from transformers import logging as hf_logging

    hf_config = copy.deepcopy(hf_config)
    auto = getattr(transformers, task.auto_class)
    if not task.vocabulary_head:
        hf_config.num_labels = task.head_size or num_labels
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return auto.from_config(hf_config, trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)


def _apply_on_meta(model: torch.nn.Module, method: Any, task: Any) -> torch.nn.Module:
    """The run's method applied to the meta model (QLoRA as LoRA: its quantization is counted separately)."""
    import torch

    from tuneforge.methods.registry import apply_method

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        try:
            if method.name == "qlora":
                from tuneforge.methods.lora import apply as apply_lora

                return apply_lora(model, method, task)
            return apply_method(model, method, task)
        except Exception as exc:  # noqa: BLE001 -- any failure: say which method on which model
            raise ValueError(f"memory estimate: cannot apply method {method.name!r} to "
                             f"{type(model).__name__} without weights ({exc})") from exc


def _quantized_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """The Linear layers bitsandbytes quantizes at load time: all but the heads, the output embedding, tied weights
    and the last module (transformers' ``get_keys_to_not_convert``)."""
    import torch

    skip = list(HEADS)
    try:
        from transformers.quantizers.base import get_keys_to_not_convert
        from transformers.quantizers.quantizers_utils import should_convert_module

        skip += get_keys_to_not_convert(model)
        keep = lambda name: should_convert_module(name, skip)  # noqa: E731
    except Exception:  # noqa: BLE001 -- an older/newer transformers: match the names ourselves
        keep = lambda name: not any(name == s or name.startswith(s + ".") or name.endswith(s) for s in skip)  # noqa: E731
    return {name: m for name, m in model.named_modules() if type(m) is torch.nn.Linear and keep(name)}


def _quantized_bytes(numel: int, rows: int, method: Any) -> float:
    if method.bits == 8:
        return numel + 4 * rows  # int8 weight + an fp32 scale per output row (LLM.int8)
    blocks = math.ceil(numel / 64)
    if method.double_quant:
        return numel / 2 + blocks + 4 * math.ceil(blocks / 256) + 4 * 2  # 8-bit absmax + fp32 per 256, offsets
    return numel / 2 + 4 * blocks


def _matmul_params(model: torch.nn.Module) -> tuple[int, int, int]:
    """Weights used in a matmul (every Linear, a tied LM head included; embedding lookups are not matmuls): all,
    trainable, and those from the first trained module on in forward (registration) order, which gradients flow
    through."""
    total = trainable = backward = 0
    started = False
    for module in model.modules():
        started = started or any(p.requires_grad for p in module.parameters(recurse=False))
        weight = getattr(module, "weight", None)
        if _is_linear(module) and weight is not None:
            total += weight.numel()
            backward += weight.numel() if started else 0
            trainable += weight.numel() if weight.requires_grad else 0
    return total, trainable, backward


# ----------------------------------------------------------------------------------------------- block structure

_ROLE_NAMES = {
    "q": {"q_proj", "query", "q"}, "k": {"k_proj", "key", "k"}, "v": {"v_proj", "value", "v"},
    "o": {"o_proj", "o", "out_proj"}, "gate": {"gate_proj", "wi_0", "w1"},
    "up": {"up_proj", "wi_1", "wi", "fc1", "w3", "c_fc"}, "down": {"down_proj", "wo", "fc2", "w2"},
}
_CROSS = ("crossattention", "EncDecAttention", "encoder_attn", "cross_attn")


def _role(path: str) -> str:
    parts = [p for p in path.split(".") if p not in ("base_layer", "base", "default", "modules_to_save",
                                                     "original_module")]
    if not parts:
        return "other"
    last, previous = parts[-1], parts[-2] if len(parts) > 1 else ""
    role = next((r for r, names in _ROLE_NAMES.items() if last in names), "")
    if not role and last == "dense":  # BERT: attention.output.dense, intermediate.dense, output.dense
        role = "o" if "attention" in path else ("up" if previous == "intermediate" else
                                               "down" if previous == "output" else "")
    if not role:
        return "other"
    if any(c in path for c in _CROSS) and role in ("q", "k", "v", "o"):
        return "x" + role
    return role


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")


def _linear_info(path: str, module: Any) -> _LinearInfo | None:
    """A Linear-like module of a block: plain, or wrapped by peft LoRA / IA3 or by a bottleneck adapter."""
    base = module
    lora_r, lora_dropout, adapter, adapter_act, ia3 = 0, 0.0, 0, "relu", ""
    if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
        base = module.base_layer
        ranks = [int(r) for r in getattr(module, "r", {}).values()]
        lora_r = sum(ranks)
        dropouts = [getattr(d, "p", 0.0) for d in getattr(module, "lora_dropout", {}).values()]
        lora_dropout = max(dropouts or [0.0])
    elif hasattr(module, "ia3_l") and hasattr(module, "base_layer"):
        base = module.base_layer
        ia3 = "in" if getattr(module, "is_feedforward", False) else "out"
    elif type(module).__name__ == "Adapted" and hasattr(module, "adapter"):
        base = module.base
        adapter = int(module.adapter.down.out_features)
        adapter_act = type(module.adapter.act).__name__.lower()
    if not _is_linear(base) or getattr(base, "weight", None) is None:
        return None
    d_in, d_out = _linear_shape(base)
    return _LinearInfo(path, _role(path), d_in, d_out, bool(base.weight.requires_grad), lora_r, lora_dropout,
                       adapter, adapter_act, ia3)


def _linear_shape(module: Any) -> tuple[int, int]:
    if type(module).__name__ == "Conv1D":
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return int(module.in_features), int(module.out_features)


def _blocks(model: torch.nn.Module, hf_config: Any) -> list[_Block]:
    """Transformer blocks, input first (encoder before decoder): items of the outermost ModuleLists whose items
    hold attention projections."""
    import torch

    found: list[tuple[str, torch.nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or not len(module):
            continue
        if any(name.startswith(prefix + ".") for prefix, _ in found):
            continue
        names = [sub for sub, m in module[0].named_modules() if _is_linear(m)]
        if any(_role(sub) in ("q", "k", "v") for sub in names) or (
                len(names) >= 2 and any("attn" in sub.lower() or "attention" in sub.lower() for sub in names)):
            found.append((name, module))
    found.sort(key=lambda item: 1 if "decoder" in item[0] else 0)
    blocks = []
    for name, blocklist in found:
        stack = "decoder" if "decoder" in name else "encoder"
        sub = _sub_config(hf_config, "decoder" if "decoder" in name else "encoder")
        for block in blocklist:
            linears: list[_LinearInfo] = []
            claimed: set[str] = set()
            for sub_name, sub_module in block.named_modules():
                if any(sub_name.startswith(c + ".") for c in claimed):
                    continue
                info = _linear_info(sub_name, sub_module) if sub_name else None
                if info is not None and stack == "encoder" and info.role.startswith("x"):
                    continue  # cross-attention in an encoder never runs (a decoder config reused as encoder)
                if info is not None:
                    linears.append(info)
                    claimed.add(sub_name)
            norms = [m for m in block.modules() if _is_norm(m)]
            norm_kind = "layer" if norms and all(isinstance(m, torch.nn.LayerNorm) for m in norms) else "rms"
            blocks.append(_Block(
                stack=stack, linears=tuple(linears), norms=len(norms), norm_kind=norm_kind,
                norms_train=any(p.requires_grad for m in norms for p in m.parameters()),
                trainable=any(p.requires_grad for p in block.parameters()),
                heads=_heads(block, sub), hidden=_hidden(sub)))
    return blocks


def _is_norm(module: Any) -> bool:
    import torch

    return isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)) or "norm" in type(module).__name__.lower()


def _heads(block: Any, sub_config: Any) -> int:
    for module in block.modules():
        for attr in ("num_attention_heads", "num_heads", "n_heads"):
            value = getattr(module, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    for attr in ("num_attention_heads", "num_heads", "n_head"):
        value = getattr(sub_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1


def _attention_width(block: _Block) -> int:
    return sum(linear.d_out for linear in block.linears if linear.role in ("q", "xq"))


def _family(model: Any) -> str:
    types = {type(m).__name__ for m in model.modules()}
    if any(t.startswith("T5") for t in types):
        return "t5"
    if any(t.startswith(("Bert", "Roberta", "XLMRoberta", "Electra", "Camembert")) for t in types):
        return "bert"
    roles = {_role(name) for name, _ in model.named_modules()}
    return "llama" if "gate" in roles else "generic"


def _sub_config(hf_config: Any, which: str) -> Any:
    return getattr(hf_config, which, None) or hf_config


def _first(hf_config: Any, names: tuple[str, ...], kinds: tuple[type, ...]) -> Any:
    """The first of ``names`` set on the (encoder) config with a value of one of ``kinds``, else None."""
    config = _sub_config(hf_config, "encoder")
    values = (getattr(config, name, None) for name in names)
    return next((v for v in values if isinstance(v, kinds) and not isinstance(v, bool)), None)


def _hidden(hf_config: Any) -> int:
    return _first(hf_config, ("hidden_size", "d_model", "n_embd", "dim"), (int,)) or 0


def _attention_dropout(hf_config: Any) -> float:
    names = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop", "dropout_rate")
    return float(_first(hf_config, names, (int, float)) or 0.0)


def _hidden_dropout(hf_config: Any, family: str) -> float:
    if family == "llama":
        return 0.0
    names = ("hidden_dropout_prob", "dropout_rate", "resid_pdrop", "hidden_dropout")
    return float(_first(hf_config, names, (int, float)) or 0.0)


def _activation(hf_config: Any) -> str:
    act = _first(hf_config, ("dense_act_fn", "hidden_act", "activation_function", "hidden_activation"), (str,))
    if act is not None:
        return act
    config = _sub_config(hf_config, "encoder")
    projection = getattr(config, "feed_forward_proj", "")
    return "gelu_new" if "gelu" in str(projection) else "relu"


def _bert_lm_head_ops(model: Any) -> int:
    """Floats/token a BERT-style LM head keeps before its decoder: transform.dense input, GELU input, LN input."""
    for name, _ in model.named_modules():
        if name.endswith("predictions.transform"):
            return 3
    return 0


def _checkpoint_dtype(hf_config: Any) -> str:
    value = getattr(hf_config, "dtype", None) or "float32"  # transformers 5 reads a legacy torch_dtype into dtype
    return str(value).replace("torch.", "")


def _dtype_bytes(dtype: str) -> int:
    return 2 if dtype in ("bfloat16", "float16", "half") else 4


def _local(path: str) -> bool:
    return Path(path).is_dir()


# --------------------------------------------------------------------------------------------------- activations
