"""torchx components for seqrec.

    torchx run -s local_cwd torchx/components.py:train -j 1x2 -- trainer.max_steps=100
    torchx run -s local_cwd dist.ddp -j 1x2 --script trainer/train.py -- trainer.max_steps=100

Both launch ``trainer/train.py`` on every rank through torchrun (gloo on CPU, nccl on GPU); the torchx app id
becomes the run id, so all ranks share one run folder ``outputs/<experiment>/<app id>``.
"""

# torchx's component linter reads annotations from the source and fails on `list[str] | None` (a BinOp): keep
# typing's spelling here.
from typing import List, Optional  # noqa: UP035

import torchx.components.dist as dist_components
import torchx.specs as specs


def train(
    *overrides: str,
    j: str = "1x2",
    name: str = "seqrec-train",
    image: str = ".",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    omp_threads: int = 1,
    max_retries: int = 0,
    max_restarts: int = 0,
    rdzv_port: int = 29500,
    mounts: Optional[List[str]] = None,  # noqa: UP006, UP045
) -> specs.AppDef:
    """Train a seqrec model with DistributedModelParallel.

    Args:
        overrides: Hydra overrides passed to trainer/train.py, e.g. ``trainer.max_steps=100 model.dim=64``.
        j: ``{nnodes}x{nproc_per_node}`` (e.g. 1x2: one machine, two ranks).
        name: application name.
        image: working directory (local_cwd) or container image.
        cpu: CPUs per replica.
        gpu: GPUs per replica (0 on CPU machines; ranks then use gloo).
        memMB: memory per replica in MB.
        omp_threads: OMP_NUM_THREADS per rank (torchrun's default of 1 suits 2 ranks on a 2-core machine).
        max_retries: restarts of the whole job on failure (resume with trainer.resume=true).
        max_restarts: torchrun restarts all ranks this many times after a rank dies; restarted ranks resume
            from the run's last checkpoint by themselves.
        rdzv_port: port of the c10d rendezvous on the first node (change it when 29500 is taken).
        mounts: volumes for data and run folders, docker-style, e.g.
            ``type=volume,src=seqrec-outputs,dst=/outputs`` (Kubernetes PVC) or ``type=bind,src=/nfs,dst=/nfs``.
    """
    return dist_components.ddp(
        *overrides,
        script="trainer/train.py",
        image=image,
        name=name,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        # torchrun reads each option's default from PET_<OPTION> (dist.ddp has no --max-restarts argument)
        env={"OMP_NUM_THREADS": str(omp_threads), "PYTHONUNBUFFERED": "1", "PET_MAX_RESTARTS": str(max_restarts)},
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        mounts=mounts,
    )
