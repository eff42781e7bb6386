"""Every `torchx run` command in docs/cluster.md, dry-run through the real torchx CLI with our .torchxconfig: the
Kubernetes (Volcano) job, the Slurm sbatch script and the local 2-node launch they generate are checked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
REQUEST = "=== SCHEDULER REQUEST ==="


def _documented_commands() -> dict[str, list[str]]:
    """scheduler -> the argv of the one `torchx run` command documented for it."""
    text = (REPO / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith("torchx run")]
    by_scheduler = {argv[argv.index("-s") + 1]: argv for argv in commands}
    assert len(by_scheduler) == len(commands), "one documented command per scheduler"
    return by_scheduler


COMMANDS = _documented_commands()


def _dryrun(scheduler: str) -> tuple[str, str]:
    """(printed AppDef, scheduler request) of the documented command run with --dryrun."""
    argv = COMMANDS[scheduler]
    argv = [str(BIN / "torchx"), "run", "--dryrun", *argv[2:]]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "TORCHXCONFIG": str(REPO / "torchx" / ".torchxconfig")}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stderr[-3000:]}"
    app, _, request = proc.stdout.partition(REQUEST)
    assert request, proc.stdout[-2000:]
    return app, request


def test_cluster_doc_documents_every_scheduler() -> None:
    assert set(COMMANDS) == {"local_cwd", "kubernetes", "slurm"}


def test_kubernetes_volcano_job_has_two_gpu_nodes_volumes_and_rendezvous() -> None:
    _, request = _dryrun("kubernetes")
    job = yaml.safe_load(request)
    assert job["kind"] == "Job" and job["apiVersion"].startswith("batch.volcano.sh")
    assert job["spec"]["queue"] == "default", "queue from torchx/.torchxconfig"
    tasks = job["spec"]["tasks"]
    assert [t["name"] for t in tasks] == ["train-0", "train-1"]
    for index, task in enumerate(tasks):
        (container,) = task["template"]["spec"]["containers"]
        assert container["image"] == "registry.example.com/seqrec:cuda"
        limits = container["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "8" and limits["cpu"] == "64000m" and limits["memory"] == "480000M"
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/data"].get("readOnly") is True and not mounts["/outputs"].get("readOnly")
        assert "/dev/shm" in mounts
        volumes = {v["name"]: v for v in task["template"]["spec"]["volumes"]}
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v}
        assert claims == {"seqrec-data", "seqrec-outputs"}
        command = " ".join(container["command"])
        assert "--nnodes 2 --nproc_per_node 8" in command and "trainer/train.py" in command
        assert "trainer.output_dir=/outputs" in command and "data.path=/data/ml1m" in command
        assert ("TORCHX_RANK0_HOST" if index == 0 else "VC_TRAIN_0_HOSTS") in command
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OMP_NUM_THREADS"] == "4"


def test_slurm_sbatch_has_one_het_component_per_node_and_torchrun() -> None:
    _, script = _dryrun("slurm")
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH --job-name")]
    assert len(sbatch) == 2 and script.count("#SBATCH hetjob") == 1
    for line in sbatch:
        for flag in ("--partition=gpu", "--time=12:00:00", "--gpus-per-task=8", "--cpus-per-task=64", "--mem=480000"):
            assert flag in line, (flag, line)
    assert script.count("torchrun ") == 2
    assert "--nnodes 2 --nproc_per_node 8" in script and "SLURM_JOB_NODELIST_HET_GROUP_0" in script
    assert "trainer.output_dir=/shared/outputs" in script and "OMP_NUM_THREADS=4" in script


def test_local_two_node_launch_has_two_agents_on_one_rendezvous() -> None:
    app, request = _dryrun("local_cwd")
    assert request.count("torchrun --rdzv_backend c10d") == 2
    assert request.count("--nnodes 2 --nproc_per_node 1") == 2
    assert request.count(":29511") == 2, "both agents use the documented rendezvous port"
