"""Pruning of a loaded fp32 model, in place, from a calibration sample of the run's own training split.

- ``magnitude``: in every Linear of the transformer blocks, the ``sparsity`` share of weights smallest in |W|.
- ``wanda``: Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"; after the
  reference implementation, locuslab/wanda): score |W_ij| * ||X_j||_2, X_j the j-th input feature over every
  calibration token, and the ``sparsity`` share lowest-scored weights zeroed within each output row.
- ``structured``: whole MLP channels and (for decoders with grouped heads) whole key/value head groups removed,
  scored the Wanda way (the output weights' norm times the input's norm), the same count in every block, so the
  config stays a plain transformers config (intermediate_size, num_attention_heads) and the model really gets
  smaller and faster. BERT-style configs tie the head size to the hidden size: their heads are kept.

Unstructured pruning zeroes weights of a dense model: the file and the speed stay (sparse kernels would be needed).
Embeddings and the task's head are never pruned.
"""

from __future__ import annotations

from typing import Any

from tuneforge.errors import UserError

METHODS = ("magnitude", "wanda", "structured")
MLP_LAYOUTS = (  # (modules that write the channels, the module that reads them), relative to a block
    (("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # Llama, Qwen, Mistral, Gemma
    (("mlp.up_proj",), "mlp.down_proj"),
    (("intermediate.dense",), "output.dense"),  # BERT, RoBERTa, MiniLM
    (("mlp.fc1",), "mlp.fc2"),
)


def prune(model: Any, method: str, sparsity: float, calibration: list[list[int]]) -> dict[str, Any]:
    """Prune ``model`` in place; returns what was removed. ``calibration``: token id lists."""
    if method not in METHODS:
        raise UserError(f"--prune {method}: unknown (choose from {', '.join(METHODS)})")
    if not 0 < sparsity < 1:
        raise UserError(f"--sparsity {sparsity}: give a share between 0 and 1 (0.5 = half)")
    before = sum(p.numel() for p in model.parameters())
    if method == "structured":
        facts = _structured(model, sparsity, calibration)
    else:
        facts = _unstructured(model, sparsity, calibration if method == "wanda" else None)
    after = sum(p.numel() for p in model.parameters())
    return {"prune": method, "sparsity": sparsity, "params_before": before, "params_after": after, **facts}


def blocks(model: Any) -> list[Any]:
    """The repeated transformer blocks: the ModuleList holding most of the parameters."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        raise UserError("this model has no repeated transformer blocks to prune")
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters())))


def _linears(model: Any) -> list[tuple[str, Any]]:
    import torch

    return [(f"{i}.{name}", module) for i, block in enumerate(blocks(model))
            for name, module in block.named_modules() if isinstance(module, torch.nn.Linear)]


def input_norms(model: Any, modules: list[tuple[str, Any]], calibration: list[list[int]],
                batch_size: int = 8) -> dict[str, Any]:
    """||X_j||_2 of every input feature of ``modules`` over every calibration token (no padding)."""
    import torch

    squares: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def collect(module: Any, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            squares[name] = squares.get(name, 0) + x.pow(2).sum(0)
        return collect

    handles = [module.register_forward_hook(hook(name)) for name, module in modules]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, len(calibration), batch_size):
                for ids in calibration[start:start + batch_size]:  # one at a time: no padding tokens counted
                    model(input_ids=torch.tensor([ids], device=device))
    finally:
        for handle in handles:
            handle.remove()
    if not squares:
        raise UserError("the calibration sample is empty: the run's training split has no examples to read")
    return {name: value.sqrt() for name, value in squares.items()}


def _unstructured(model: Any, sparsity: float, calibration: list[list[int]] | None) -> dict[str, Any]:
    import torch

    modules = _linears(model)
    norms = input_norms(model, modules, calibration) if calibration is not None else None
    zeros = total = 0
    with torch.no_grad():
        for name, module in modules:
            weight = module.weight
            if norms is None:  # magnitude: one threshold per matrix
                k = int(weight.numel() * sparsity)
                threshold = weight.abs().flatten().kthvalue(k).values if k else None
                if threshold is not None:
                    weight[weight.abs() <= threshold] = 0
            else:  # wanda: per output row
                score = weight.abs() * norms[name].to(weight.dtype).unsqueeze(0)
                k = int(weight.shape[1] * sparsity)
                lowest = torch.sort(score, dim=1, stable=True).indices[:, :k]
                weight.scatter_(1, lowest, 0.0)
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return {"zeroed_share_of_block_weights": round(zeros / max(1, total), 4), "linears": len(modules)}


def _structured(model: Any, share: float, calibration: list[list[int]]) -> dict[str, Any]:
    config = model.config
    layer_blocks = blocks(model)
    layout = next((lay for lay in MLP_LAYOUTS if _has(layer_blocks[0], (*lay[0], lay[1]))), None)
    if layout is None:
        raise UserError(f"structured pruning does not know the MLP of {type(layer_blocks[0]).__name__} blocks; "
                        f"use --prune wanda or magnitude")
    writers, reader = layout
    heads = _has(layer_blocks[0], ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")) \
        and getattr(config, "num_key_value_heads", None) is not None
    readers = [(f"{i}.{reader}", _get(b, reader)) for i, b in enumerate(layer_blocks)]
    outs = [(f"{i}.self_attn.o_proj", _get(b, "self_attn.o_proj")) for i, b in enumerate(layer_blocks)] if heads else []
    norms = input_norms(model, readers + outs, calibration)
    width = _get(layer_blocks[0], reader).in_features
    keep = width - int(round(width * share))
    for i, block in enumerate(layer_blocks):
        down = _get(block, reader)
        score = down.weight.abs().float().pow(2).sum(0).sqrt() * norms[f"{i}.{reader}"]
        kept = score.topk(keep).indices.sort().values
        for name in writers:
            _slice(_get(block, name), kept, dim=0)
        _slice(down, kept, dim=1)
    config.intermediate_size = keep
    facts: dict[str, Any] = {"mlp_channels": [width, keep]}
    if heads:
        facts["kv_groups"] = _prune_groups(layer_blocks, config, share, norms)
    else:
        facts["heads"] = "kept (this config ties the head size to the hidden size)"
    return facts


def _prune_groups(layer_blocks: list[Any], config: Any, share: float, norms: dict[str, Any]) -> list[int]:
    """Remove the lowest-scored key/value head groups (with their query heads) in every block."""
    import torch

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    groups, per_group = config.num_key_value_heads, config.num_attention_heads // config.num_key_value_heads
    keep = groups - int(round(groups * share))
    if keep == groups or keep < 1:
        return [groups, groups]
    for i, block in enumerate(layer_blocks):
        attention = block.self_attn
        columns = attention.o_proj.weight.abs().float().pow(2).sum(0).sqrt() * norms[f"{i}.self_attn.o_proj"]
        score = columns.reshape(groups, per_group * head_dim).sum(1)
        kept = score.topk(keep).indices.sort().values
        query = torch.cat([torch.arange(g * per_group * head_dim, (g + 1) * per_group * head_dim) for g in kept])
        key = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in kept])
        _slice(attention.q_proj, query, dim=0)
        _slice(attention.k_proj, key, dim=0)
        _slice(attention.v_proj, key, dim=0)
        _slice(attention.o_proj, query, dim=1)
    config.head_dim = head_dim
    config.num_key_value_heads = keep
    config.num_attention_heads = keep * per_group
    return [groups, keep]


def _slice(linear: Any, index: Any, dim: int) -> None:
    import torch

    with torch.no_grad():
        linear.weight = torch.nn.Parameter(linear.weight.index_select(dim, index).clone())
        if dim == 0 and linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias.index_select(0, index).clone())
    if dim == 0:
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)


def _get(block: Any, path: str) -> Any:
    return block.get_submodule(path)


def _has(block: Any, paths: tuple[str, ...]) -> bool:
    names = {name for name, _ in block.named_modules()}
    return all(path in names for path in paths)
