"""A Hugging Face causal LM folder as a GGUF file for llama.cpp / Ollama, through llama.cpp's own converter.

The converter is not on PyPI by itself: the pinned ``llama-cpp-python`` sdist vendors it (``convert_hf_to_gguf.py``,
its ``conversion/`` package and ``gguf-py``, newer than the ``gguf`` wheel). It is fetched with pip at first use
and its converter files kept in the cache; the conversion runs in a subprocess. The converter writes f32, f16, bf16
and q8_0 itself; k-quants (q4_k_m ...) need llama.cpp's quantizer, reached through an installed ``llama_cpp``.

After the export the file is checked: its metadata (architecture, tokenizer, chat template) and the model loaded
back by transformers (which dequantizes GGUF) against the HF model: top-1 agreement over every position of a set
of prompts and greedy text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.io import cache_dir

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendored llama.cpp converts with our transformers
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by the converter itself
QUANTIZER_TYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_* ids
QUANT_TYPES = (*CONVERTER_TYPES, *QUANTIZER_TYPES)
# least share of positions whose top-1 token equals the HF model's (measured on prompts of the run's own data):
# f16 rounds 10 bits of mantissa, q8_0 blocks of 32 weights to 8 bits, q4_k_m to ~4.8 bits a weight
AGREEMENT = {"f32": 0.999, "f16": 0.98, "bf16": 0.95, "q8_0": 0.90, "q6_k": 0.88, "q5_k_m": 0.85, "q4_k_m": 0.80,
             "q4_0": 0.75}
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo", "granite")


def converter_dir() -> Path:
    """The vendored llama.cpp converter files, fetched into the cache at first use."""
    target = cache_dir() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (target / "convert_hf_to_gguf.py").exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                               "--no-deps", "--no-binary", ":all:", "-q", "-d", scratch],
                              capture_output=True, text=True)
        archives = list(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        if not archives:
            detail = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise UserError(f"could not fetch llama.cpp's converter (pip download llama-cpp-python=="
                            f"{LLAMA_CPP_PYTHON}: {detail}); check that PyPI is reachable")
        staging = Path(scratch) / "converter"
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                relative = member.name.removeprefix(prefix)
                if member.name.startswith(prefix) and relative.startswith(wanted) and member.isfile():
                    member.name = relative
                    archive.extract(member, staging, filter="data")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)
    return target


def check_convertible(model_dir: Path, meta: dict[str, Any]) -> None:
    import json

    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import task_of

    if not task_spec(task_of(meta)).next_token_loss:  # a decoder-only language model
        raise UserError(f"GGUF export is for decoder-only language models (causal-lm runs); this run is "
                        f"{task_of(meta)}: export --format hf instead")
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").exists() else {}
    kind = config.get("model_type")
    if kind is not None and kind not in ARCHITECTURES:
        raise UserError(f"GGUF export here supports {', '.join(ARCHITECTURES)} models; this one is {kind}")


def check_quant(quant: str) -> None:
    """Before anything is merged or converted: a type this export knows, and llama.cpp's quantizer for k-quants."""
    if quant not in QUANT_TYPES:
        raise UserError(f"--quant {quant}: not a GGUF type here (choose from {', '.join(QUANT_TYPES)})")
    if quant in QUANTIZER_TYPES:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise UserError(f"--quant {quant} needs llama.cpp's quantizer: pip install llama-cpp-python=="
                            f"{LLAMA_CPP_PYTHON} (it builds from source, ~10 minutes), or use one of "
                            f"{', '.join(CONVERTER_TYPES)}") from None


def convert(hf_dir: Path, output: Path, quant: str) -> Path:
    """``hf_dir`` (a standalone HF model with its tokenizer) -> ``output`` (a .gguf file) in ``quant``."""
    check_quant(quant)
    outtype = quant if quant in CONVERTER_TYPES else "f16"  # k-quants start from f16, as llama.cpp's docs do
    first = output if quant in CONVERTER_TYPES else output.with_name(output.stem + ".f16.gguf")
    tool = converter_dir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # (the converter puts its own gguf-py first: the wheel is older)
    env.pop("NO_LOCAL_GGUF", None)
    done = subprocess.run([sys.executable, str(tool / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", outtype,
                           "--outfile", str(first)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit {done.returncode}"
        if "pre-tokenizer was not recognized" in done.stderr:
            detail = ("llama.cpp does not know this tokenizer's pre-tokenizer (its hash is not in the converter's "
                      "list); export --format hf and convert with a newer llama.cpp")
        raise UserError(f"llama.cpp's converter failed on {hf_dir}: {detail}")
    if quant in CONVERTER_TYPES:
        return output
    quantize(first, output, quant)
    first.unlink()
    return output


def quantize(source: Path, output: Path, quant: str) -> None:
    """A k-quant through llama.cpp's quantizer (``llama_cpp``, built from source: pip install llama-cpp-python)."""
    import ctypes

    import llama_cpp

    global _SILENT
    _SILENT = _SILENT or llama_cpp.llama_log_callback(_silent)

    llama_cpp.llama_log_set(_SILENT, ctypes.c_void_p(0))  # its loader's dump of every key is not for the console
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZER_TYPES[quant]
    params.nthread = max(1, int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    if llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), ctypes.byref(params)) != 0:
        raise UserError(f"llama.cpp could not quantize {source} to {quant}")


def _silent(level: int, text: bytes, data: Any) -> None:
    return None


_SILENT: Any = None  # llama.cpp's log callback, kept referenced while llama.cpp holds it


def metadata(path: Path) -> dict[str, Any]:
    """What a GGUF says about itself: architecture, tokenizer, chat template, tensor types."""
    from collections import Counter

    reader = _reader(path)

    def field(key: str) -> Any:
        value = reader.fields.get(key)
        return None if value is None else value.contents()

    template = field("tokenizer.chat_template")
    return {"architecture": field("general.architecture"), "tokenizer_model": field("tokenizer.ggml.model"),
            "pre_tokenizer": field("tokenizer.ggml.pre"), "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data)
            if "tokenizer.ggml.tokens" in reader.fields else None,
            "chat_template": bool(template), "bos_token_id": field("tokenizer.ggml.bos_token_id"),
            "eos_token_id": field("tokenizer.ggml.eos_token_id"),
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors))}


def _reader(path: Path) -> Any:
    from gguf import GGUFReader

    return GGUFReader(str(path))


def agreement(hf_model: Any, gguf_path: Path, tokenizer: Any, prompts: list[list[int]],
              max_new_tokens: int = 16) -> dict[str, Any]:
    """The GGUF loaded back by transformers against the HF model on ``prompts`` (token ids): the share of positions
    whose top-1 token agrees, the largest logit difference, and how many greedy continuations are equal."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.models.loading import quiet_libraries

    quiet_libraries()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                  dtype=torch.float32).eval()
    hf_model = hf_model.float().eval()
    agree = total = same_text = 0
    largest = 0.0
    with torch.inference_mode():
        for ids in prompts:
            batch = torch.tensor([ids])
            a, b = hf_model(batch).logits[0], loaded(batch).logits[0]
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += len(ids)
            largest = max(largest, float((a - b).abs().max()))
            greedy = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            same_text += int(torch.equal(hf_model.generate(batch, **greedy), loaded.generate(batch, **greedy)))
    return {"prompts": len(prompts), "positions": total, "top1_agreement": round(agree / max(1, total), 4),
            "max_abs_logit_difference": round(largest, 4), "greedy_equal": same_text}
