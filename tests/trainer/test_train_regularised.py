"""The trainer runs the zoo's regularisers end to end: loader augmentations and the contrastive term, pipelined
and plain, seeded (the same run twice gives the same losses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.train import run_training

REGULARISED = ("model=gru4rec", "model.objective.loss=bce", "model.objective.contrastive_weight=0.2",
               "data.augment=[crop,mask,reorder,substitute]", "data.augment_prob=0.5", "trainer.epochs=1")


def _train(dataset: Path, out: Path, *extra: str) -> dict:
    overrides = [o for o in train_overrides(dataset, out, *REGULARISED, *extra) if o != "model.encoder.dropout=0.0"]
    return run_training(load_config(overrides))


def test_augmented_contrastive_training_is_seeded_and_pipelines(tiny_dataset: Path, tmp_path: Path) -> None:
    piped = _train(tiny_dataset, tmp_path, "trainer.run_id=a", "trainer.pipeline=true")
    again = _train(tiny_dataset, tmp_path, "trainer.run_id=b", "trainer.pipeline=false")
    assert piped["steps"] == again["steps"] > 10
    assert piped["train_losses"] == pytest.approx(again["train_losses"], rel=1e-5, abs=1e-6)
    assert piped["test"]["users"] == 600 and piped["test"]["ndcg@10"] > 0.0
