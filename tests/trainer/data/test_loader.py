"""Tests for the streaming loader: example layout, exactly-once sharding, even batches, bucketing, resume."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from modules.batch import Batch
from trainer.data.loader import LoaderConfig, SequenceDataset, build_loader
from trainer.data.schema import FORMAT_VERSION, ITEMS, SEQUENCES, USERS, Manifest
from trainer.errors import ConfigError, DataError


def write_dataset(folder: Path, lengths: np.ndarray, num_items: int = 50, row_group_size: int = 64,
                  seed: int = 0, actions: bool = False, split_ends: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> Path:
    """A dataset folder following trainer/data/schema.py; leave-one-out split unless ``split_ends`` is given."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    users = len(lengths)
    weights = 1.0 / np.arange(1, num_items + 1)  # skewed popularity, like real logs
    items = rng.choice(np.arange(1, num_items + 1), size=int(lengths.sum()), p=weights / weights.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    train_end, valid_end = split_ends if split_ends is not None else (
        np.maximum(lengths - 2, 0), np.maximum(lengths - 1, 0))
    train_mask = np.arange(len(items)) - np.repeat(offsets[:-1], lengths) < np.repeat(train_end, lengths)
    columns = {
        "user_idx": pa.array(np.arange(users, dtype=np.int32)),
        "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(items.astype(np.int32))),
        "timestamps": pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.arange(len(items), dtype=np.int64))),
        "train_end": pa.array(np.asarray(train_end, dtype=np.int32)),
        "valid_end": pa.array(np.asarray(valid_end, dtype=np.int32)),
    }
    if actions:
        codes = (items % 3).astype(np.int8)  # a function of the item, so tests can check alignment
        columns["actions"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(codes))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / SEQUENCES, row_group_size=row_group_size)
    popularity = np.bincount(items[train_mask], minlength=num_items + 1)[1:]
    pq.write_table(pa.table({
        "item_idx": pa.array(np.arange(1, num_items + 1, dtype=np.int32)),
        "raw_id": pa.array([f"i{i}" for i in range(1, num_items + 1)]),
        "popularity": pa.array(popularity.astype(np.int64)),
    }), folder / ITEMS)
    pq.write_table(pa.table({
        "user_idx": pa.array(np.arange(users, dtype=np.int32)),
        "raw_id": pa.array([f"u{u}" for u in range(users)]),
    }), folder / USERS)
    Manifest(
        format_version=FORMAT_VERSION,
        source={"format": "test"},
        counts={"users": users, "items": num_items, "interactions": int(lengths.sum()),
                "train_interactions": int(train_mask.sum())},
        filters={},
        split={"policy": "leave_one_out"},
        actions=["a", "b", "c"] if actions else [],
    ).write(folder)
    return folder


def read_sequences(folder: Path) -> dict[str, list]:
    return pq.read_table(folder / SEQUENCES).to_pydict()


def expected_examples(folder: Path, config: LoaderConfig) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Oracle: user -> (history, targets), written per user with plain slicing, straight from the docstring."""
    data, out, L = read_sequences(folder), {}, config.max_len
    for user, items, te, ve in zip(data["user_idx"], data["items"], data["train_end"], data["valid_end"]):
        if config.kind == "causal":
            seq = items[:te][-(L + 1):]
            example = (seq[:-1], seq[1:]) if te >= 2 else None
        else:
            cut, hi = {"train": (te - 1, te), "valid": (te, ve), "test": (ve, len(items))}[config.split]
            example = (items[:cut][-L:], items[cut:hi]) if cut >= 1 and hi > cut else None
        if example is not None:
            out[user] = (tuple(example[0]), tuple(example[1]))
    return out


def split_batch(batch: Batch) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """(user, history, targets) per example."""
    jt = batch.sparse.to_dict()
    hist = [tuple(t.tolist()) for t in jt["history"].to_dense()]
    tgt = [tuple(t.tolist()) for t in jt["target"].to_dense()]
    return list(zip(batch.user_idx.tolist(), hist, tgt))


def all_examples(folder: Path, config: LoaderConfig, world_size: int = 1) -> list:
    out = []
    for rank in range(world_size):
        for batch in build_loader(folder, config, rank, world_size):
            out.extend(split_batch(batch))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 users with lengths 1..40 (some too short for any example), row groups of 64 users (8 groups)."""
    lengths = np.random.default_rng(1).integers(1, 41, size=500)
    return write_dataset(tmp_path_factory.mktemp("ds") / "small", lengths, row_group_size=64)


@pytest.mark.parametrize(("kind", "split"), [("causal", "train"), ("last", "train"), ("last", "valid"),
                                             ("last", "test")])
