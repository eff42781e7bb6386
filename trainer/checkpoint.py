"""Sharded checkpoints with torch.distributed.checkpoint (DCP), written by every rank, committed by rank 0.

A checkpoint is ``<run>/checkpoints/step_<N>/``: DCP files for the model and both optimizers (any world size can
load them: DCP reshards), plus ``rank_<r>.pt`` per rank with what is not resharded (data-loader position, RNG
states, step/epoch counters, best metric), and ``meta.json`` (world size, model name, step), the commit marker.

Integrity: every rank makes its files durable (fsync) before a collective agreement that all of them succeeded;
only then does rank 0 write ``meta.json``, listing every file of the checkpoint with its size and CRC-32, through
a temporary file and a rename. A checkpoint without ``meta.json`` is incomplete; one whose files do not match the
list is damaged. `latest_checkpoint` and `best_checkpoint` skip both, say so in one line naming the file, and
return the newest usable checkpoint instead; when checkpoints exist but none is usable they raise one
`ConfigError` listing why each is not.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, DefaultLoadPlanner

from trainer.errors import ConfigError

log = logging.getLogger(__name__)
META = "meta.json"
BEST = "best.json"  # in the run folder: the checkpoint with the best validation NDCG@10 (written by the trainer)


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Folder of the checkpoint taken after ``step`` optimizer steps."""
    return Path(run_dir) / "checkpoints" / f"step_{step}"


def latest_checkpoint(path: str | Path) -> Path | None:
    """The newest usable checkpoint under a run folder (or ``path`` itself if it is a checkpoint).

    None when the run has no checkpoint at all. Newer incomplete or damaged ones are reported (one line each) and
    skipped; if every checkpoint is unusable this raises a `ConfigError` that says why for each.
    """
    path = Path(path)
    if _is_checkpoint(path):
        _require_intact(path)
        return path
    candidates = sorted((p for p in (path / "checkpoints").glob("step_*") if p.is_dir() and _step(p) >= 0),
                        key=_step, reverse=True)
    problems: list[str] = []
    for ckpt in candidates:
        problem = damage(ckpt)
        if problem is None:
            for skipped in problems:
                log.warning("%s; using %s, the newest complete checkpoint", skipped, ckpt.name)
            return ckpt
        problems.append(problem)
    if problems:
        raise ConfigError(f"{path}: no usable checkpoint ({'; '.join(problems)})")
    return None


