"""``tuneforge train CFG --nproc N [--nnodes M --node-rank R --master-addr A]``: the same run on N processes per
machine, started by torchrun's own launcher (torch.distributed.run, in this process: its rendezvous, its restart
and failure handling). This process chooses the run folder and holds its lock; each worker runs
``tuneforge train`` in that folder (training/distributed.py: only the first process writes).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuneforge.errors import UserError


@dataclass
class Topology:
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def flags(self) -> list[str]:
        """The same topology as tuneforge train flags."""
        if self.nnodes == 1:
            return ["--nproc", str(self.nproc)]
        return ["--nproc", str(self.nproc), "--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank),
                "--master-addr", self.master_addr, "--master-port", str(self.master_port)]

    def torchrun_args(self) -> list[str]:
        """torchrun's own flags: one machine with a free port found by torchrun (a standalone rendezvous), or a
        static rendezvous at the first node's address."""
        if self.nnodes == 1:
            return ["--standalone", f"--nproc-per-node={self.nproc}"]
        return [f"--nproc-per-node={self.nproc}", f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                f"--master-addr={self.master_addr}", f"--master-port={self.master_port}"]


def check_topology(topology: Topology, output: str | None) -> None:
    if topology.nproc < 1 or topology.nnodes < 1:
        raise UserError("--nproc and --nnodes: at least 1 each")
    if not 0 <= topology.node_rank < topology.nnodes:
        raise UserError(f"--node-rank {topology.node_rank}: must be 0 to {topology.nnodes - 1} (--nnodes "
                        f"{topology.nnodes})")
    if topology.nnodes > 1 and not output:
        raise UserError("--nnodes > 1: give --output RUN_DIR (the same folder on every node: a shared filesystem, so "
                        "that checkpoints can be resumed by every process)")


def launch(config_file: str, overrides: list[str], topology: Topology, output: str | None, resume: bool,
           keep_checkpoints: bool, log: Callable[[str], None] = print) -> int:
    """Run the workers; returns the exit code of the first that failed (2 for bad input, which that worker has
    already explained in one line), else 0."""
    from tuneforge.config import load_config
    from tuneforge.pipelines.run_dir import RunLock, choose_run_dir

    check_topology(topology, output)
    config = load_config(config_file, overrides)  # a bad config stops here, before any process starts
    first = topology.node_rank == 0  # the other machines' launchers use machine 0's folder as it is
    run_dir = (choose_run_dir(config.name, output or config.output_dir, resume) if first else Path(output)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir) if first else None  # held for the workers (TUNEFORGE_LAUNCHED: they take none)
    try:
        if first:
            _check_world(run_dir, resume, topology.nproc * topology.nnodes)
        settled = [] if resume else [f"train.precision={_precision(config)}"]  # one decision for all processes
        worker = [*(["--debug"] if "--debug" in sys.argv else []), "train", config_file, *overrides, *settled,
                  "--output", str(run_dir), *(["--resume"] if resume else []),
                  *(["--keep-checkpoints"] if keep_checkpoints else [])]
        log(f"launching {topology.nproc} process(es) on node {topology.node_rank} of {topology.nnodes} "
            f"(strategy {config.distributed.strategy}) into {run_dir}")
        code = _run_torchrun(topology, worker)
        if code not in (0, 2):  # 2: bad input, already explained by the worker in one line
            again = " ".join(shlex.quote(a) for a in ["tuneforge", "train", config_file, *overrides, "--output",
                                                      str(run_dir), "--resume", *topology.flags()])
            log(f"a training process failed (exit code {code}); "
                + (f"continue from the last checkpoint with: {again}" if (run_dir / "checkpoints").is_dir()
                   else "no checkpoint was written yet: start again"))
        return code
    finally:
        if lock is not None:
            lock.release()


def _precision(config: object) -> str:
    """``train.precision: auto`` decided here, once: each process probing its CPU on its own could decide otherwise
    under load (and processes computing in different precisions do not train one model)."""
    import torch

    from tuneforge.training.engine import resolve_precision

    return resolve_precision(config.train.precision, torch.cuda.is_available())  # type: ignore[attr-defined]


