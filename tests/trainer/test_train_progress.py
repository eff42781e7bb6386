"""What the training loop shows: a running-mean loss on the bar every step, log lines at a fixed interval when
there is no terminal (torchx, CI), and the final test metrics in TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tqdm import tqdm

import trainer.train as train_module
from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.train import run_training


class _RecordingBar(tqdm):
    """A real (silent) tqdm bar that keeps every postfix it is given."""

    seen: list[str] = []

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        _RecordingBar.seen.append(kwargs["loss"])
        super().set_postfix(ordered_dict, refresh, **kwargs)


def test_bar_shows_the_running_mean_of_the_epoch(tiny_dataset: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def bar(total: int, desc: str, enabled: bool, initial: int = 0) -> tqdm:
        return _RecordingBar(total=total, desc=desc, disable=True, initial=initial)

    monkeypatch.setattr(train_module, "_progress", bar)
    _RecordingBar.seen = []
    result = run_training(load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=bar",
                                                      "trainer.max_steps=6", "trainer.test_at_end=false")))
    losses = result["train_losses"]
    assert len(_RecordingBar.seen) == len(losses) == 6  # every step
    expected = [f"{sum(losses[: i + 1]) / (i + 1):.4f}" for i in range(6)]
    assert _RecordingBar.seen == expected
    assert _RecordingBar.seen[-1] != f"{losses[-1]:.4f}"


def test_no_terminal_logs_at_the_interval_and_tensorboard_gets_test_metrics(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with caplog.at_level(logging.INFO, logger="seqrec.train"):
        result = run_training(load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=tb",
                                                          "trainer.max_steps=12", "trainer.log_every=5")))
    steps = [int(r.getMessage().split(" step ")[1].split()[0]) for r in caplog.records
             if " loss " in r.getMessage() and "targets/s" in r.getMessage()]
    assert steps == [1, 5, 10]  # stderr is not a terminal under pytest: no bar, a line every log_every steps
    events = EventAccumulator(str(Path(result["run_dir"]) / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "test/ndcg@10" in tags and "final_valid/ndcg@10" in tags
    assert events.Scalars("test/ndcg@10")[-1].value == pytest.approx(result["test"]["ndcg@10"], rel=1e-6)
