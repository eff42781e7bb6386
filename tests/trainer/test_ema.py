"""The EMA of the dense weights: equal to the hand-computed average, swapped in for evaluation and checkpoints,
and a run with it trains, evaluates and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.ema import DenseEMA
from trainer.errors import ConfigError
from trainer.train import run_training


def test_average_equals_the_hand_computed_ema() -> None:
    weight = nn.Parameter(torch.tensor([1.0, 2.0]))
    ema = DenseEMA([weight], decay=0.5)
    expected = None
    for value in ([1.0, 2.0], [3.0, 0.0], [5.0, 4.0]):
        with torch.no_grad():
            weight.copy_(torch.tensor(value))
        ema.update()
        new = torch.tensor(value)
        expected = new if expected is None else 0.5 * expected + 0.5 * new  # the first update copies
    with ema.swapped():
        torch.testing.assert_close(weight.detach(), expected)
    torch.testing.assert_close(weight.detach(), torch.tensor([5.0, 4.0]))  # live weights back after the block
    with pytest.raises(ValueError, match="ema_decay"):
        DenseEMA([weight], decay=1.0)


def test_a_run_with_ema_evaluates_the_average_and_resumes(tiny_dataset: Path, tmp_path: Path) -> None:
    overrides = train_overrides(tiny_dataset, tmp_path, "optim.ema_decay=0.9", "trainer.run_id=ema",
                                "trainer.test_at_end=true")
    results = run_training(load_config(overrides))
    run = Path(results["run_dir"])
    assert results["test"]["users"] == 600 and results["best"]["step"] > 0
    again = run_training(load_config([*overrides, "trainer.resume=true", "trainer.epochs=3"]))
    assert again["steps"] > results["steps"]
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 3
    with pytest.raises(ConfigError, match="optim.ema_decay"):
        load_config(["optim.ema_decay=1.5"])
