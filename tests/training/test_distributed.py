"""tuneforge train --nproc 2 on CPU processes (gloo): DDP, FSDP and DeepSpeed ZeRO-2/3 against one process, with the
effective batch kept; a killed process and --resume; the per-device memory estimate; bad topology flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from tuneforge.cli import main
from tuneforge.config import load_config
from tuneforge.config.distributed import effective_batch
from tuneforge.errors import ConfigError

TOLERANCE = 1e-3  # per logged training loss: the processes add their gradients in another order than one process


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """The tiny random BERT without dropout: each process draws its own dropout masks, which alone would make the
    curves differ; without it, N processes and one process compute the same updates."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = BertConfig.from_pretrained(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return str(folder)


def _config_file(folder: Path, model: str, data: Path, epochs: int = 4) -> Path:
    """120 rows split 96/12/12: the training rows fill whole batches of 8 (a last, partial batch would be topped up
    with repeated rows on each process, and that step differ)."""
    config = tiny_config(model, data, train={"epochs": epochs, "batch_size": 8})
    config["data"]["split"] = {"train": 0.8, "validation": 0.1, "test": 0.1}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tuneforge.cli", "train", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_two_processes_follow_one_process_under_fsdp_and_zero3(tmp_path: Path, no_dropout_bert: str,
                                                               tiny_csv: Path) -> None:
    config = _config_file(tmp_path, no_dropout_bert, tiny_csv)
    single = _train(str(config), "--output", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-2000:]
    reference = json.loads((tmp_path / "one" / "metrics.json").read_text())
    low, high = reference["test"]["finetuned"]["macro_f1_ci"]
    # the sharded strategies, where the gathering and the best-checkpoint agreement can go wrong; DDP and ZeRO-2 (measured
    # equal to 5 decimals too) are left out to keep the suite's time: DDP trains in the kill-and-resume and two-machine
    # tests, ZeRO-2 in the torchrun-by-hand test
    for strategy in ("fsdp", "deepspeed-zero3"):
        run_dir = tmp_path / strategy
        result = _train(str(config), f"distributed.strategy={strategy}", "distributed.keep_effective_batch=true",
                        "--output", str(run_dir), "--nproc", "2")
        assert result.returncode == 0, f"{strategy}: {result.stdout[-1500:]} {result.stderr[-3000:]}"
        assert "4 per device x 2 processes x 1 accumulation = 8 (the single-process run's 8, kept)" in result.stdout
        assert result.stdout.count("Test split") == 1  # one process scores the test split and prints
        curve, expected = _losses(run_dir), _losses(tmp_path / "one")
        assert len(curve) == len(expected) == 24
        worst = max(abs(a - b) for a, b in zip(curve, expected))
        assert worst < TOLERANCE, f"{strategy}: loss curve differs from one process by up to {worst:.2e}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["training"]["processes"] == 2 and metrics["training"]["strategy"] == strategy
        assert metrics["training"]["effective_batch"] == 8 and metrics["training"]["per_device_batch"] == 4
        assert metrics["validation"]["best_checkpoint"] == reference["validation"]["best_checkpoint"]
        f1, expected_f1 = metrics["test"]["finetuned"]["macro_f1"], reference["test"]["finetuned"]["macro_f1"]
        assert low <= f1 <= high, (strategy, f1, expected_f1, low, high)  # within the one-process run's interval
        assert (run_dir / "model" / "tuneforge.json").exists() and (run_dir / "report.html").exists()
        estimate = json.loads((run_dir / "estimate.json").read_text())
        assert estimate["processes"] == 2
    assert reference["test"]["finetuned"]["macro_f1"] > 0.6  # the compared runs learned something


