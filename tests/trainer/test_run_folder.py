"""One writer per run folder and atomic runs, with real training processes: a second run into a folder that is being
written is refused naming the holder; a run killed before its first checkpoint leaves a folder that evaluate and
export refuse with that reason and whose stale lock the next run clears; a run that fails before its first
checkpoint leaves no folder; ``trainer.resume=true`` without a run creates nothing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.export import load_trained
from tests.conftest import REPO, train_overrides
from trainer import run_folder
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.train import run_training

LONG = ("trainer.epochs=1000", "trainer.test_at_end=false", "data.batch_size=1")  # 600 steps per epoch


def _spawn(overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainer.train", *overrides], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for_lock(run: Path, proc: subprocess.Popen) -> dict:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / run_folder.LOCK).is_file() and (run / run_folder.LOCK).read_text().strip():
            return json.loads((run / run_folder.LOCK).read_text())
        time.sleep(0.05)
    raise AssertionError(f"no lock appeared: {proc.communicate()[0][-3000:] if proc.poll() is not None else ''}")


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_holder(tiny_dataset: Path, tmp_path: Path) -> None:
    overrides = train_overrides(tiny_dataset, tmp_path, "trainer.run_id=shared", *LONG)
    run = tmp_path / "default" / "shared"
    first = _spawn(overrides)
    try:
        holder = _wait_for_lock(run, first)
        assert holder["pid"] == first.pid
        second = subprocess.run([sys.executable, "-m", "trainer.train", *overrides], cwd=REPO, capture_output=True,
                                text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert second.returncode == 2 and len(errors) == 1, second.stderr[-3000:]
        assert "being written by another run" in errors[0] and f"pid {holder['pid']}" in errors[0]
        assert first.poll() is None, "the refused run must not disturb the holder"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_is_refused_and_its_stale_lock_cleared(
        tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "default" / "killed"
    first = _spawn(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=killed", *LONG))
    _wait_for_lock(run, first)
    first.send_signal(signal.SIGKILL)  # an epoch of 600 steps is far from done: no checkpoint yet
    first.wait(timeout=60)
    assert not list(run.glob("checkpoints/step_*/meta.json"))
    assert seqrec(["evaluate", str(run), "--split", "valid"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stopped before its first checkpoint" in err and str(first.pid) in err
    with pytest.raises(ConfigError, match="stopped before its first checkpoint"):
        load_trained(run)
    # The next run into that folder clears the dead process's lock (saying whose it was) and trains.
    seen: list[logging.LogRecord] = []  # (the CLI above reconfigured the root logger, so not caplog)
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger(run_folder.log.name).addHandler(handler)
    again = run_training(load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=killed",
                                                     "trainer.max_steps=3", "trainer.test_at_end=false")))
    assert again["steps"] == 3 and not (run / run_folder.LOCK).exists()
    logging.getLogger(run_folder.log.name).removeHandler(handler)
    assert any(f"stale lock of pid {first.pid}" in r.getMessage() for r in seen)


def test_failure_before_the_first_checkpoint_leaves_no_run_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a GPU"):  # fails while sharding, after the folder was claimed
        run_training(load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=gone",
                                                 "optim.sparse_optimizer=adam")))
    assert not (tmp_path / "default" / "gone").exists()


def test_resume_without_a_run_creates_nothing(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing was created"):
        run_training(load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=never",
                                                 "trainer.resume=true")))
    assert not (tmp_path / "default").exists()