def test_examples_follow_the_split_definition(dataset: Path, kind: str, split: str) -> None:
    config = LoaderConfig(batch_size=16, max_len=7, kind=kind, split=split, bucket_batches=4)
    got = all_examples(dataset, config)
    expected = expected_examples(dataset, config)
    assert {user: (h, t) for user, h, t in got} == expected
    assert len(got) == len(expected)
    ds = SequenceDataset(dataset, config)
    assert ds.num_examples == len(expected)
    assert ds.num_skipped == 500 - len(expected) > 0


def test_time_split_with_several_valid_targets(tmp_path: Path) -> None:
    lengths = np.random.default_rng(2).integers(3, 20, size=150)
    train_end = lengths // 2
    valid_end = train_end + (np.arange(150) % 3)  # 0, 1 or 2 validation targets
    folder = write_dataset(tmp_path / "d", lengths, row_group_size=32, split_ends=(train_end, valid_end))
    for split in ("valid", "test"):
        config = LoaderConfig(batch_size=8, max_len=5, kind="last", split=split)
        assert {u: (h, t) for u, h, t in all_examples(folder, config)} == expected_examples(folder, config)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_example_exactly_once_across_ranks_and_workers(dataset: Path, num_workers: int) -> None:
    config = LoaderConfig(batch_size=8, max_len=5, num_workers=num_workers, negatives="uniform", num_negatives=3)
    got = all_examples(dataset, config, world_size=2)
    pairs = [(user, target) for user, _, target in got]
    assert len(pairs) == len(set(pairs))
    expected = expected_examples(dataset, config)
    assert set(pairs) == {(user, target) for user, (_, target) in expected.items()}


def uneven_dataset(tmp_path: Path) -> Path:
    """5 row groups (4 x 64 users + 1 x 20): two ranks get 3 and 2 groups, so their example counts differ."""
    return write_dataset(tmp_path / "uneven", np.full(276, 6), row_group_size=64)


@pytest.mark.parametrize("num_workers", [0, 3])  # 3 workers: rank 1 has 2 row groups, so one worker has none
def test_even_batches_give_every_rank_the_same_count(tmp_path: Path, num_workers: int) -> None:
    folder = uneven_dataset(tmp_path)
    config = LoaderConfig(batch_size=10, num_workers=num_workers, bucket_batches=3)
    datasets = [SequenceDataset(folder, config, rank, 2) for rank in range(2)]
    assert datasets[0].num_examples != datasets[1].num_examples
    assert datasets[0].num_batches() == datasets[1].num_batches()
    for rank, ds in enumerate(datasets):
        sizes = [batch.size for batch in build_loader(folder, config, rank, 2)]
        assert len(sizes) == ds.num_batches()
        assert sum(sizes) == ds.num_examples
        assert 1 <= min(sizes) and max(sizes) <= config.batch_size


