"""Checkpoint integrity against the corpus of damaged checkpoints (tests/corpus/checkpoints.json): a damaged newest
checkpoint is reported in one line naming the file and the previous complete one is used, by resume, evaluate and
export alike; when none is usable the command fails with one line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from tests.conftest import train_overrides
from trainer import checkpoint
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.train import run_training

CORPUS = json.loads((Path(__file__).resolve().parents[1] / "corpus" / "checkpoints.json").read_text())


@pytest.fixture(scope="module")
def two_checkpoints(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with committed checkpoints at steps 5 and 10 (and 12, its end)."""
    out = tmp_path_factory.mktemp("ckpt")
    run_training(load_config(train_overrides(
        tiny_dataset, out, "trainer.run_id=base", "trainer.max_steps=10", "trainer.checkpoint_every=5",
        "trainer.keep_checkpoints=50", "trainer.test_at_end=false", "eval.per_user=false")))
    return out / "default" / "base"


def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        middle = len(data) // 2
        file.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8]) + data[middle + 8:])
    elif how == "delete":
        file.unlink()
    elif how == "garbage":
        file.write_text("{not json")
    elif how == "empty":
        file.write_bytes(b"")
    else:
        raise ValueError(how)


def test_commit_marker_lists_every_file_with_size_and_crc(two_checkpoints: Path) -> None:
    ckpt = checkpoint.checkpoint_dir(two_checkpoints, 10)
    files = checkpoint.read_meta(ckpt)["files"]
    assert set(files) == {p.name for p in ckpt.iterdir()} - {checkpoint.META}
    assert {"rank_0.pt", ".metadata", "__0_0.distcp"} <= set(files)
    assert checkpoint.damage(ckpt) is None


@pytest.mark.parametrize("case", CORPUS, ids=[c["case"] for c in CORPUS])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(
        two_checkpoints: Path, tmp_path: Path, case: dict, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "default" / "base"
    shutil.copytree(two_checkpoints, run)
    _damage(checkpoint.checkpoint_dir(run, 10) / case["file"], case["damage"])
    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
        assert checkpoint.latest_checkpoint(run) == checkpoint.checkpoint_dir(run, 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and case["expect"] in warnings[0] and "using step_5" in warnings[0], warnings
    with pytest.raises(ConfigError, match="step_10") as err:  # named explicitly: refused with the reason
        checkpoint.latest_checkpoint(checkpoint.checkpoint_dir(run, 10))
    assert case["expect"] in str(err.value) and "\n" not in str(err.value)


def test_resume_evaluate_and_export_use_the_previous_complete_checkpoint(
        two_checkpoints: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from serving.export import load_trained

    run = tmp_path / "default" / "base"
    shutil.copytree(two_checkpoints, run)
    (run / checkpoint.BEST).write_text(json.dumps({"checkpoint": "step_10"}))
    _damage(checkpoint.checkpoint_dir(run, 10) / "__0_0.distcp", "truncate")
    assert load_trained(run).checkpoint == checkpoint.checkpoint_dir(run, 5)
    with pytest.raises(ConfigError, match="step_10 is damaged .__0_0.distcp has"):  # asked for by name: refused
        load_trained(run, "step_10")
    with pytest.raises(ConfigError, match="step_99 does not exist"):
        load_trained(run, "step_99")
    assert seqrec(["evaluate", str(run), "--split", "valid"]) == 0
    assert json.loads((run / "eval_valid.json").read_text())["checkpoint"].endswith("step_5")
    resumed = run_training(load_config(train_overrides(
        tiny_dataset, tmp_path, "trainer.run_id=base", "trainer.max_steps=12", "trainer.checkpoint_every=5",
        "trainer.resume=true", "trainer.test_at_end=false", "eval.per_user=false")))
    assert resumed["steps"] == 12 and len(resumed["train_losses"]) == 12
    reference = json.loads((two_checkpoints / "metrics.json").read_text())["train_losses"]
    assert resumed["train_losses"][:10] == reference  # steps 6..10 retrained exactly as the first time


def test_no_usable_checkpoint_is_one_line_naming_each(two_checkpoints: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "default" / "base"
    shutil.copytree(two_checkpoints, run)
    (run / checkpoint.BEST).unlink(missing_ok=True)
    for ckpt in (run / "checkpoints").iterdir():
        _damage(ckpt / "rank_0.pt", "delete")
    with pytest.raises(ConfigError, match="no usable checkpoint") as err:
        checkpoint.latest_checkpoint(run)
    assert str(err.value).count("rank_0.pt is missing") == len(list((run / "checkpoints").iterdir()))
    assert seqrec(["evaluate", str(run), "--split", "valid"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no usable checkpoint" in lines[0]
