"""Predict a fine-tuning run's peak memory (and its compute) from the run config alone, before any weight loads.

How the prediction is made
--------------------------
1. **Structure, exactly.** The model is built from its ``config.json`` on PyTorch's ``meta`` device (shapes, no
   storage: ~1 s even for a 70B model) and the run's method is applied to it (``full``, ``freeze``, ``lora``,
   ``qlora`` -- as LoRA, the quantization is accounted for separately --, ``adapter``, ``ia3``, ``prefix``,
   ``prompt``; any registered method whose ``apply`` works on meta tensors). Parameter counts (total, trainable,
   added by the method) are then exact, and so is the list of Linear layers with their shapes, which of them
   train, which carry LoRA (rank, dropout), bottleneck adapters or IA3 vectors.

2. **Bytes per part** (``Estimate.parts``), for a run on ``device``:

   * ``weights``: the base model's parameters: 4 bytes each (generative tasks load float32; a classifier loads in
     its checkpoint's dtype, which transformers 5 picks with ``dtype="auto"``). QLoRA: each quantized Linear weight
     (every Linear except the heads and the output embedding, as transformers' bitsandbytes integration does)
     takes 0.5 byte/param (4-bit) + its constants: fp32 absmax per 64-block (4/64 byte/param) or, double-quantized,
     an 8-bit absmax per 64-block + an fp32 one per 256 of those (1/64 + 4/16384 byte/param); 8-bit: 1 byte/param
     + an fp32 scale per output row. Everything else stays float32.
   * ``adapter``: parameters the method adds (LoRA A/B, bottlenecks, prefixes, copies of the trained head).
   * ``gradients``: one per trainable parameter, in its dtype.
   * ``optimizer``: AdamW's two moments per trainable parameter (8 bytes in float32).
   * ``activations``: what autograd saves in the forward pass for the backward pass, counted op by op for the
     block layouts transformers uses (Llama-style: RMSNorm, SDPA, gated MLP; BERT-style: post-LayerNorm, dropout,
     GELU; T5-style: RMSNorm, relative-bias attention, dropout; an encoder-decoder joined from two BERTs), per
     token ``T = batch_size x max_length`` and per block (see :func:`_block_cost`):

     - the inputs of every norm (the residual stream), and the normalized tensor where the norm's weight trains;
     - attention: fused SDPA (CPU flash kernel without dropout; CUDA flash / memory-efficient kernels also with
       dropout) keeps q, k, v, the output and a log-sum-exp per head: no ``L x L`` term. The unfused path (SDPA
       on CPU with attention dropout > 0, as BERT-style models train; eager attention) keeps the softmax (heads x
       L x L per sequence), and with dropout also its mask and the dropped probabilities: 3 x heads x L per token;
     - the MLP: gated SiLU keeps the gate, its activation and the up projection (3 x intermediate); GELU keeps its
       input (1 x intermediate); python ``gelu_new`` keeps 4 x intermediate;
     - a Linear layer keeps its input only when its own weight trains (full, freeze) -- a frozen base needs only
       the weight to pass gradients on; LoRA keeps its dropout's output and mask (a bool: CUDA's fused dropout,
       tuneforge's FastDropout on CPU) or, without dropout, the input, plus the rank-r hidden; a bottleneck adapter keeps
       its input and its hidden; IA3 keeps the tensor it scales;
     - blocks before the first trainable parameter keep nothing (no gradient flows there);
     - the LM head: the log-softmax of the logits (``T x vocab`` floats, fp32) is kept, and at the start of the
       backward pass its gradient and the logits' gradient exist at once with it: 3 x ``T x vocab`` floats.

     - a BERT-style sequence classifier's last layer computes only the first token (``models/first_token.py``):
       its keys, values and their input at every position, everything else at one;

     With gradient checkpointing each block keeps only its input (``T x hidden``) and one block's activations are
     recomputed at a time: ``blocks x T x hidden + max(block) + head``.
   * ``workspace``: the framework's resident memory after loading, over a baseline taken after the imports
     (:data:`CPU_OVERHEAD`, measured) plus, on CPU, glibc malloc's retention: freed activation blocks stay in the
     heap and the next step's peak lands on top of part of them (:data:`CPU_ALLOCATOR_RETENTION` of the
     activations, fitted on ``benchmarks/memory_estimate.py``); for QLoRA on CPU, the float32 checkpoint's pages
     stay mapped (the unquantized tensors keep the file mapping alive) and count in the resident set although the
     kernel can reclaim them. On CUDA: cuBLAS workspace and allocator slack (:data:`CUDA_OVERHEAD`, not measured
     in this project).

3. **The peak** (``Estimate.total``) is not the sum of the parts: gradients fill in while the activations are
   freed, so ``total = weights + adapter + optimizer + workspace + max(activations, gradients, evaluation)``, where
   evaluation is the logits and log-probabilities of one evaluation batch (``eval_batch_size``) of a language
   model. The optimizer state exists from the first step on, so later steps carry it through the forward pass.

4. **Compute**: ``flops_per_token = 2 N (forward) + 2 N_g (gradients of the activations) + 2 N_t (gradients of the
   trainable weights) + 12 x layers x d_attention x L`` (QK^T and AV, forward and backward), with ``N`` the
   parameters of every matmul (Linear layers, the tied LM head included, embedding lookups excluded), ``N_g`` those
   from the first trained module on (frozen lower layers run forward only) and ``N_t`` the trainable ones: 6 N for
   full fine-tuning, ~4 N for a frozen base. Gradient checkpointing adds one more
   forward pass (2 N + the attention's forward third).

What is measured and what is derived: the per-op accounting is checked against the tensors autograd really saves
on tiny BERT, Llama, T5 and BERT-to-BERT models and on smollm2-135m's real widths (``tests/test_memory.py``:
within 10%), and the totals against the resident memory of real runs (``benchmarks/memory_estimate.py``:
smollm2-135m and MiniLM, full / LoRA / QLoRA / adapter, on CPU: live tensors within 3%, peak RSS with glibc's
retention within 0.85-1.13). Block layouts not recognised (e.g. GPT-2's fused qkv projection) fall back to
Korthikanti et al.'s per-block count (about 15% low on a tiny GPT-2). CUDA figures follow the same model with
CUDA's kernels (bool dropout masks, fused attention with dropout) but have not been measured in this project.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from tuneforge.config.schema import RunConfig

MiB = 2**20
# Resident growth over a baseline taken after torch/transformers/peft are imported (estimate() imports them): lazily
# loaded kernels and library pages, allocator arenas. Measured 28-53 MiB over the 8 runs of the benchmark.
CPU_OVERHEAD = 40 * MiB
# glibc keeps freed activation blocks in its heap; the next step's peak lands partly on top of them. Fitted on the
# benchmark (peak RSS with the default allocator minus the peak with MALLOC_MMAP_THRESHOLD_=65536, i.e. live
# tensors only): 0.20-0.68 of the activations, 0.45 minimizes the worst ratio.
CPU_ALLOCATOR_RETENTION = 0.45
CUDA_OVERHEAD = 256 * MiB  # cuBLAS workspace + caching-allocator slack (not measured in this project)
SAFETY_MARGIN = 0.10  # advise() wants the peak below (1 - margin) x available
HEADS = ("classifier", "score", "qa_outputs", "lm_head")  # never quantized (tuneforge.methods.qlora.HEADS)
CLASSIFICATION = ("sequence-classification", "token-classification", "question-answering")  # small heads, no vocabulary

PART_NAMES = ("weights", "adapter", "gradients", "optimizer", "activations", "workspace")


@dataclass
class Estimate:
    """Predicted memory of one training run. ``parts`` in bytes; ``total`` is the predicted peak."""

    parts: dict[str, int]
    total: int
    trainable_params: int
    total_params: int
    flops_per_token: float
    gradient_checkpointing: bool
    notes: dict[str, str] = field(default_factory=dict)  # part -> how it was counted
    details: dict[str, Any] = field(default_factory=dict)  # tokens, per-block bytes, peak candidates ...
    device: str = "cpu"
    config: Any = field(default=None, repr=False, compare=False)  # the RunConfig, for advise()
    num_labels: int = 2

    def table(self) -> str:
        """A plain-text breakdown: part, MiB, note; the last row is the predicted peak."""
        rows = [(name, f"{self.parts.get(name, 0) / MiB:,.1f}", self.notes.get(name, "")) for name in PART_NAMES]
        rows += [(name, f"{value / MiB:,.1f}", self.notes.get(name, "")) for name, value in self.parts.items()
                 if name not in PART_NAMES]
        rows.append(("total", f"{self.total / MiB:,.1f}", self.notes.get("total", "")))
        width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        lines = [f"{'part':<{width[0]}}  {'MiB':>{width[1]}}  note"]
        lines += [f"{part:<{width[0]}}  {mib:>{width[1]}}  {note}".rstrip() for part, mib, note in rows]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- public functions

def estimate(config: RunConfig, gradient_checkpointing: bool = False, device: str = "cpu", *,
             num_labels: int = 2) -> Estimate:
    """Predict the peak memory of training ``config`` on ``device`` ("cpu", "cuda", "cuda:1").

    ``num_labels`` sizes a classification head (sequence or token classification) (the data decides it at run time; it changes little). QLoRA's own
    ``method.gradient_checkpointing`` counts as ``gradient_checkpointing``.
    """
    profile = _profile(_profile_key(config, num_labels))
    checkpointing = bool(gradient_checkpointing or getattr(config.method, "gradient_checkpointing", False))
    return _estimate_from(profile, config, checkpointing, device, num_labels)


def available_memory(device: str = "cpu") -> int:
    """Bytes free for a run: ``psutil.virtual_memory().available`` on CPU (bounded by a cgroup memory limit when
    the process runs in a container that sets one), ``torch.cuda.mem_get_info`` on CUDA."""
    if _is_cuda(device):
        import torch

        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)
        return int(free)
    import psutil

    available = int(psutil.virtual_memory().available)
    limit = _cgroup_headroom()
    return min(available, limit) if limit is not None else available


def advise(estimate: Estimate, available: int) -> list[str]:
    """Nothing when the predicted peak fits in ``available`` with a :data:`SAFETY_MARGIN`; otherwise suggestions,
    in order: gradient checkpointing, the largest batch size that fits, QLoRA -- each with its predicted peak --
    and, when none fits alone, all of them together.

    On CPU, read ``available`` after :func:`estimate` (which imports torch, transformers and peft):
    :data:`CPU_OVERHEAD` is the growth over a post-import baseline."""
    budget = int(available * (1 - SAFETY_MARGIN))
    if estimate.total <= budget:
        return []
    config = estimate.config
    if config is None:  # an Estimate built by hand: no config to re-estimate
        return ["enable gradient checkpointing", "lower train.batch_size", "switch to method qlora (4-bit base)"]

    def again(cfg: Any, checkpointing: bool) -> Estimate:
        return _estimate_from(_profile(_profile_key(cfg, estimate.num_labels)), cfg, checkpointing,
                              estimate.device, estimate.num_labels)

    def verdict(candidate: Estimate) -> str:
        return "fits" if candidate.total <= budget else f"still over the {_mib(budget)} budget"

    gc = estimate.gradient_checkpointing
    suggestions: list[str] = []
    any_fits = False
    if not gc:
        with_gc = again(config, True)
        any_fits |= with_gc.total <= budget
        extra = with_gc.flops_per_token / estimate.flops_per_token - 1
        suggestions.append(f"enable gradient checkpointing: predicted peak {_mib(with_gc.total)} ({verdict(with_gc)}; "
                           f"~{extra:.0%} more compute)")
    batch = config.train.batch_size
    if batch > 1:
        best = next(((size, smaller) for size in range(batch - 1, 0, -1)
                     if (smaller := again(_with(config, train={"batch_size": size}), gc)).total <= budget), None)
        if best:
            size, smaller = best
            any_fits = True
            accumulation = math.ceil(batch / size) * config.train.gradient_accumulation_steps
            suggestions.append(f"lower train.batch_size to {size}: predicted peak {_mib(smaller.total)} (fits); "
                               f"train.gradient_accumulation_steps={accumulation} keeps the effective batch size")
        else:
            one = again(_with(config, train={"batch_size": 1}), gc)
            suggestions.append(f"lower train.batch_size: even batch size 1 needs {_mib(one.total)} "
                               f"(over the {_mib(budget)} budget)")
    qlora = _qlora_version(config) if config.method.name != "qlora" else None
    if qlora is not None:
        with_qlora = again(qlora, gc)
        any_fits |= with_qlora.total <= budget
        suggestions.append(f"switch to method qlora (4-bit NF4 base, double quantization, LoRA r={qlora.method.r}): "
                           f"predicted peak {_mib(with_qlora.total)} ({verdict(with_qlora)})")
    if not any_fits:
        combined = qlora or config
        smallest = again(_with(combined, train={"batch_size": 1}), True)
        suggestions.append(f"none fits alone; all together (gradient checkpointing, batch size 1"
                           f"{', qlora' if qlora is not None else ''}) predict {_mib(smallest.total)} "
                           f"({verdict(smallest)})")
    return suggestions


def seconds_per_epoch(estimate: Estimate, tokens_per_epoch: int, flops_per_second: float) -> float:
    """Predicted training seconds for ``tokens_per_epoch`` tokens at a sustained ``flops_per_second``."""
    if flops_per_second <= 0:
        raise ValueError("flops_per_second must be positive")
    return tokens_per_epoch * estimate.flops_per_token / flops_per_second


def measure_flops_per_second(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul throughput: a timed loop of 1024 x 1024 ``torch.mm`` (2 n^3 FLOPs each)."""
    import torch

    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    count, started = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2.0 * n**3 * count / elapsed


