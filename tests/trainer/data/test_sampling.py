"""Tests for the negative samplers: support, distribution, log-probabilities, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.trainer.data.test_loader import write_dataset
from trainer.data.sampling import (
    InBatch,
    PopularitySampler,
    UniformSampler,
    batch_rng,
    build_sampler,
    read_popularity,
)
from trainer.data.schema import ITEMS
from trainer.errors import ConfigError, DataError


def test_uniform_covers_one_to_n_and_never_padding() -> None:
    sampler = UniformSampler(7)
    ids, logq = sampler.sample(20_000, np.random.default_rng(0))
    assert ids.min() == 1 and ids.max() == 7
    counts = np.bincount(ids, minlength=8)[1:]
    assert np.abs(counts / 20_000 - 1 / 7).max() < 0.01
    np.testing.assert_allclose(logq, np.log(1 / 7), rtol=1e-6)
    assert sampler.logq(np.array([0]))[0] == -np.inf


def test_popularity_follows_pop_to_the_alpha() -> None:
    popularity = np.array([100, 10, 1, 0, 50])
    alpha = 0.5
    sampler = PopularitySampler(popularity, alpha)
    ids, logq = sampler.sample(200_000, np.random.default_rng(1))
    assert ids.min() >= 1 and ids.max() <= 5
    weights = np.maximum(popularity, 1) ** alpha  # an unseen item counts as 1
    expected = weights / weights.sum()
    observed = np.bincount(ids, minlength=6)[1:] / len(ids)
    assert np.abs(observed - expected).max() < 0.005
    np.testing.assert_allclose(logq, np.log(expected[ids - 1]), rtol=1e-5)
    np.testing.assert_allclose(sampler.logq(np.arange(1, 6)), np.log(expected), rtol=1e-5)


def test_popularity_alpha_zero_is_uniform() -> None:
    sampler = PopularitySampler(np.array([1000, 1, 1]), alpha=0.0)
    np.testing.assert_allclose(sampler.logq(np.array([1, 2, 3])), np.log(1 / 3), rtol=1e-6)


def test_in_batch_draws_nothing_and_scores_by_train_share() -> None:
    sampler = InBatch(np.array([3, 1, 0]))
    ids, logq = sampler.sample(10, np.random.default_rng(0))
    assert ids.size == 0 and logq.size == 0
    np.testing.assert_allclose(sampler.logq(np.array([1, 2, 3])), np.log(np.array([3, 1, 1]) / 5), rtol=1e-6)


def test_same_stream_same_draws_and_streams_differ() -> None:
    sampler = PopularitySampler(np.arange(1, 101))
    a = sampler.sample(50, batch_rng(3, 1, 0, 0, 3, 9))[0]
    assert np.array_equal(a, sampler.sample(50, batch_rng(3, 1, 0, 0, 3, 9))[0])
    for other in [(3, 2, 0, 0, 3, 9), (3, 1, 1, 0, 3, 9), (3, 1, 0, 1, 3, 9), (3, 1, 0, 0, 3, 10)]:
        assert not np.array_equal(a, sampler.sample(50, batch_rng(*other))[0])


def test_build_sampler_reads_popularity(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "d", np.full(40, 6), num_items=12)
    popularity = read_popularity(folder)
    assert len(popularity) == 12
    assert popularity.sum() == 40 * 4  # leave-one-out: 4 train items per user of 6
    assert build_sampler("none", folder, 12) is None
    assert isinstance(build_sampler("uniform", folder, 12), UniformSampler)
    assert isinstance(build_sampler("popularity", folder, 12), PopularitySampler)
    assert isinstance(build_sampler("in_batch", folder, 12), InBatch)
    with pytest.raises(DataError, match="manifest"):
        build_sampler("popularity", folder, 13)
    with pytest.raises(ConfigError, match="negatives"):
        build_sampler("hard", folder, 12)


def test_bad_item_ids_name_the_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"item_idx": pa.array([1, 2, 4], pa.int32()), "popularity": pa.array([1, 1, 1])}),
                   tmp_path / ITEMS)
    with pytest.raises(DataError, match="row 3"):
        read_popularity(tmp_path)
