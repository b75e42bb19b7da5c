"""``tuneforge optimize RUN_DIR --quantize ... --prune ... --output DIR``: one smaller model; ``--compare``: every
variant measured on the run's own test split, against the unoptimized model, in one table (optimize.json and
optimize.html with a size-vs-quality plot).

Each variant is measured in a process of its own, loaded as ``predict`` loads a run: file size (weights and config),
peak memory, throughput (median of 3 after a warm-up, on ``threads`` threads), the task metric with its interval and
the paired difference to the unoptimized fp32 model (the same bootstrap resamples), and how often it answers as that
model does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_json


@dataclass(frozen=True)
class Row:
    name: str
    quantize: str | None = None
    prune: str | None = None
    sparsity: float = 0.5
    precision: str | None = None
    gguf: str | None = None  # a GGUF type: exported by llama.cpp's converter, run by llama.cpp (causal-lm runs)


ROWS = (
    Row("fp32", precision="fp32"),  # the reference: every difference is to this row
    Row("bf16", precision="bf16"),
    Row("torch int8 dynamic", quantize="torch-int8-dynamic"),
    Row("torchao int8 weight-only", quantize="int8"),
    Row("torchao int8 dynamic", quantize="int8-dynamic"),
    Row("bnb int8", quantize="bnb-int8"),
    Row("bnb nf4", quantize="nf4"),
    Row("magnitude 50%", prune="magnitude", sparsity=0.5),
    Row("wanda 50%", prune="wanda", sparsity=0.5),
    Row("structured 25%", prune="structured", sparsity=0.25),
    Row("gguf q8_0", gguf="q8_0"),
    Row("gguf q4_k_m", gguf="q4_k_m"),
)


def optimize(run_dir: str | Path, output: str | Path, quantize: str | None = None, prune: str | None = None,
             sparsity: float = 0.5, log: Callable[[str], None] = print) -> dict[str, Any]:
    from tuneforge.export.optimize import build_variant
    from tuneforge.models.loading import quiet_libraries

    quiet_libraries()
    facts = build_variant(run_dir, output, quantize, prune, sparsity, log)
    atomic_write_json(Path(output) / "optimize.json", facts)
    return facts


def compare(run_dir: str | Path, output: str | Path, rows: tuple[Row, ...] = ROWS, threads: int = 2,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build and measure every row; a row that fails says why and the table goes on."""
    from tuneforge.export.optimize import build_variant, folder_bytes, prepared_data, run_config, standalone
    from tuneforge.models.loading import quiet_libraries
    from tuneforge.tasks.registry import task_spec
    from tuneforge.tasks.run_folder import read_model_meta, task_of

    quiet_libraries()
    run_dir, output = Path(run_dir), Path(output)
    model_dir, meta = read_model_meta(run_dir)
    task = task_spec(task_of(meta))
    if not task.variant_outputs:
        raise UserError(f"optimize --compare has no table for {task.name} runs yet (it has for sequence-"
                        f"classification, causal-lm and seq2seq); optimize one variant with --quantize/--prune")
    config = run_config(run_dir)
    prepared = None
    table: list[dict[str, Any]] = []
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output) as scratch:
        merged = standalone(run_dir, model_dir, meta, Path(scratch) / "merged")  # once, not once per row
        rows = tuple(row for row in rows if not row.gguf or _gguf_applies(model_dir, meta))
        for number, row in enumerate(rows, 1):
            log(f"[{number}/{len(rows)}] {row.name}")
            folder = output / "variants" / row.name.replace(" ", "-").replace("%", "")
            entry: dict[str, Any] = {"name": row.name, "folder": str(folder)}
            try:
                measured = output / "measurements" / f"{folder.name}.json"
                if row.gguf:
                    entry.update(_gguf_row(run_dir, folder, row.gguf, measured, threads))
                    table.append(entry)
                    continue
                if row.prune and prepared is None:
                    prepared, _ = prepared_data(run_dir, model_dir, config)
                entry["built"] = build_variant(run_dir, folder, row.quantize, row.prune, row.sparsity, lambda _: None,
                                               prepared, row.precision, merged)
                entry["bytes"] = folder_bytes(folder)
                entry.update(_measure(folder, run_dir, measured, threads))
            except Exception as exc:  # noqa: BLE001 - a library that cannot do this variant here: said in its row
                entry["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                log(f"  {row.name}: failed ({entry['error']})")
            table.append(entry)
    reference = next((e for e in table if e["name"] == rows[0].name and "outputs" in e), None)
    if reference is None:
        raise UserError(f"the reference row ({rows[0].name}) could not be measured: {table[0].get('error')}")
    for entry in table:
        if "outputs" in entry:
            entry["figures"] = task.call("variant_figures", reference["outputs"], entry["outputs"], config)
            entry["ratios"] = {"size": round(entry["bytes"] / reference["bytes"], 3),
                               "speed": round(entry["speed"]["per_second"] / reference["speed"]["per_second"], 3)}
    result = {"run": str(run_dir.resolve()), "task": task.name, "reference": rows[0].name, "threads": threads,
              "cpu": _cpu(), "rows": [{k: v for k, v in e.items() if k != "outputs"} for e in table]}
    atomic_write_json(output / "optimize.json", result)
    from tuneforge.evaluation.optimize_report import write_optimize_report

    write_optimize_report(output, result)
    return result


def chosen_rows(names: str | None) -> tuple[Row, ...]:
    """``--variants a,b``: those rows (by name), always after the fp32 reference."""
    if not names:
        return ROWS
    known = {row.name: row for row in ROWS}
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UserError(f"--variants {unknown[0]!r}: unknown (choose from {', '.join(known)})")
    return (ROWS[0], *(known[name] for name in wanted if name != ROWS[0].name))


def _gguf_applies(model_dir: Path, meta: dict[str, Any]) -> bool:
    """GGUF rows are for llama-family causal LMs (what llama.cpp's converter reads); other runs leave them out."""
    from tuneforge.export.gguf import check_convertible

    try:
        check_convertible(model_dir, meta)
    except UserError:
        return False
    return True


def _gguf_row(run_dir: Path, folder: Path, quant: str, out: Path, threads: int) -> dict[str, Any]:
    """Exported by llama.cpp's converter (and quantizer), checked against the merged model, run by llama.cpp."""
    from tuneforge.pipelines.export_gguf import export_gguf

    facts = export_gguf(run_dir, folder, quant, log=lambda _: None)
    built = {"gguf": quant, "file": facts["file"], "agreement": facts["agreement"]}
    return {"built": built, "bytes": facts["bytes"], **_measure(Path(facts["output"]), run_dir, out, threads, gguf=True)}


def _measure(folder: Path, run_dir: Path, out: Path, threads: int, gguf: bool = False) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-m", "tuneforge.export.measure", str(folder), str(run_dir), str(out),
                           "--threads", str(threads), *(["--gguf"] if gguf else [])], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"the measurement exited with {done.returncode}")
    measured = json.loads(out.read_text())
    outputs = measured.pop("outputs")
    return {**measured, "outputs": outputs, "speed": outputs.pop("speed"),
            "model_memory_mb": round(measured["peak_rss_mb"] - measured["rss_before_load_mb"], 1)}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"