# ------------------------------------------------------------------------------------------------------ profiles

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

    task = model_cfg["task"]
    hf_config, path = _hf_config(model_cfg["name"], model_cfg.get("revision"), model_cfg.get("trust_remote_code"))
    model = _meta_model(hf_config, task, num_labels, bool(model_cfg.get("trust_remote_code")))
    method = validate_method(method_cfg)
    # generative models load in float32; a classifier in its checkpoint's dtype; QLoRA casts what it does not
    # quantize to float32 (peft's prepare_model_for_kbit_training)
    param_bytes = 4 if task not in CLASSIFICATION or method.name == "qlora" else \
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
    model = _apply_on_meta(model, method, task)
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
    sub = _sub_config(hf_config, "decoder") if task not in CLASSIFICATION else hf_config
    vocab = int(getattr(sub, "vocab_size", 0) or getattr(hf_config, "vocab_size", 0) or 0)
    final_norm = "" if family == "bert" else ("rms" if family in ("llama", "t5") else "layer")
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    return _Profile(
        family=family, task=task, hidden=_hidden(hf_config), vocab=vocab, blocks=tuple(blocks),
        total_base=total_base, total=total, trainable=trainable, param_bytes=param_bytes,
        weight_bytes=int(weight_bytes), quantized_params=quantized_params, mapped_checkpoint=mapped,
        matmul_params=matmul, matmul_trainable=matmul_trainable, matmul_backward=matmul_backward,
        attention_width=attention,
        embeddings_train=embeddings_train, prompt_tokens=prompt, prefix_tokens=prefix,
        fused_attention=impl in ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"),
        attention_dropout=_attention_dropout(hf_config), hidden_dropout=_hidden_dropout(hf_config, family),
        act=_activation(hf_config), lm_head_trains=lm_head_trains,
        head_hidden_ops=_bert_lm_head_ops(model) if task not in CLASSIFICATION else 0,
        final_norm=final_norm if task not in CLASSIFICATION or family == "llama" else "",
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


def _meta_model(hf_config: Any, task: str, num_labels: int, trust_remote_code: bool) -> torch.nn.Module:
    import copy
    import logging

    import torch
    from transformers import (AutoModelForCausalLM, AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification, AutoModelForTokenClassification,
                              logging as hf_logging)

    hf_config = copy.deepcopy(hf_config)
    auto = {"sequence-classification": AutoModelForSequenceClassification,
            "token-classification": AutoModelForTokenClassification, "causal-lm": AutoModelForCausalLM,
            "question-answering": AutoModelForQuestionAnswering,
            "seq2seq": AutoModelForSeq2SeqLM}[task]
    if task in CLASSIFICATION:
        hf_config.num_labels = 2 if task == "question-answering" else num_labels  # start and end logits
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return auto.from_config(hf_config, trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)


def _apply_on_meta(model: torch.nn.Module, method: Any, task: str) -> torch.nn.Module:
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

_PYTHON_ACTS = {"gelu_new": 4, "gelu_fast": 4, "quick_gelu": 2, "gelu_accurate": 4, "gelu_python": 4}


def _act_cost(act: str) -> int:
    """Tensors (of the intermediate width) an MLP activation keeps: fused kernels keep one, python ones more."""
    return _PYTHON_ACTS.get(act, 1)


_STAGE = {"q": 0, "k": 0, "v": 0, "o": 1, "xq": 2, "xk": 2, "xv": 2, "xo": 2, "gate": 3, "up": 3, "down": 4}


def _first_stage(block: _Block) -> int:
    """Where, in forward order, the first trained part of a block sits (0: attention input ... 4: MLP output)."""
    if block.norms_train:
        return 0
    stages = [_STAGE.get(lin.role, 0) for lin in block.linears if lin.trains or lin.lora_r or lin.adapter or lin.ia3]
    return min(stages, default=0)


def _block_cost(block: _Block, profile: _Profile, on_cuda: bool, start: int = -1) -> tuple[float, float]:
    """Floats kept per token by one block: ``(constant, per key/value position)`` -- the second times the
    attended length gives the unfused attention's ``heads x L`` terms.

    Contributions are tagged with their stage in forward order (0 attention input and core, 1 attention output,
    2 cross-attention, 3 MLP input and activation, 4 MLP output). ``start`` = -1: gradient flows in from below,
    everything counts; otherwise the block is the first that trains and only what follows its first trained part
    does (``strict`` contributions need a gradient from before their stage: a norm's input)."""
    mask = 0.25  # a dropout mask: bool (CUDA's fused dropout; tuneforge's FastDropout on CPU)
    totals = [0.0, 0.0]

    def add(stage: int, value: float, strict: bool = False, per_position: bool = False) -> None:
        if start < stage or (start == stage and not strict):
            totals[1 if per_position else 0] += value

    by_role: dict[str, list[_LinearInfo]] = {}
    for linear in block.linears:
        by_role.setdefault(linear.role, []).append(linear)
    width = lambda role, attr="d_out": sum(getattr(x, attr) for x in by_role.get(role, []))  # noqa: E731
    h = block.hidden or (by_role["q"][0].d_in if "q" in by_role else profile.hidden)
    p_attn, p_hidden = profile.attention_dropout, profile.hidden_dropout
    fused = profile.fused_attention and (p_attn == 0 or on_cuda)
    pre_ln = profile.family != "bert"
    has_cross = any(role.startswith("x") for role in by_role)

    # norms: their inputs (the residual stream); an RMSNorm also keeps the normalized tensor when its weight trains.
    # Pre-LN (Llama, T5): before attention, cross-attention and the MLP; post-LN (BERT): after each sub-layer.
    norm_stages = ([0, 2, 3] if has_cross else [0, 3]) if pre_ln else ([1, 2, 4] if has_cross else [1, 4])
    for index in range(block.norms):
        stage = norm_stages[min(index, len(norm_stages) - 1)]
        add(stage, h, strict=pre_ln)
        if block.norm_kind == "rms" and block.norms_train:
            add(stage, h)
        # hidden-state dropout at the end of each sub-layer (BERT, T5): its mask
        if p_hidden > 0 and profile.family in ("bert", "t5"):
            add({0: 1, 2: 2, 3: 4}.get(stage, stage), h * mask)

    saved_inputs: set[str] = set()  # groups of linears whose (shared) input is kept anyway
    if "q" not in by_role:
        # a layout not recognised (fused qkv projection, ...): Korthikanti et al. (2022)'s count for a GPT block,
        # 17 h values per token + (softmax, dropout mask, dropped probabilities) per head and position; the
        # method's extras are added below. Approximate: not checked against a measurement.
        add(0, 17 * h)
        if not fused:
            add(0, block.heads * (2 + mask), per_position=True)
        by_role = {}
        fallback = True
    else:
        fallback = False
    for prefix, stage in (("", 0), ("x", 2)):
        d_q, d_k, d_v = width(prefix + "q"), width(prefix + "k"), width(prefix + "v")
        if not d_q:
            continue
        if fused:  # q, k, v, output, log-sum-exp per head
            add(stage, 2 * d_q + d_k + d_v + block.heads)
            saved_inputs.add(prefix + "o")  # the o projection's input is the kept output
        else:  # q, k, v + softmax (+ dropout mask and dropped probabilities); eager GQA repeats k and v
            repeat = not profile.fused_attention
            add(stage, d_q + (d_q if repeat and d_k < d_q else d_k) + (d_q if repeat and d_v < d_q else d_v))
            add(stage, block.heads * (1 + ((1 + mask) if p_attn > 0 else 0)), per_position=True)

    # MLP
    i = width("down", "d_in") or width("up")
    act = _act_cost(profile.act)
    if "gate" in by_role:  # act(gate) * up: the gate, its activation (unless the activation kept it), the up output
        add(3, i * (act + (0 if profile.act in ("relu",) else 1) + 1))
    elif i:
        add(3, i * act)
        if profile.family == "t5" and p_hidden > 0:  # dropout inside the feed-forward block, before wo
            add(3, i * mask)
        elif profile.act in ("relu",):
            saved_inputs.add("down")  # the kept ReLU result is the down projection's input

    # Linear layers: their input when the weight trains; LoRA / adapter / IA3 extras
    groups = {"q": "qkv", "k": "qkv", "v": "qkv", "gate": "mlp", "up": "mlp", "o": "o", "down": "down",
              "xq": "xq", "xk": "xkv", "xv": "xkv", "xo": "xo"}
    for linear in block.linears:
        stage = _STAGE.get(linear.role, 0)
        group = groups.get(linear.role, linear.path)
        if (linear.trains or (linear.lora_r and linear.lora_dropout == 0) or linear.ia3 == "in") and not fallback:
            if group not in saved_inputs and group != "xkv":  # cross k/v read the encoder output: counted once
                add(stage, linear.d_in)
                saved_inputs.add(group)
        if linear.lora_r:
            add(stage, linear.lora_r)
            if linear.lora_dropout > 0:
                add(stage, linear.d_in * (1 + mask))  # the dropped input (kept by lora_A) and the mask
        if linear.adapter:
            add(stage, linear.d_out + linear.adapter * (1 if linear.adapter_act in ("relu", "tanh") else 2))
        if linear.ia3 == "out":
            add(stage, linear.d_out)
    return totals[0], totals[1]


def _kv_floats(block: _Block, profile: _Profile, mask: float) -> float:
    """Floats per token the key/value path of a block keeps: k and v, the input of q/k/v when it is kept, LoRA's
    extras on k and v."""
    qkv = [lin for lin in block.linears if lin.role in ("q", "k", "v")]
    floats = float(sum(lin.d_out for lin in qkv if lin.role != "q"))
    if any(lin.trains or (lin.lora_r and lin.lora_dropout == 0) or lin.ia3 == "in" for lin in qkv):
        floats += block.hidden or profile.hidden
    for lin in qkv:
        if lin.role != "q" and lin.lora_r:
            floats += lin.lora_r + (lin.d_in * (1 + mask) if lin.lora_dropout > 0 else 0)
    return floats


def _activation_bytes(profile: _Profile, batch: int, length: int, checkpointing: bool,
                      on_cuda: bool) -> dict[str, Any]:
    """Saved activations and the LM head's transient at the start of the backward pass, in bytes."""
    length_eff = length + profile.prompt_tokens
    tokens = batch * length_eff
    mask = 0.25
    floats = profile.param_bytes
    started = profile.embeddings_train
    per_block: list[float] = []
    inputs = 0.0
    for block in profile.blocks:
        start = -1 if started else _first_stage(block)  # the first trained block: from its first trained part
        started = started or block.trainable
        if not started:
            per_block.append(0.0)
            continue
        constant, per_position = _block_cost(block, profile, on_cuda, start)
        keys = length_eff + profile.prefix_tokens
        if profile.first_token and block is profile.blocks[-1]:
            # the last layer computes only the first token (tuneforge.models.first_token): keys and values (and
            # the input they share) at every position, the rest at one
            kv = _kv_floats(block, profile, mask)
            per_block.append((kv * length_eff + (constant - kv) + per_position * keys) * batch * floats)
        else:
            per_block.append((constant + per_position * keys) * tokens * floats)
        inputs += block.hidden * tokens * floats
    # around the blocks: embeddings (BERT/T5 LayerNorm + dropout), the encoder output read by cross-attention
    extra = 0.0
    h = profile.hidden
    if profile.embeddings_train and profile.family in ("bert", "t5"):
        stacks = len({block.stack for block in profile.blocks}) or 1  # each stack embeds its own input
        extra += stacks * ((h if profile.family == "bert" else 0) + (h * mask if profile.hidden_dropout > 0 else 0))
    if any(lin.role in ("xk", "xv") and (lin.trains or lin.lora_r) for b in profile.blocks for lin in b.linears):
        extra += h
    head_transient = 0.0
    if profile.task not in CLASSIFICATION:
        if profile.final_norm:
            extra += h * (2 if profile.final_norm == "rms" and profile.lm_head_trains else 1)
            if profile.family == "t5" and profile.hidden_dropout > 0:
                extra += h * mask
        extra += h * profile.head_hidden_ops
        extra += h if profile.lm_head_trains else 0
        extra += profile.vocab  # the log-softmax kept by the loss (float32)
        head_transient = 2.0 * profile.vocab * tokens * 4  # its gradient and the logits' gradient
    elif profile.task in ("token-classification", "question-answering"):  # a head on every token: its input, and BERT's dropout before it
        extra += h * (1 + (mask if profile.hidden_dropout > 0 and profile.family == "bert" else 0))
        extra += h if profile.family != "bert" else 0  # a decoder's final norm
    elif profile.family != "bert":
        extra += 2 * h  # a decoder classifies from every position: the final norm's input and the score's input
    extra_bytes = extra * tokens * floats
    if checkpointing:
        saved = inputs + (max(per_block) if per_block else 0.0) + extra_bytes
    else:
        saved = sum(per_block) + extra_bytes
    return {"saved": int(saved), "head_transient": int(head_transient), "tokens": tokens,
            "per_block_bytes": int(max(per_block) if per_block else 0), "blocks_with_activations":
            sum(1 for b in per_block if b), "outside_blocks_bytes": int(extra_bytes)}


# ---------------------------------------------------------------------------------------------- the estimate

def _estimate_from(profile: _Profile, config: RunConfig, checkpointing: bool, device: str,
                   num_labels: int) -> Estimate:
    on_cuda = _is_cuda(device)
    batch, length = config.train.batch_size, config.data.max_length
    act = _activation_bytes(profile, batch, length, checkpointing, on_cuda)
    activations = act["saved"] + act["head_transient"]
    extra = profile.total - profile.total_base
    parts = {
        "weights": profile.weight_bytes,
        "adapter": extra * profile.param_bytes,
        "gradients": profile.trainable * profile.param_bytes,
        "optimizer": profile.trainable * 2 * profile.param_bytes,
        "activations": activations,
    }
    if on_cuda:
        workspace = CUDA_OVERHEAD
        workspace_note = f"cuBLAS workspace and allocator slack ({_mib(CUDA_OVERHEAD)}, not measured here)"
    else:
        retention = int(CPU_ALLOCATOR_RETENTION * activations)
        workspace = CPU_OVERHEAD + retention + profile.mapped_checkpoint
        workspace_note = (f"framework {_mib(CPU_OVERHEAD)} + allocator retention "
                          f"{CPU_ALLOCATOR_RETENTION:.0%} of activations")
        if profile.mapped_checkpoint:
            workspace_note += f" + float32 checkpoint pages kept mapped {_mib(profile.mapped_checkpoint)} (reclaimable)"
    parts["workspace"] = int(workspace)
    eval_batch = config.train.eval_batch_size or 2 * batch
    evaluation = 0
    if profile.task not in CLASSIFICATION:
        evaluation = 2 * eval_batch * (length + profile.prompt_tokens) * profile.vocab * 4  # logits + log-probs
    static = parts["weights"] + parts["adapter"] + parts["optimizer"] + parts["workspace"]
    candidates = {"activations": activations, "gradients": parts["gradients"], "evaluation": evaluation}
    peak_by = max(candidates, key=candidates.__getitem__)
    total = static + candidates[peak_by]

    blocks = act["blocks_with_activations"]
    precision = {4: "float32", 2: "16-bit"}[profile.param_bytes]
    notes = {
        "weights": (f"{_count(profile.total_base)} params" + (
            f"; {_count(profile.quantized_params)} in quantized Linear weights ({config.method.bits}-bit"
            f"{', double quant' if getattr(config.method, 'double_quant', False) and config.method.bits == 4 else ''}"
            f"), the rest {precision}" if profile.quantized_params else f" x {profile.param_bytes} B ({precision})")),
        "adapter": f"{_count(extra)} params added by method {profile.method}" if extra else "no added params",
        "gradients": f"{profile.param_bytes} B x {_count(profile.trainable)} trainable; fill in as activations free",
        "optimizer": f"AdamW: 2 x {profile.param_bytes} B x trainable",
        "activations": (f"{'checkpointed: block inputs + 1 block' if checkpointing else f'{blocks} blocks'}, "
                        f"B{batch} x L{length + profile.prompt_tokens} = {act['tokens']} tokens"
                        + (f"; LM head {_mib(act['head_transient'] + profile.vocab * act['tokens'] * 4)}"
                           f" (log-probs + 2 gradients, vocab {profile.vocab})" if act["head_transient"] else "")),
        "workspace": workspace_note,
        "total": f"peak = weights + adapter + optimizer + workspace + max(activations, gradients"
                 f"{', evaluation logits' if evaluation else ''}); now {peak_by}",
    }
    details = {**act, "evaluation_bytes": evaluation, "peak_by": peak_by, "family": profile.family,
               "device": device, "quantized_params": profile.quantized_params,
               "mapped_checkpoint_bytes": profile.mapped_checkpoint, "batch_size": batch, "max_length": length}
    return Estimate(parts=parts, total=int(total), trainable_params=profile.trainable, total_params=profile.total,
                    flops_per_token=_flops_per_token(profile, length, checkpointing), gradient_checkpointing=checkpointing,
                    notes=notes, details=details, device=device, config=config, num_labels=num_labels)


def _flops_per_token(profile: _Profile, length: int, checkpointing: bool) -> float:
    n, n_trainable, n_backward = profile.matmul_params, profile.matmul_trainable, profile.matmul_backward
    attended = length + profile.prompt_tokens + profile.prefix_tokens
    attention_forward = 4.0 * profile.attention_width * attended
    flops = 2.0 * n + 2.0 * n_backward + 2.0 * n_trainable + 3.0 * attention_forward
    if checkpointing:
        flops += 2.0 * n + attention_forward  # the forward pass runs twice
    return flops


# ------------------------------------------------------------------------------------------------------ helpers

def _with(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of ``config`` with some fields of some sections changed (validated again)."""
    data = config.model_dump()
    for section, values in sections.items():
        data[section] = values if section == "method" else {**data[section], **values}
    from tuneforge.config.schema import RunConfig as _RunConfig

    return _RunConfig.model_validate(data)


def _qlora_version(config: RunConfig) -> RunConfig | None:
    method = config.method
    options: dict[str, Any] = {"name": "qlora", "bits": 4, "double_quant": True}
    if method.name == "lora":
        options.update({k: v for k, v in method.model_dump().items() if k != "name"})
    else:
        options.update({"r": 16, "alpha": 32, "target_modules": "all-linear"})
    try:
        return _with(config, method=options)
    except Exception:  # noqa: BLE001 -- qlora not registered or not valid here
        return None


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def _cgroup_headroom() -> int | None:
    """Bytes left under the container's memory limit (cgroup v2 or v1), or None when there is no limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:
            return None
        return max(0, int(limit_text) - usage)
    return None


def _mib(value: float) -> str:
    return f"{value / MiB:,.0f} MiB"


def _count(value: int) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value:,}"


__all__ = ["CPU_ALLOCATOR_RETENTION", "CPU_OVERHEAD", "CUDA_OVERHEAD", "Estimate", "SAFETY_MARGIN", "advise",
           "available_memory", "estimate", "measure_flops_per_second", "seconds_per_epoch"]

