"""Serving throughput: N concurrent chat requests from a bounded loopback client (the real ``openai`` package),
against tuneforge serve with batching, tuneforge serve one request at a time (--max-batch 1), and
``transformers serve`` (transformers' own OpenAI-compatible server, the peer) on the same model merged, in its
default mode and with continuous batching. Each server is its own process, started, warmed up with one request,
measured, stopped; one after the other on the same machine.

Prints one JSON line: per server requests/s, completion tokens/s, p50/p95 latency (s), and the ratios of tuneforge
batched over each of the others.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python benchmarks/serve_batching.py   # trains a small SmolLM2 LoRA run first
    python benchmarks/serve_batching.py --run RUN_DIR                          # an existing generative LoRA run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SERVERS = ("tuneforge_batched", "tuneforge_one_by_one", "transformers_serve", "transformers_serve_cb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a generative LoRA run folder (default: train one on SmolLM2-135M)")
    parser.add_argument("--requests", type=int, default=32, help="requests per server")
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending at once")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8, help="tuneforge's batch size")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--servers", default=",".join(SERVERS), help="which servers, comma-separated")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        run = Path(args.run) if args.run else train_run(workdir)
        merged = merge(run, workdir / "merged")
        prompts = [f"Tell me about topic number {n}." for n in range(args.requests)]
        results: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency,
                                   "max_tokens": args.max_tokens, "threads": args.threads, "max_batch": args.max_batch}
        for name in args.servers.split(","):
            command, model = server_command(name, run, merged, args)
            results[name] = measure(command, model, prompts, args, workdir)
        batched = results.get("tuneforge_batched", {})
        results["ratios"] = {f"{rate}_vs_{name}": round(batched[rate] / figures[rate], 3)
                             for name, figures in results.items()
                             if name in SERVERS and name != "tuneforge_batched"
                             for rate in ("requests_per_s", "completion_tokens_per_s")
                             if figures.get(rate) and rate in batched}
        print(json.dumps(results))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def train_run(workdir: Path) -> Path:
    """A small real run: SmolLM2-135M, LoRA, a few chatterbot conversations (what is served is the adapter)."""
    from tuneforge.config.loader import load_config, preset_path
    from tuneforge.pipelines.finetune import finetune

    config = load_config(preset_path("quickstart-chat"), ["data.max_rows=60", "train.epochs=1", "data.max_length=64",
                                                          "evaluation.baselines=[]", "evaluation.max_test_examples=2",
                                                          "tracking.enabled=false"])
    return finetune(config, output=workdir / "run", log=lambda _: None).run_dir


def merge(run: Path, target: Path) -> Path:
    """The run's adapter folded into its base: what transformers serve loads."""
    from tuneforge.pipelines.export import export_run

    export_run(run, target, merge=True)
    return target


def server_command(name: str, run: Path, merged: Path, args: Any) -> tuple[list[str], str]:
    bin_dir = Path(sys.executable).parent
    if name.startswith("tuneforge"):
        batch = args.max_batch if name == "tuneforge_batched" else 1
        return [str(bin_dir / "tuneforge"), "serve", str(run), "--port", "{port}", "--max-batch", str(batch),
                "--max-wait-ms", "20", "--max-queue", str(4 * args.requests)], run.name
    extra = ["--continuous-batching"] if name == "transformers_serve_cb" else []
    return [str(bin_dir / "transformers"), "serve", str(merged), "--port", "{port}", *extra], str(merged)


def measure(command: list[str], model: str, prompts: list[str], args: Any, workdir: Path) -> dict[str, Any]:
    import openai

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    log = open(workdir / f"server-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([part.replace("{port}", str(port)) for part in command], stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    try:
        if not wait_until_answers(port, model, process):
            return {"error": "did not answer: " + tail(workdir / f"server-{port}.log")}
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
        latencies: list[float] = []
        tokens: list[int] = []
        lock = threading.Lock()

        def ask(prompt: str) -> None:
            started = time.perf_counter()
            answer = client.chat.completions.create(model=model, max_tokens=args.max_tokens, temperature=0,
                                                    messages=[{"role": "user", "content": prompt}])
            with lock:
                latencies.append(time.perf_counter() - started)
                tokens.append(answer.usage.completion_tokens if answer.usage else 0)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            for future in [pool.submit(ask, p) for p in prompts]:
                future.result()
        seconds = time.perf_counter() - started
        ordered = sorted(latencies)
        return {"seconds": round(seconds, 2), "requests_per_s": round(len(prompts) / seconds, 3),
                "completion_tokens_per_s": round(sum(tokens) / seconds, 1),
                "mean_completion_tokens": round(statistics.mean(tokens), 1),
                "p50_latency_s": round(ordered[len(ordered) // 2], 3),
                "p95_latency_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3)}
    except Exception as exc:  # noqa: BLE001 - a peer that fails is recorded, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]} | {tail(workdir / f'server-{port}.log')}"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_until_answers(port: int, model: str, process: Any, timeout: float = 600) -> bool:
    """Until one chat request succeeds (the warm-up: the model is loaded and has run once)."""
    body = json.dumps({"model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                if response.status == 200:
                    return True
        except Exception:  # noqa: BLE001 - not up yet, or still loading (503)
            time.sleep(0.5)
    return False


def tail(path: Path) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-4:])[-600:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