def _check_world(run_dir: Path, resume: bool, size: int) -> None:
    """A run resumes on as many processes as it started with: each restores its own random state and its share of
    the data order from the checkpoint (world.json records the count)."""
    import json

    record = run_dir / "world.json"
    if resume and record.exists():
        before = json.loads(record.read_text())["processes"]
        if before != size:
            raise UserError(f"{run_dir}: started on {before} processes, resumed on {size}; resume with the same "
                            f"--nproc x --nnodes ({before})")
    elif not resume:
        from tuneforge.io import atomic_write_json

        atomic_write_json(record, {"processes": size})


def _run_torchrun(topology: Topology, worker: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import config_from_args, get_args_parser
    from torch.distributed.launcher.api import elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.ERROR)  # its per-process banners; failures come back as results
    args = get_args_parser().parse_args([*topology.torchrun_args(), "-m", "tuneforge.cli", *worker])
    if args.standalone:  # what torchrun's run() does for --standalone: a local rendezvous on a free port
        args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id = "c10d", "localhost:0", str(uuid.uuid4())
    config, command, command_args = config_from_args(args)
    env = {"TUNEFORGE_LAUNCHED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the workers inherit this process's environment
    try:
        elastic_launch(config, command)(*command_args)
    except ChildFailedError as failed:
        _rank, failure = failed.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1  # killed by a signal: 1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return 0


def write_launch_files(config_file: str, overrides: list[str], topology: Topology, folder: str | Path) -> list[Path]:
    """For users who launch themselves: ``accelerate.yaml`` (``accelerate launch --config_file``), the strategy's
    own file (``deepspeed.json`` or ``fsdp.json``, the settings tuneforge passes the Trainer) and ``launch.txt``
    with the equivalent torchrun, accelerate and tuneforge lines. The run config's distributed section decides the
    strategy either way: the files say what it does, they do not replace it. accelerate.yaml is for GPUs (accelerate
    starts CPU processes through MPI); the torchrun line runs CPU processes too (gloo)."""
    import json

    import yaml

    from tuneforge.config import load_config
    from tuneforge.io import atomic_write_text
    from tuneforge.training.distributed import deepspeed_config, fsdp_settings

    check_topology(topology, "given")
    config = load_config(config_file, overrides)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = config.distributed
    accelerate = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
                  "num_processes": topology.nproc * topology.nnodes, "num_machines": topology.nnodes,
                  "machine_rank": topology.node_rank, "main_process_ip": topology.master_addr,
                  "main_process_port": topology.master_port, "mixed_precision": "no",
                  "rdzv_backend": "static", "same_network": True, "main_training_function": "main"}
    written = [folder / "accelerate.yaml"]
    atomic_write_text(written[0], "# the run's precision and strategy come from its config (train.precision, "
                      "distributed:)\n" + yaml.safe_dump(accelerate, sort_keys=False))
    if settings.strategy.startswith("deepspeed"):
        written.append(folder / "deepspeed.json")
        atomic_write_text(written[-1], json.dumps(deepspeed_config(int(settings.strategy[-1]), settings.offload),
                                                  indent=2) + "\n")
    elif settings.strategy == "fsdp":
        fsdp, fsdp_config = fsdp_settings(settings.offload, [])
        written.append(folder / "fsdp.json")
        atomic_write_text(written[-1], json.dumps({"fsdp": fsdp, "fsdp_config": {
            **fsdp_config, "transformer_layer_cls_to_wrap": "the model's repeated _no_split_modules (its blocks)"}},
            indent=2) + "\n")
    train = " ".join(shlex.quote(a) for a in ["train", config_file, *overrides, "--output", "RUN_DIR"])
    lines = [f"# {settings.strategy} on {topology.nproc * topology.nnodes} processes; every process gets the same "
             f"--output (a shared filesystem across machines)",
             f"tuneforge {train} {' '.join(topology.flags())}",
             f"torchrun {' '.join(topology.torchrun_args())} -m tuneforge.cli {train}",
             f"accelerate launch --config_file {folder / 'accelerate.yaml'} -m tuneforge.cli {train}"]
    written.append(folder / "launch.txt")
    atomic_write_text(written[-1], "\n".join(lines) + "\n")
    return written
