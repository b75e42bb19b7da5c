"""The commands that take a run to more GPUs than this machine has: ``cloud spec`` writes a job definition for
SkyPilot, SageMaker, Vertex AI or Azure ML that runs ``tuneforge train`` on every node. Thin: parse, call, print."""

from __future__ import annotations

from typing import Any

TARGETS = ("skypilot", "sagemaker", "vertex", "azureml")  # tuneforge.pipelines.cloud_spec.TARGETS, without its import


def add_scale_parsers(sub: Any) -> None:
    add_launch_config_parser(sub)
    cloud = sub.add_parser("cloud", help="cloud training jobs: spec writes a SkyPilot, SageMaker, Vertex AI or Azure "
                                         "ML job definition that runs tuneforge train on cloud GPUs")
    actions = cloud.add_subparsers(dest="cloud_command", metavar="ACTION", required=True)
    spec = actions.add_parser("spec", help="write the job definition, the config and tuneforge's wheel into --output, "
                                           "with launch.txt: the one command that starts it")
    spec.add_argument("config", help="the run config")
    spec.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (passed to the job)")
    spec.add_argument("--target", required=True, choices=TARGETS, help="the platform")
    spec.add_argument("--gpus", required=True, metavar="GPU:COUNT", help="GPUs per node, SkyPilot's names (A100:8, "
                      "A100-80GB:8, H100:8, H200:8, L4:1, ...); mapped to the platform's machine type")
    spec.add_argument("--nodes", type=int, default=1, help="nodes (default 1); more: torchrun across them")
    spec.add_argument("--output", required=True, metavar="DIR", help="the folder to write (the job folder)")
    spec.add_argument("--image", help="the container image (default: pytorch/pytorch with CUDA; on SageMaker AWS's "
                      "PyTorch training image)")
    spec.add_argument("--data", metavar="URI", help="where the job reads data.path from: s3:// (SageMaker), gs:// "
                      "(Vertex AI), a bucket or local path (SkyPilot), azureml:// or https:// or a local path (Azure "
                      "ML); default: the config's data.path")
    spec.add_argument("--output-uri", metavar="URI", help="where the run folder goes: s3:// (SageMaker, required), "
                      "gs:// (Vertex AI, required), a bucket (SkyPilot), azureml:// (Azure ML; default: the job's)")
    spec.add_argument("--package", metavar="WHEEL|REQUIREMENT", help="what the nodes pip install as tuneforge "
                      "(default: a wheel built from this source checkout, shipped in the job folder)")
    spec.add_argument("--region", help="SageMaker (default us-east-1) or Vertex AI (default us-central1) region")
    spec.add_argument("--role", metavar="ARN", help="SageMaker: the IAM role the job runs as (required there)")
    spec.add_argument("--name", help="the job's name (default: the run name and the time)")


def add_launch_config_parser(sub: Any) -> None:
    files = sub.add_parser("launch-config", help="write accelerate.yaml, the DeepSpeed/FSDP settings and the torchrun/"
                                                 "accelerate lines of a run, for launching it yourself")
    files.add_argument("config", help="the run config (its distributed: section picks the strategy)")
    files.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    files.add_argument("--nproc", type=int, required=True, help="processes (GPUs) per machine")
    files.add_argument("--nnodes", type=int, default=1, help="machines (default 1)")
    files.add_argument("--node-rank", type=int, default=0, help="this machine's number (default 0)")
    files.add_argument("--master-addr", default="127.0.0.1", help="machine 0's address")
    files.add_argument("--master-port", type=int, default=29500, help="a free port on machine 0")
    files.add_argument("--output", required=True, metavar="DIR", help="the folder to write")


def launch_config(args: Any) -> int:
    from tuneforge.pipelines.launch import Topology, write_launch_files

    topology = Topology(args.nproc, args.nnodes, args.node_rank, args.master_addr, args.master_port)
    for path in write_launch_files(args.config, args.overrides, topology, args.output):
        print(f"wrote {path}")
    return 0


def cloud(args: Any) -> int:
    from tuneforge.pipelines.cloud_spec import cloud_spec

    result = cloud_spec(args.config, args.overrides, target=args.target, gpus=args.gpus, nodes=args.nodes,
                        output_dir=args.output, image=args.image, data=args.data, output_uri=args.output_uri,
                        package=args.package, region=args.region, role=args.role, name=args.name)
    print(f"wrote {result['spec']}: {result['nodes']} x {result['machine']} (files: {', '.join(result['files'])})")
    for note in result["notes"]:
        print(f"  {note}")
    print(f"launch: {result['launch']}")
    return 0


SCALE_COMMANDS = {"cloud": cloud, "launch-config": launch_config}
