"""Sharded checkpoints with torch.distributed.checkpoint (DCP), written by every rank.

A checkpoint is ``<run>/checkpoints/step_<N>/``: DCP files for the model and both optimizers (any world size can
load them: DCP reshards), plus ``rank_<r>.pt`` per rank with what is not resharded (data-loader position, RNG
states, step/epoch counters, best metric), and ``meta.json`` (world size, model name, step) written by rank 0 last,
so a checkpoint without ``meta.json`` is incomplete and ignored.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner

from trainer.errors import ConfigError

log = logging.getLogger(__name__)
META = "meta.json"
BEST = "best.json"  # in the run folder: the checkpoint with the best validation NDCG@10 (written by the trainer)


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Folder of the checkpoint taken after ``step`` optimizer steps."""
    return Path(run_dir) / "checkpoints" / f"step_{step}"


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest complete checkpoint under a run folder (or ``path`` itself if it is a checkpoint)."""
    path = Path(path)
    if (path / META).is_file():
        return path
    done = _complete(path / "checkpoints")
    return done[-1] if done else None


def best_checkpoint(path: str | Path) -> Path | None:
    """The run's best-validation checkpoint (``best.json``), else its newest; ``path`` may be a checkpoint itself.

    Reported test metrics, ``seqrec evaluate`` and ``seqrec export`` use this one: the newest checkpoint of a run
    that early stopping ended is several evaluations past its best.
    """
    path = Path(path)
    if (path / META).is_file():
        return path
    if (path / BEST).is_file():
        best = path / "checkpoints" / json.loads((path / BEST).read_text())["checkpoint"]
        if (best / META).is_file():
            return best
    return latest_checkpoint(path)


def mark_best(run_dir: str | Path, ckpt: Path, metrics: dict[str, Any]) -> None:
    """Record ``ckpt`` as the run's best checkpoint (rank 0; written atomically)."""
    tmp = Path(run_dir) / (BEST + ".tmp")
    tmp.write_text(json.dumps({"checkpoint": ckpt.name, **metrics}, indent=2, sort_keys=True) + "\n")
    tmp.replace(Path(run_dir) / BEST)


def _complete(folder: Path) -> list[Path]:
    """Complete checkpoints (with ``meta.json``) under ``folder``, oldest step first."""
    done = [p for p in folder.glob("step_*") if (p / META).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a complete checkpoint."""
    return json.loads((Path(ckpt) / META).read_text())


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states of this process, as plain lists/tensors (loadable with weights_only)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    extra: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 0,
    protect: Path | None = None,
) -> None:
    """Collective: every rank writes its shards and its ``rank_<r>.pt``; rank 0 writes ``meta.json`` last.

    ``keep > 0`` then deletes all but the newest ``keep`` checkpoints, never ``protect`` (the best one).
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = {"model": model.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    ckpt.mkdir(parents=True, exist_ok=True)
    dcp.save(state, checkpoint_id=str(ckpt))
    torch.save({**extra, "rng": rng_state()}, ckpt / f"rank_{rank}.pt")
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        (ckpt / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if keep > 0:
            _prune(ckpt.parent, keep, protect)
        log.info("saved checkpoint %s", ckpt)
    if dist.is_initialized():
        dist.barrier()


def _prune(folder: Path, keep: int, protect: Path | None = None) -> None:
    for old in _complete(folder)[:-keep]:
        if protect is None or old.resolve() != protect.resolve():
            shutil.rmtree(old, ignore_errors=True)


def load(
    ckpt: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    expect: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load model (and optimizer) shards from ``ckpt`` into the live objects, resharding as needed.

    ``expect`` lists ``meta.json`` values that must match (e.g. the model name), for a clear error instead of a
    shape mismatch deep inside DCP. Returns this rank's extra state, or {} if the checkpoint was written by another
    world size (the caller decides whether that is allowed).
    """
    if not (ckpt / META).is_file():
        raise ConfigError(f"{ckpt}: not a complete seqrec checkpoint (no {META})")
    meta = read_meta(ckpt)
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise ConfigError(f"{ckpt}: checkpoint has {key}={meta.get(key)!r}, this run has {key}={value!r}")
    state: dict[str, Any] = {"model": model.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    try:
        dcp.load(
            state, checkpoint_id=str(ckpt), planner=DefaultLoadPlanner(allow_partial_load=optimizer is None)
        )
    except Exception as exc:  # DCP wraps per-rank failures; surface the first line
        raise ConfigError(
            f"{ckpt}: cannot load checkpoint into this model ({str(exc).splitlines()[0]})"
        ) from exc
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    extra_file = ckpt / f"rank_{rank}.pt"
    if meta.get("world_size") != world or not extra_file.is_file():
        return {}
    return torch.load(extra_file, weights_only=True)
