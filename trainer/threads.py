"""Intra-op threads that fit the machine: the cores this process may use (CPU affinity and the cgroup CPU quota,
v1 or v2), divided among the local ranks and the other training processes running on the machine.

Why: PyTorch starts one OpenMP thread per core in every process. Two trainings on 2 cores with 2 threads each ran
~7x slower each than one alone (spinning threads fight for the cores), and torchrun's default of 1 thread leaves
a single process with half the machine. ``trainer.threads=0`` (the default) keeps an explicit ``OMP_NUM_THREADS``
(the standard knob, which launchers such as torchx set per worker) and otherwise picks
``floor(cores / max(local ranks, training processes))``, at least 1; a positive value is used as given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
TRAINING_MARKERS = ("trainer/train.py", "trainer.train", "seqrec train")


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup quota allows (``quota / period``), or None when unlimited or unknown."""
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def available_cores(root: Path = CGROUP) -> float:
    """Cores this process may run on: its CPU affinity, capped by the cgroup quota."""
    try:
        cores: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_cpus(root)
    return min(cores, quota) if quota else cores


def training_processes(proc: Path = Path("/proc")) -> int:
    """Live training processes on this machine (Linux ``/proc``; 1 when it cannot tell), this one included."""
    count = 0
    try:
        for entry in proc.iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                count += any(marker in cmdline for marker in TRAINING_MARKERS)
    except OSError:
        return 1
    return max(count, 1)


def choose_threads(cores: float, local_ranks: int, processes: int) -> int:
    """``floor(cores / max(processes, local_ranks))`` threads per process, at least 1.

    ``processes`` counts every training process on the machine (the local ranks of this run included), so the
    threads of all of them add up to at most the cores.
    """
    return max(1, math.floor(cores / max(processes, local_ranks, 1)))


def configure_threads(requested: int, local_ranks: int) -> int:
    """Set torch's intra-op threads (``requested`` > 0: as given; 0: ``OMP_NUM_THREADS`` if set, else
    `choose_threads`); returns the count."""
    import torch

    threads = requested
    if not threads:
        explicit = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(explicit) if explicit.isdigit() and int(explicit) > 0 else choose_threads(
            available_cores(), local_ranks, training_processes()
        )
    torch.set_num_threads(threads)
    return threads
