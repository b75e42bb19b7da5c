"""Measure one model folder in a process of its own (so that its peak memory is its own): loaded the way
``predict``/``generate`` load a run, then its task's test outputs and throughput.

    python -m tuneforge.export.measure MODEL_DIR RUN_DIR OUT.json [--threads 2] [--gguf]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def measure(model_dir: Path, run_dir: Path, threads: int) -> dict[str, Any]:
    import torch

    from tuneforge.export.optimize import prepared_data, run_config
    from tuneforge.models.loading import quiet_libraries
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import loading, read_model_meta, task_of

    quiet_libraries()
    torch.set_num_threads(threads)
    config = run_config(run_dir)
    folder, meta = read_model_meta(model_dir)
    task = task_spec(task_of(meta))
    prepared, _ = prepared_data(run_dir, folder, config)
    before = _start_peak()
    started = time.perf_counter()
    with loading(folder):
        predictor = task.call("predictor", folder, meta, None)
    load_seconds = time.perf_counter() - started
    outputs = task.call("variant_outputs", predictor.model, predictor.tokenizer, prepared, config)
    return {"outputs": outputs, "load_seconds": round(load_seconds, 2), "threads": threads,
            "rss_before_load_mb": round(before, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "precision": getattr(predictor.model, "_tuneforge_precision", "fp32")}


def measure_gguf(gguf_file: Path, run_dir: Path, threads: int) -> dict[str, Any]:
    """A causal-lm run's GGUF export, run by llama.cpp (llama-cpp-python), scored as ``measure`` scores a folder."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise RuntimeError("GGUF rows are run by llama.cpp: make llama (pip install llama-cpp-python==0.3.36)") from None
    from tuneforge.export.optimize import prepared_data, run_config
    from tuneforge.models.loading import quiet_libraries
    from tuneforge.tasks.run_folder import read_model_meta
    from tuneforge.tasks.variants import gguf_outputs

    quiet_libraries()
    config = run_config(run_dir)
    folder, _ = read_model_meta(run_dir)
    prepared, tokenizer = prepared_data(run_dir, folder, config)
    before = _start_peak()
    started = time.perf_counter()
    llm = Llama(model_path=str(gguf_file), n_ctx=max(512, config.data.max_length + 64), n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False)
    load_seconds = time.perf_counter() - started
    outputs = gguf_outputs(llm, tokenizer, prepared, config)
    return {"outputs": outputs, "load_seconds": round(load_seconds, 2), "threads": threads,
            "rss_before_load_mb": round(before, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "precision": "gguf"}


def _start_peak() -> float:
    """Reset the process's peak resident memory (Linux: clear_refs 5) so that the peak read later is the model's
    loading and running, not the data preparation before it; returns the resident memory now (MB)."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gguf", action="store_true", help="MODEL_DIR is a GGUF file, run by llama.cpp")
    args = parser.parse_args(argv)
    from tuneforge.io import atomic_write_json

    how = measure_gguf if args.gguf else measure
    atomic_write_json(args.out, how(args.model_dir, args.run_dir, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