def _worker_pids(launcher: int) -> dict[int, int]:
    """rank -> PID of the tuneforge workers started under ``launcher`` (read from their environment)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        variables = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if variables.get(b"TUNEFORGE_LAUNCHED") == b"1" and b"RANK" in variables and parent == launcher:
            found[int(variables[b"RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_a_killed_process_stops_the_run_and_resume_finishes_it(tmp_path: Path, tiny_bert: str,
                                                               tiny_csv: Path) -> None:
    config = _config_file(tmp_path, tiny_bert, tiny_csv, epochs=30)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "train", str(config), "train.early_stopping=null",
                                 "--output", str(run_dir), "--nproc", "2"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    assert launcher.poll() is None, launcher.stdout.read()[-2000:]
    workers = _worker_pids(launcher.pid)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGKILL)  # not the first process: the one that writes nothing
    output = launcher.communicate(timeout=120)[0]
    assert launcher.returncode not in (0, 2), output[-2000:]
    assert "continue from the last checkpoint with: tuneforge train" in output and "--resume --nproc 2" in output
    assert not (run_dir / "metrics.json").exists()
    steps_done = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert steps_done < 180

    again = _train(str(config), "train.early_stopping=null", "--output", str(run_dir), "--resume", "--nproc", "1")
    assert again.returncode == 2 and "started on 2 processes, resumed on 1" in again.stderr
    resumed = _train(str(config), "train.early_stopping=null", "--output", str(run_dir), "--resume", "--nproc", "2")
    assert resumed.returncode == 0, resumed.stdout[-1500:] + resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["training"]["global_steps"] == 180  # 96 rows / (8 x 2) = 6 steps x 30 epochs
    steps = [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # the log continues where the checkpoint left it, no step twice


def test_effective_batch_is_kept_by_dividing_accumulation_then_batch(tiny_bert: str, tiny_csv: Path) -> None:
    train = load_config(tiny_config(tiny_bert, tiny_csv, train={"batch_size": 8,
                                                                "gradient_accumulation_steps": 4})).train
    assert effective_batch(train, 2, keep=True) == (8, 2)
    assert effective_batch(train, 4, keep=True) == (8, 1)
    assert effective_batch(train, 8, keep=True) == (1, 4)  # the accumulation 4 does not divide by 8; the batch does
    assert effective_batch(train, 8, keep=False) == (8, 4)
    with pytest.raises(ConfigError, match="cannot be split over 3 processes"):
        effective_batch(train, 3, keep=True)


def test_the_memory_estimate_is_per_device_under_the_strategy(tiny_bert: str, tiny_csv: Path) -> None:
    from tuneforge.planning.memory import estimate

    def parts(strategy: str, processes: int) -> dict[str, int]:
        config = load_config(tiny_config(tiny_bert, tiny_csv, method={"name": "full"},
                                         distributed={"strategy": strategy}))
        return estimate(config, processes=processes).parts

    one, ddp, zero2, fsdp = parts("ddp", 1), parts("ddp", 4), parts("deepspeed-zero2", 4), parts("fsdp", 4)
    assert ddp["ddp_buckets"] == ddp["gradients"] == one["gradients"] and ddp["weights"] == one["weights"]
    assert zero2["weights"] == one["weights"] and zero2["optimizer"] == -(-one["optimizer"] // 4)
    assert zero2["gradients"] == -(-one["gradients"] // 4)
    assert fsdp["weights"] == -(-one["weights"] // 4) and fsdp["optimizer"] == zero2["optimizer"]


def test_bad_topology_flags_get_one_line_and_exit_code_2(tmp_path: Path, tiny_bert: str, tiny_csv: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    config = _config_file(tmp_path, tiny_bert, tiny_csv)
    assert main(["train", str(config), "--nproc", "2", "--nnodes", "2"]) == 2
    assert "--nnodes > 1: give --output RUN_DIR" in capsys.readouterr().err
    assert main(["train", str(config), "--nproc", "2", "--nnodes", "2", "--node-rank", "2", "--output", "x"]) == 2
    assert "--node-rank 2: must be 0 to 1" in capsys.readouterr().err
    assert main(["train", str(config), "distributed.strategy=zero9", "--nproc", "2"]) == 2
    assert "distributed.strategy" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_exported_launch_files_and_torchrun_started_by_hand(tmp_path: Path, tiny_bert: str, tiny_csv: Path) -> None:
    """launch-config writes accelerate.yaml, deepspeed.json and launch.txt; its torchrun line, run as written
    (RUN_DIR filled in), trains on 2 CPU processes with the first one locking and writing the folder."""
    import shlex

    config = _config_file(tmp_path, tiny_bert, tiny_csv, epochs=2)
    assert main(["launch-config", str(config), "distributed.strategy=deepspeed-zero2", "--nproc", "2",
                 "--output", str(tmp_path / "files")]) == 0
    accelerate = yaml.safe_load((tmp_path / "files" / "accelerate.yaml").read_text())
    assert accelerate["num_processes"] == 2 and accelerate["distributed_type"] == "MULTI_GPU"
    deepspeed = json.loads((tmp_path / "files" / "deepspeed.json").read_text())
    assert deepspeed["zero_optimization"]["stage"] == 2 and deepspeed["train_micro_batch_size_per_gpu"] == "auto"
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    assert HfTrainerDeepSpeedConfig(deepspeed).get_value("zero_optimization.stage") == 2  # transformers reads it
    line = next(row for row in (tmp_path / "files" / "launch.txt").read_text().splitlines()
                if row.startswith("torchrun"))
    args = [str(tmp_path / "run") if a == "RUN_DIR" else a for a in shlex.split(line)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *args[1:]], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    assert "2 processes, strategy deepspeed-zero2" in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["training"]["processes"] == 2 and (tmp_path / "run" / ".lock").read_text() == ""


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_two_machines_one_process_each(tmp_path: Path, tiny_bert: str, tiny_csv: Path) -> None:
    """Two launchers as two machines (--nnodes 2, node ranks 0 and 1, machine 0's address and port), one folder on a
    shared filesystem: machine 0's process writes the run, machine 1's trains its half."""
    import socket

    config = _config_file(tmp_path, tiny_bert, tiny_csv, epochs=2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    machines = [subprocess.Popen([sys.executable, "-m", "tuneforge.cli", "train", str(config), "--output",
                                  str(tmp_path / "run"), "--nproc", "1", "--nnodes", "2", "--node-rank", str(rank),
                                  "--master-addr", "127.0.0.1", "--master-port", port],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
                for rank in (0, 1)]
    outputs = [machine.communicate(timeout=300)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "Test split" in outputs[0] and "Test split" not in outputs[1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["training"]["processes"] == 2 and metrics["training"]["global_steps"] == 12  # 96 / 16 x 2
