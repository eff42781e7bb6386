"""One writer per run folder, and no half-made run folders.

`claim` is called by every rank before anything is written into ``outputs/<experiment>/<run_id>/``: rank 0 takes
an exclusive lock (``flock`` on ``<run>/.lock``, which also records the holder: pid, host, start time, command),
and every rank learns the outcome, so a second run into the same folder stops at once with one line naming the
holder. The kernel drops the lock when its process dies (also on SIGKILL), so a lock file left by a dead run is
stale: the next claim takes it over and says whose it was. ``trainer.resume=true`` without a checkpoint to resume
is refused here, before the folder is created.

`RunFolder.release` ends the claim: after a failure before the first checkpoint it deletes the folder it created
(nothing in it can be evaluated, exported or resumed); a folder left by a killed run is reported by `stopped_reason`
so ``seqrec evaluate`` / ``seqrec export`` refuse it with that reason. flock is reliable on local filesystems;
on network filesystems it depends on the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from trainer.errors import ConfigError

log = logging.getLogger("seqrec.run_folder")
LOCK = ".lock"
_HELD: list[RunFolder] = []  # claims of this process, released by `release_held` if a Trainer never finished


@dataclasses.dataclass
class RunFolder:
    """A run folder this process holds the lock of (rank 0), or follows (other ranks: ``fd`` is None)."""

    path: Path
    fd: int | None
    created: bool

    def release(self, failed: BaseException | None = None, committed: bool = True) -> None:
        """Give the folder up; after a failure with nothing committed, delete the folder if this claim made it."""
        if self in _HELD:
            _HELD.remove(self)
        if self.fd is None:
            return
        if failed is not None and not committed and self.created:
            log.warning("training failed before its first checkpoint: removing %s", self.path)
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.path / LOCK).unlink()
        os.close(self.fd)
        self.fd = None


def claim(run_dir: Path, *, resume: bool, has_checkpoint: bool, is_main: bool) -> RunFolder:
    """Lock ``run_dir`` for this run (rank 0) and agree on the outcome across ranks; refusals are ConfigErrors."""
    error, folder = None, RunFolder(run_dir, None, False)
    if resume and not has_checkpoint:
        error = (f"trainer.resume=true but {run_dir} has no complete checkpoint to resume (nothing was created); "
                 "drop trainer.resume to start this run")
    elif is_main:
        try:
            folder = _lock(run_dir)
        except ConfigError as exc:
            error = str(exc)
    if dist.is_initialized() and dist.get_world_size() > 1:
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        error = shared[0]
    if error is not None:
        folder.release()
        raise ConfigError(error)
    _HELD.append(folder)
    return folder


def release_held(failed: BaseException | None) -> None:
    """Release every claim of this process still held (a Trainer that failed while being built)."""
    for folder in list(_HELD):
        folder.release(failed, committed=_committed(folder.path))


def _committed(run_dir: Path) -> bool:
    from trainer.checkpoint import committed

    return committed(run_dir)


def stopped_reason(run_dir: Path) -> str | None:
    """Why a run folder without checkpoints has none: still training, or stopped before its first checkpoint."""
    lock = run_dir / LOCK
    if not lock.is_file():
        return None
    holder = _describe(_read_holder(lock))
    if _held_by_someone(lock):
        return f"{run_dir}: still training ({holder}) and has no checkpoint yet"
    return f"{run_dir}: training stopped before its first checkpoint ({holder} is gone); nothing to use"


def _lock(run_dir: Path) -> RunFolder:
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _describe(_read_holder(run_dir / LOCK))
                raise ConfigError(f"{run_dir} is being written by another run ({holder}); wait for it to end, "
                                  "stop it, or choose another trainer.run_id") from None
            if _same_file(fd, run_dir / LOCK):  # not unlinked by a releasing holder meanwhile
                break
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot create the run folder ({exc.strerror or exc})") from exc
    stale = _read_holder(run_dir / LOCK)
    if stale:
        log.warning("%s: cleared the stale lock of %s (that process is gone)", run_dir, _describe(stale))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
    return RunFolder(run_dir, fd, created)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _held_by_someone(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _me() -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": " ".join(sys.argv)}


def _read_holder(lock: Path) -> dict[str, Any]:
    try:
        text = lock.read_text().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "started": "?"}


def _describe(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
