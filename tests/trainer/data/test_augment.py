"""Sequence augmentations: each operation does what it says, and augmented epochs are seeded and resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainer.data.test_loader import write_dataset
from trainer.data.augment import Augmentation, augment_window
from trainer.data.loader import LoaderConfig, SequenceDataset
from trainer.errors import ConfigError

WINDOW = np.arange(101, 121)  # 20 distinct items


def run(op: str, seed: int = 0, ratio: float = 0.6):
    rng = np.random.default_rng(seed)
    times = {"timestamps": WINDOW * 10}
    return augment_window(WINDOW, times, Augmentation(ops=(op,), prob=1.0, ratio=ratio), 500, rng)


def test_crop_keeps_a_contiguous_share_of_the_window() -> None:
    for seed in range(5):
        history, targets, columns = run("crop", seed)
        window = np.append(history, targets[-1])
        assert len(window) == 12  # ceil(0.6 * 20)
        assert np.array_equal(np.diff(window), np.ones(11)) and np.array_equal(targets, window[1:])
        assert np.array_equal(columns["timestamps"], history * 10)


def test_reorder_shuffles_one_span_only() -> None:
    history, targets, columns = run("reorder", 3)
    window = np.append(history, targets[-1])
    assert sorted(window) == list(WINDOW) and not np.array_equal(window, WINDOW)
    moved = np.flatnonzero(window != WINDOW)
    assert moved.max() - moved.min() < 12 and np.array_equal(columns["timestamps"], history * 10)


@pytest.mark.parametrize("op", ["mask", "substitute"])
def test_mask_and_substitute_change_history_inputs_only(op: str) -> None:
    changed = []
    for seed in range(30):
        history, targets, _ = run(op, seed, ratio=0.3)
        assert np.array_equal(targets, WINDOW[1:])
        hits = history != WINDOW[:-1]
        changed.append(hits.mean())
        if op == "mask":
            assert np.all(history[hits] == 0)
        else:
            assert np.all((history[hits] >= 1) & (history[hits] <= 500))
    assert abs(np.mean(changed) - 0.3) < 0.06


def test_prob_zero_changes_nothing_and_bad_settings_fail() -> None:
    history, targets, _ = augment_window(WINDOW, {}, Augmentation(ops=("crop",), prob=0.0), 500,
                                         np.random.default_rng(0))
    assert np.array_equal(history, WINDOW[:-1]) and np.array_equal(targets, WINDOW[1:])
    for bad in ({"ops": ("shuffle",)}, {"ops": ("crop",), "prob": 1.5}, {"ops": ("mask",), "ratio": 0.0}):
        with pytest.raises(ConfigError, match="data.augment"):
            Augmentation(**bad)
    with pytest.raises(ConfigError, match="causal"):
        LoaderConfig(kind="last", split="valid", augment=Augmentation(ops=("crop",)))


def _epoch(folder: Path, config: LoaderConfig, skip: int = 0) -> list[tuple]:
    dataset = SequenceDataset(folder, config)
    dataset.set_epoch(1)
    if skip:
        dataset.resume_at(1, skip)
    return [(b.sparse["history"].values().tolist(), b.sparse["target"].values().tolist(), b.timestamps.tolist())
            for b in dataset]


def test_augmented_epochs_are_seeded_and_resumable(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "aug", np.random.default_rng(2).integers(3, 25, size=60))
    augment = Augmentation(ops=("crop", "mask", "reorder", "substitute"), prob=0.8)
    config = LoaderConfig(batch_size=8, max_len=10, augment=augment, timestamps=True)
    straight = _epoch(folder, config)
    assert straight == _epoch(folder, config)
    assert straight[3:] == _epoch(folder, config, skip=3)
    plain = _epoch(folder, LoaderConfig(batch_size=8, max_len=10, timestamps=True))
    assert straight != plain and len(straight) == len(plain)
    for history, targets, times in straight:
        assert len(history) == len(targets) == len(times) and min(targets) >= 1


def test_bad_augment_settings_fail_in_load_config() -> None:
    from trainer.config import load_config

    assert load_config(["data.augment=[crop,reorder]"]).data.augment == ["crop", "reorder"]
    for bad in ("data.augment=[shuffle]", "data.augment_prob=2.0", "data.augment_ratio=0"):
        with pytest.raises(ConfigError, match="data.augment"):
            load_config([bad])