def best_checkpoint(path: str | Path) -> Path | None:
    """The run's best-validation checkpoint (``best.json``), else its newest; ``path`` may be a checkpoint itself.

    Reported test metrics, ``seqrec evaluate`` and ``seqrec export`` use this one: the newest checkpoint of a run
    that early stopping ended is several evaluations past its best. A damaged best checkpoint is reported and the
    newest usable one is used instead.
    """
    path = Path(path)
    if _is_checkpoint(path):
        _require_intact(path)
        return path
    if (path / BEST).is_file():
        try:
            best = path / "checkpoints" / json.loads((path / BEST).read_text())["checkpoint"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s is damaged; using the newest complete checkpoint", path / BEST)
        else:
            problem = damage(best)
            if problem is None:
                return best
            fallback = latest_checkpoint(path)
            log.warning("%s (the best-validation one); using %s instead", problem, fallback and fallback.name)
            return fallback
    latest = latest_checkpoint(path)
    if latest is None:
        from trainer.run_folder import stopped_reason  # the run folder's lifecycle builds on this module

        reason = stopped_reason(path)
        if reason is not None:
            raise ConfigError(reason)
    return latest


def committed(run_dir: str | Path) -> bool:
    """Has the run committed any checkpoint (intact or not)?"""
    return bool(_complete(Path(run_dir) / "checkpoints"))


def mark_best(run_dir: str | Path, ckpt: Path, metrics: dict[str, Any]) -> None:
    """Record ``ckpt`` as the run's best checkpoint (rank 0; written atomically)."""
    write_atomic(Path(run_dir) / BEST, json.dumps({"checkpoint": ckpt.name, **metrics}, indent=2, sort_keys=True))


def damage(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be used (one phrase naming the missing or damaged file), or None if it is intact."""
    if not ckpt.is_dir():
        return f"checkpoint {ckpt.name} does not exist"
    try:
        meta = read_meta(ckpt)
    except FileNotFoundError:
        return f"checkpoint {ckpt.name} is incomplete (no {META}: the run stopped while writing it)"
    except (OSError, ValueError) as exc:
        return f"checkpoint {ckpt.name} is damaged ({META}: {str(exc).splitlines()[0]})"
    files = meta.get("files")
    if not isinstance(files, dict):  # written before file lists: the rank files and DCP's metadata must exist
        expected = [".metadata"] + [f"rank_{r}.pt" for r in range(int(meta.get("world_size", 1)))]
        missing = [name for name in expected if not (ckpt / name).is_file()]
        return f"checkpoint {ckpt.name} is damaged ({missing[0]} is missing)" if missing else None
    for name, (size, crc) in sorted(files.items()):
        file = ckpt / name
        if not file.is_file():
            return f"checkpoint {ckpt.name} is damaged ({name} is missing)"
        if file.stat().st_size != size:
            return f"checkpoint {ckpt.name} is damaged ({name} has {file.stat().st_size} bytes, {META} says {size})"
        if _crc32(file) != crc:
            return f"checkpoint {ckpt.name} is damaged ({name} does not match its CRC-32 in {META})"
    return None


def _require_intact(ckpt: Path) -> None:
    problem = damage(ckpt)
    if problem is not None:
        raise ConfigError(f"{ckpt.parent}: {problem}")


def _is_checkpoint(path: Path) -> bool:
    return (path / META).is_file() or (_step(path) >= 0 and path.parent.name == "checkpoints")


def _step(path: Path) -> int:
    prefix, _, number = path.name.partition("_")
    return int(number) if prefix == "step" and number.isdigit() else -1


def _complete(folder: Path) -> list[Path]:
    """Committed checkpoints (with ``meta.json``) under ``folder``, oldest step first."""
    done = [p for p in folder.glob("step_*") if _step(p) >= 0 and (p / META).is_file()]
    return sorted(done, key=_step)


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a complete checkpoint."""
    return json.loads((Path(ckpt) / META).read_text())


def _crc32(file: Path) -> int:
    crc = 0
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, text: str) -> None:
    """(Also used for the run's config.yaml.) Write ``text`` to a temporary file, make it durable, rename it over ``target``, and sync the folder."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text + "\n")
    _fsync(tmp)
    tmp.replace(target)
    _fsync(target.parent)


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
    """Collective: every rank writes its shards and its ``rank_<r>.pt`` durably; then rank 0 commits ``meta.json``.

    An incomplete folder left by an interrupted save of the same step is cleared first. ``keep > 0`` then deletes
    all but the newest ``keep`` checkpoints, never ``protect`` (the best one).
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and ckpt.exists() and not (ckpt / META).is_file():
        shutil.rmtree(ckpt)
    _agree(None)
    state = {"model": model.state_dict()}
    if optimizer is not None:
        state["optim"] = optimizer.state_dict()
    ckpt.mkdir(parents=True, exist_ok=True)
    dcp.save(state, checkpoint_id=str(ckpt))  # FileSystemWriter fsyncs its files
    failure = None
    try:
        tmp = ckpt / f".rank_{rank}.pt.tmp"
        torch.save({**extra, "rng": rng_state()}, tmp)
        _fsync(tmp)
        tmp.replace(ckpt / f"rank_{rank}.pt")
    except OSError as exc:
        failure = f"{ckpt / f'rank_{rank}.pt'}: {exc.strerror or exc}"
    _agree(failure)
    if rank == 0:
        files = {p.name: [p.stat().st_size, _crc32(p)] for p in sorted(ckpt.iterdir()) if p.name != META}
        write_atomic(ckpt / META, json.dumps({**meta, "files": files}, indent=2, sort_keys=True))
        if keep > 0:
            _prune(ckpt.parent, keep, protect)
        log.info("saved checkpoint %s", ckpt)
    _agree(None)


def _agree(failure: str | None) -> None:
    """Barrier that also fails on every rank when one rank failed (so no rank waits for a commit that never comes)."""
    failed = torch.tensor([0.0 if failure is None else 1.0])
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":  # nccl reduces device tensors only
            failed = failed.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(failed)
    if failure is not None:
        raise ConfigError(f"cannot write checkpoint: {failure}")
    if failed.item() > 0:
        raise ConfigError("cannot write checkpoint: another rank failed to write its part (see its error)")


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
    except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException; first line only
        raise ConfigError(
            f"{ckpt}: cannot load checkpoint into this model ({_first_line(exc)})"
        ) from exc
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optim"])
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if meta.get("world_size") != world:
        return {}
    return _load_rank_file(ckpt / f"rank_{rank}.pt")


def _load_rank_file(file: Path) -> dict[str, Any]:
    """This rank's loop state; a missing or unreadable file is a one-line error naming it."""
    if not file.is_file():
        raise ConfigError(f"{file}: missing (every rank of the run that wrote this checkpoint writes one)")
    try:
        return torch.load(file, weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{file}: damaged trainer state ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