def test_uneven_batches_when_disabled(tmp_path: Path) -> None:
    folder = uneven_dataset(tmp_path)
    config = LoaderConfig(batch_size=10, even_batches=False)
    counts = [SequenceDataset(folder, config, rank, 2).num_batches() for rank in range(2)]
    examples = [SequenceDataset(folder, config, rank, 2).num_examples for rank in range(2)]
    assert counts == [-(-n // 10) for n in examples]
    assert counts[0] != counts[1]


def test_too_many_ranks_for_the_data_is_a_config_error(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "tiny", np.full(70, 5), row_group_size=64)  # groups of 64 and 6 users
    with pytest.raises(ConfigError, match="even_batches"):
        SequenceDataset(folder, LoaderConfig(batch_size=2), rank=0, world_size=2)


def padding_overhead(batches: list[Batch]) -> float:
    """Mean over batches of (longest history * B) / real tokens: the cost of padding to the batch maximum."""
    ratios = [int(b.sparse["history"].lengths().max()) * b.size / int(b.sparse["history"].lengths().sum())
              for b in batches]
    return float(np.mean(ratios))


def test_length_bucketing_cuts_padding(tmp_path: Path) -> None:
    lengths = np.clip(np.random.default_rng(3).lognormal(np.log(15), 1.0, size=4000), 3, 300).astype(int)
    folder = write_dataset(tmp_path / "skewed", lengths, row_group_size=1024)
    overhead = {b: padding_overhead(list(build_loader(folder, LoaderConfig(batch_size=32, max_len=200,
                                                                            bucket_batches=b))))
                for b in (1, 16)}
    # waste = overhead - 1; sorting 16 batches' worth at a time should remove most of it
    assert overhead[16] - 1 < (overhead[1] - 1) / 3, overhead


@pytest.mark.parametrize("window", ["last", "random"])
def test_mean_targets_per_batch_is_the_epoch_mean_over_all_ranks(dataset: Path, window: str) -> None:
    config = LoaderConfig(batch_size=8, max_len=6, bucket_batches=4, window=window)
    counts = [len(batch.sparse["target"].values()) for rank in range(2)
              for batch in build_loader(dataset, config, rank, 2)]
    means = [SequenceDataset(dataset, config, rank, 2).mean_targets_per_batch for rank in range(2)]
    assert means == pytest.approx([sum(counts) / len(counts)] * 2)
    assert min(counts) < 0.5 * max(counts)  # bucketed: batch target counts differ widely


def batches_equal(a: Batch, b: Batch) -> bool:
    same = torch.equal(a.sparse.values(), b.sparse.values()) and torch.equal(a.sparse.lengths(), b.sparse.lengths())
    return same and all(torch.equal(x, y) for x, y in zip(a._tensors().values(), b._tensors().values()))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_gives_the_same_remaining_batches(dataset: Path, num_workers: int) -> None:
    config = LoaderConfig(batch_size=8, max_len=6, bucket_batches=3, num_workers=num_workers,
                          negatives="popularity", num_negatives=4, seed=7)
    loader = build_loader(dataset, config)
    loader.dataset.set_epoch(2)
    straight = list(loader)
    assert len(straight) == loader.dataset.num_batches()

    first = build_loader(dataset, config)
    first.dataset.set_epoch(2)
    stop = 11  # not a multiple of bucket_batches: the restore lands inside a buffer
    iterator = iter(first)
    for _ in range(stop):
        next(iterator)
    state = first.state_dict()
    del iterator

    resumed = build_loader(dataset, config)
    resumed.load_state_dict(state)
    resumed.dataset.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(straight) - stop
    assert all(batches_equal(a, b) for a, b in zip(rest, straight[stop:]))


def test_restored_finished_epoch_moves_on_to_the_set_epoch(dataset: Path) -> None:
    config = LoaderConfig(batch_size=16, max_len=6)
    loader = build_loader(dataset, config)
    list(loader)
    state = loader.state_dict()
    resumed = build_loader(dataset, config)
    resumed.load_state_dict(state)
    resumed.dataset.set_epoch(1)
    epoch1 = list(resumed)
    reference = build_loader(dataset, config)
    reference.dataset.set_epoch(1)
    assert len(epoch1) == resumed.dataset.num_batches()
    assert all(batches_equal(a, b) for a, b in zip(epoch1, reference))


def test_resume_rejects_another_setup(dataset: Path) -> None:
    state = build_loader(dataset, LoaderConfig(batch_size=8)).dataset.state_dict()
    with pytest.raises(ConfigError, match="same setup"):
        SequenceDataset(dataset, LoaderConfig(batch_size=16)).load_state_dict(state)


def test_shuffle_is_deterministic_and_changes_with_epoch_and_seed(dataset: Path) -> None:
    def users(seed: int, epoch: int) -> list[int]:
        ds = SequenceDataset(dataset, LoaderConfig(batch_size=16, seed=seed))
        ds.set_epoch(epoch)
        return [u for batch in ds for u in batch.user_idx.tolist()]

    assert users(0, 0) == users(0, 0)
    assert users(0, 0) != users(0, 1)
    assert users(0, 0) != users(1, 0)
    assert sorted(users(0, 0)) == sorted(users(0, 1))


def test_negatives_and_logq(dataset: Path) -> None:
    config = LoaderConfig(batch_size=16, negatives="popularity", num_negatives=5, popularity_alpha=0.5)
    ds = SequenceDataset(dataset, config)
    for batch in ds:
        negatives = batch.sparse["negatives"]
        assert torch.equal(negatives.lengths(), torch.full((batch.size,), 5))
        assert int(negatives.values().min()) >= 1
        np.testing.assert_allclose(batch.negative_logq.numpy(), ds.sampler.logq(negatives.values().numpy()))
        np.testing.assert_allclose(batch.target_logq.numpy(), ds.sampler.logq(batch.sparse["target"].values().numpy()))
    in_batch = next(iter(SequenceDataset(dataset, LoaderConfig(batch_size=16, negatives="in_batch"))))
    assert in_batch.sparse["negatives"].values().numel() == 0
    assert in_batch.target_logq.numel() == in_batch.sparse["target"].values().numel()
    assert torch.isfinite(in_batch.target_logq).all()


def test_ranker_rows(dataset: Path) -> None:
    config = LoaderConfig(batch_size=8, max_len=5, kind="ranker", split="valid", negatives="uniform",
                          ranker_negatives=3)
    expected = expected_examples(dataset, LoaderConfig(batch_size=8, max_len=5, kind="last", split="valid"))
    seen = set()
    for batch in SequenceDataset(dataset, config):
        assert batch.kind == "ranker" and batch.labels[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0] * (batch.size // 4)
        for row, (user, history, candidate) in enumerate(split_batch(batch)):
            assert history == expected[user][0]
            if row % 4 == 0:
                assert candidate == expected[user][1][:1]
                seen.add(user)
    assert seen == set(expected)


def test_actions_follow_history(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "act", np.random.default_rng(4).integers(2, 30, size=100), actions=True)
    for batch in SequenceDataset(folder, LoaderConfig(batch_size=8, max_len=6)):
        assert torch.equal(batch.actions, batch.sparse["history"].values() % 3)


def test_bad_split_positions_name_the_row(tmp_path: Path) -> None:
    lengths = np.full(10, 5)
    train_end, valid_end = np.full(10, 3), np.full(10, 4)
    train_end[6] = 5  # after valid_end
    folder = write_dataset(tmp_path / "bad", lengths, split_ends=(train_end, valid_end))
    with pytest.raises(DataError, match="row 7"):
        SequenceDataset(folder, LoaderConfig())


@pytest.mark.parametrize(("settings", "key"), [
    ({"batch_size": 0}, "batch_size"), ({"kind": "causal", "split": "valid"}, "kind"),
    ({"kind": "ranker", "negatives": "in_batch"}, "negatives"), ({"negatives": "random"}, "negatives"),
])
def test_config_errors_name_the_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        LoaderConfig(**settings)


def test_worker_count_must_match_the_plan(dataset: Path) -> None:
    planned_for_two = SequenceDataset(dataset, LoaderConfig(num_workers=2))
    with pytest.raises(ConfigError, match="num_workers"):
        iter(planned_for_two)  # iterated in the main process: one reader where two were planned


def test_history_counts_in_a_large_causal_epoch(dataset: Path) -> None:
    """Every train target inside the window is seen once: target tokens equal the oracle's."""
    config = LoaderConfig(batch_size=32, max_len=10)
    targets = collections.Counter(t for _, _, tgt in all_examples(dataset, config) for t in tgt)
    expected = collections.Counter(t for _, tgt in expected_examples(dataset, config).values() for t in tgt)
    assert targets == expected


def test_full_epoch_on_a_larger_dataset(tmp_path: Path) -> None:
    """A 20k-user epoch with negatives yields every eligible user once (speed is measured by bench_loader.py)."""
    lengths = np.clip(np.random.default_rng(5).lognormal(np.log(30), 1.0, size=20_000), 3, 1000).astype(int)
    folder = write_dataset(tmp_path / "speed", lengths, num_items=5000, row_group_size=8192)
    loader = build_loader(folder, LoaderConfig(batch_size=256, max_len=200, negatives="uniform", num_negatives=64))
    sequences = sum(batch.size for batch in loader)
    assert sequences == int((np.maximum(lengths - 2, 0) >= 2).sum())


def _windows(dataset: Path, epoch: int, **settings) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    ds = SequenceDataset(dataset, LoaderConfig(batch_size=16, max_len=7, window="random", **settings))
    ds.set_epoch(epoch)
    return {user: (h, t) for batch in ds for user, h, t in split_batch(batch)}


def test_random_window_takes_consecutive_train_items_and_moves_with_the_epoch(dataset: Path) -> None:
    data = read_sequences(dataset)
    trains = {u: items[:te] for u, items, te in zip(data["user_idx"], data["items"], data["train_end"])}
    last = expected_examples(dataset, LoaderConfig(batch_size=16, max_len=7))
    epochs = [_windows(dataset, epoch) for epoch in range(4)]
    assert epochs[0] == _windows(dataset, 0)  # a function of (seed, epoch): resume rebuilds it
    assert all(set(e) == set(last) for e in epochs)  # the same users, one example each
    starts: dict[int, set[int]] = collections.defaultdict(set)
    for examples in epochs:
        for user, (history, targets) in examples.items():
            train = trains[user]
            if len(train) <= 8:  # short users: their whole train sequence, as with window="last"
                assert (history, targets) == last[user]
                continue
            assert len(history) == len(targets) == 7 and history[1:] == targets[:-1]
            seq = history + targets[-1:]  # 8 consecutive train items, ending anywhere
            found = [s for s in range(len(train) - 7) if tuple(train[s:s + 8]) == seq]
            assert found, f"user {user}: window is not a run of train items"
            starts[user].add(found[0])
    long = [u for u in starts if len(trains[u]) > 20]
    assert long and sum(len(starts[u]) > 1 for u in long) > len(long) / 2  # windows move between epochs
    assert any(min(starts[u]) < len(trains[u]) - 8 for u in long)  # older items are reached


def test_window_must_be_known() -> None:
    with pytest.raises(ConfigError, match="loader.window"):
        LoaderConfig(window="oldest")
