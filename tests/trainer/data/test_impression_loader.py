"""The ``impressions`` loader kind: per-head labels, histories cut at the request, even rank shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.trainer.data.readers.test_kuairand import kuairand  # noqa: F401  (the prepared KuaiRand fixture)
from trainer.data import schema
from trainer.data.loader import LoaderConfig, build_loader
from trainer.errors import ConfigError


def _config(**overrides) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 512, "max_len": 20, "kind": "impressions", "split": "valid",
                           "shuffle": False, "heads": ("click", "like"), **overrides})


def test_batches_carry_one_label_per_head_and_the_history_before_the_request(kuairand: Path) -> None:  # noqa: F811
    imp = pq.read_table(kuairand / schema.IMPRESSIONS, filters=[("split", "=", 1)])
    seq = pq.read_table(kuairand / schema.SEQUENCES, columns=["items"])["items"].combine_chunks()
    offsets, items = seq.offsets.to_numpy(), seq.values.to_numpy()
    batch = next(iter(build_loader(kuairand, _config())))
    n = batch.size  # the split is cut into equal batches of at most batch_size
    assert batch.kind == "impressions" and batch.labels.shape == (n, 2) and 500 < n <= 512
    assert batch.labels[:, 0].numpy().tolist() == imp["click"].to_numpy()[:n].tolist()
    history, lengths = batch.sparse["history"].values().numpy(), batch.sparse["history"].lengths().numpy()
    assert lengths.max() <= 20 and len(batch.actions) == len(batch.timestamps) == lengths.sum()
    start = 0
    for row in range(n):
        user, end = int(imp["user_idx"][row].as_py()), int(imp["hist_end"][row].as_py())
        expected = items[offsets[user] + end - lengths[row]: offsets[user] + end]
        assert lengths[row] == min(end, 20) and history[start:start + lengths[row]].tolist() == expected.tolist()
        start += lengths[row]
    assert (batch.sparse["target"].values().numpy() == imp["item_idx"].to_numpy()[:n]).all()
    assert (batch.request_time.numpy() == imp["timestamp"].to_numpy()[:n]).all()


def test_two_ranks_see_every_example_once_in_equally_many_batches(kuairand: Path) -> None:  # noqa: F811
    seen, counts = [], []
    for rank in range(2):
        loader = build_loader(kuairand, _config(shuffle=True, batch_size=1000), rank=rank, world_size=2)
        batches = list(loader)
        counts.append(len(batches))
        assert len(batches) == loader.dataset.num_batches()
        seen += [(int(u), int(t), int(c)) for b in batches for u, t, c in
                 zip(b.user_idx, b.request_time, b.sparse["target"].values())]
    imp = pq.read_table(kuairand / schema.IMPRESSIONS, filters=[("split", "=", 1)])
    expected = list(zip(*(imp[c].to_numpy().tolist() for c in ("user_idx", "timestamp", "item_idx"))))
    assert counts[0] == counts[1] and sorted(seen) == sorted(expected)


def test_resume_skips_the_batches_done(kuairand: Path) -> None:  # noqa: F811
    loader = build_loader(kuairand, _config(shuffle=True, batch_size=1000, split="train"))
    loader.dataset.set_epoch(3)
    full = list(loader)
    loader.dataset.resume_at(3, 5)
    rest = list(loader)
    assert len(rest) == len(full) - 5
    assert np.array_equal(rest[0].user_idx.numpy(), full[5].user_idx.numpy())


def test_an_unknown_head_names_the_columns(kuairand: Path) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=r"model.heads \['purchase'\] are not label columns"):
        build_loader(kuairand, _config(heads=("purchase",)))
