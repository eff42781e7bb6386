"""`seqrec synth` and the ``synthetic`` reader: structure of the generated log, determinism, atomicity, reader."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from trainer.data import synth
from trainer.data.readers import open_reader
from trainer.data.readers.base import RawLog
from trainer.data.readers.synthetic import ACTIONS, EVENTS_FILE, ITEMS_FILE, META_FILE, USERS_FILE
from trainer.data.synth import BLOCK_USERS, SynthConfig, generate, transition_stats
from trainer.errors import ConfigError, DataError

SMALL = {"users": 3000, "items": 500, "categories": 20}
FILES = (EVENTS_FILE, ITEMS_FILE, USERS_FILE, META_FILE)


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "log"
    generate(SynthConfig(**SMALL, seed=7), out, progress=False)
    return out


def _events(folder: Path) -> pa.Table:
    return pq.read_table(folder / EVENTS_FILE)


def _user_lengths(events: pa.Table) -> np.ndarray:
    return pc.value_counts(events.column("user")).field("counts").to_numpy()


def test_reader_returns_rawlog_with_columns_and_counts(small_log: Path) -> None:
    raw = open_reader("synthetic", small_log)
    meta = json.loads((small_log / META_FILE).read_text())
    assert isinstance(raw, RawLog) and raw.format == "synthetic"
    assert sorted(p.name for p in raw.files) == sorted(FILES)
    for _ in range(2):  # events() must give a fresh iterator every call
        batches = list(raw.events())
        assert all(b.schema.names == ["user", "item", "timestamp", "action"] for b in batches)
        assert sum(b.num_rows for b in batches) == meta["counts"]["events"]
    table = pa.Table.from_batches(batches)
    assert pc.count_distinct(table.column("user")).as_py() == meta["counts"]["users"] == SMALL["users"]
    assert raw.item_features.column_names == ["item", "category", "price"]
    assert raw.item_features.num_rows == SMALL["items"]
    assert pc.count_distinct(raw.item_features.column("category")).as_py() == SMALL["categories"]
    assert raw.user_features.column_names == ["user", "age", "country"]
    assert raw.user_features.num_rows == SMALL["users"]
    # every event refers to a known item and user
    assert pc.all(pc.is_in(table.column("item"), value_set=raw.item_features.column("item"))).as_py()
    assert pc.all(pc.is_in(table.column("user"), value_set=raw.user_features.column("user"))).as_py()


def test_sequential_signal_is_strong(small_log: Path) -> None:
    stats = transition_stats(small_log)
    assert stats["top_successor_hit_rate"] > 4 * stats["shuffled_top_successor_hit_rate"]
    assert stats["top_successor_hit_rate"] > 10 * stats["popularity_hit_rate"]
    assert stats["conditional_entropy_bits"] < stats["shuffled_conditional_entropy_bits"] - 2
    assert stats["conditional_entropy_bits"] < stats["entropy_next_bits"] - 3


def test_signal_comes_from_order(small_log: Path, tmp_path: Path) -> None:
    """Shuffling each user's events removes the signal; turning the item chain off weakens it."""
    events = _events(small_log)
    rng = np.random.default_rng(0)
    user = pc.dictionary_encode(events.column("user").combine_chunks()).indices.to_numpy()
    shuffled = events.take(np.lexsort((rng.random(events.num_rows), user)))
    shuffled = shuffled.set_column(2, "timestamp", events.column("timestamp"))  # keep per-user time order
    assert transition_stats(shuffled)["lift_over_shuffled"] < 1.3
    generate(SynthConfig(**SMALL, seed=7, successor_prob=0.0), tmp_path / "nochain", progress=False)
    no_chain = transition_stats(tmp_path / "nochain")
    assert transition_stats(small_log)["lift_over_shuffled"] > 2 * no_chain["lift_over_shuffled"]


def test_transition_stats_accepts_table_file_and_folder(small_log: Path) -> None:
    from_folder = transition_stats(small_log)
    assert transition_stats(small_log / EVENTS_FILE) == from_folder
    assert transition_stats(_events(small_log)) == from_folder
    assert from_folder["pairs"] == _events(small_log).num_rows - SMALL["users"]


def test_same_seed_gives_identical_files_whatever_the_chunk_size(tmp_path: Path) -> None:
    config = {"users": 2 * BLOCK_USERS + 500, "items": 300, "categories": 10, "mean_length": 8.0}
    generate(SynthConfig(**config, seed=3), tmp_path / "a", chunk_users=BLOCK_USERS, progress=False)
    generate(SynthConfig(**config, seed=3), tmp_path / "b", chunk_users=BLOCK_USERS, progress=False)
    generate(SynthConfig(**config, seed=3), tmp_path / "c", progress=False)  # one chunk
    generate(SynthConfig(**config, seed=4), tmp_path / "d", progress=False)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert pq.ParquetFile(tmp_path / "a" / EVENTS_FILE).num_row_groups == 3
    assert _events(tmp_path / "a").equals(_events(tmp_path / "c"))
    assert not _events(tmp_path / "a").equals(_events(tmp_path / "d"))


def test_length_distribution(small_log: Path, tmp_path: Path) -> None:
    lengths = _user_lengths(_events(small_log))
    assert lengths.min() >= 3 and lengths.max() <= SynthConfig().max_length
    assert 20 <= lengths.mean() <= 32  # default mean 25, shifted a little by clipping
    assert np.median(lengths) < lengths.mean()  # most users short, mean pulled up by the tail
    long_tail = SynthConfig(users=4000, items=300, categories=10, max_length=3000, length_sigma=1.6)
    generate(long_tail, tmp_path / "long", progress=False)
    lengths = _user_lengths(_events(tmp_path / "long"))
    assert lengths.min() >= 3 and lengths.max() <= 3000
    assert lengths.max() >= 1000 and lengths.max() > 50 * np.median(lengths)
    clipped = SynthConfig(users=2000, items=300, categories=10, min_length=5, max_length=40)
    meta = generate(clipped, tmp_path / "clipped", progress=False)
    lengths = _user_lengths(_events(tmp_path / "clipped"))
    assert lengths.min() == 5 and lengths.max() == 40
    assert meta["counts"]["length"]["users_at_max_length"] == int((lengths == 40).sum()) > 0


def test_timestamps_increase_and_users_are_contiguous(small_log: Path) -> None:
    events = _events(small_log)
    user = pc.dictionary_encode(events.column("user").combine_chunks()).indices.to_numpy()
    ts = events.column("timestamp").to_numpy()
    same = user[1:] == user[:-1]
    assert np.unique(user).size == np.count_nonzero(~same) + 1  # one run of rows per user
    assert (np.diff(ts)[same] > 0).all()


def test_funnel_matches_probabilities(small_log: Path, tmp_path: Path) -> None:
    config = SynthConfig(**SMALL)
    action = _events(small_log).column("action").to_numpy(zero_copy_only=False)
    counts = {name: int((action == name).sum()) for name in ACTIONS}
    views, carts, purchases = action.size, counts["cart"] + counts["purchase"], counts["purchase"]
    assert views > carts > purchases > 0
    assert carts / views == pytest.approx(config.cart_prob, abs=0.01)
    assert purchases / carts == pytest.approx(config.purchase_prob, abs=0.03)
    meta = json.loads((small_log / META_FILE).read_text())
    assert meta["counts"]["actions"] == counts
    generate(SynthConfig(**SMALL, cart_prob=0.0), tmp_path / "views", progress=False)
    assert pc.unique(_events(tmp_path / "views").column("action")).to_pylist() == ["view"]


def test_interest_moves_to_neighbouring_categories(small_log: Path) -> None:
    events = _events(small_log)
    items = pq.read_table(small_log / ITEMS_FILE)
    category = pc.take(
        items.column("category"), pc.index_in(events.column("item"), value_set=items.column("item"))
    )
    cat = np.array([int(c[1:]) for c in pc.unique(category).to_pylist()])  # "c12" -> 12, one per category
    code = cat[pc.index_in(category, value_set=pc.unique(category)).to_numpy()]
    user = pc.dictionary_encode(events.column("user").combine_chunks()).indices.to_numpy()
    change = (user[1:] == user[:-1]) & (code[1:] != code[:-1])
    ring = np.abs(code[1:] - code[:-1])[change]
    neighbour_share = np.mean((ring == 1) | (ring == SMALL["categories"] - 1))
    assert change.mean() < 0.35  # sticky interest
    assert neighbour_share > 4 * 2 / (SMALL["categories"] - 1)  # far above a random move


def test_popularity_is_skewed(small_log: Path) -> None:
    counts = np.sort(pc.value_counts(_events(small_log).column("item")).field("counts").to_numpy())[::-1]
    top_decile = counts[: SMALL["items"] // 10].sum() / counts.sum()
    assert top_decile > 0.3  # uniform would give 0.1


def test_existing_output_is_kept_unless_overwrite(small_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "log"
    generate(SynthConfig(users=50, items=30, categories=3), out, progress=False)
    before = (out / EVENTS_FILE).read_bytes()
    with pytest.raises(DataError, match="--overwrite"):
        generate(SynthConfig(users=60, items=30, categories=3), out, progress=False)
    assert (out / EVENTS_FILE).read_bytes() == before
    generate(SynthConfig(users=60, items=30, categories=3), out, overwrite=True, progress=False)
    assert json.loads((out / META_FILE).read_text())["counts"]["users"] == 60


def test_failure_midway_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "log"
    generate(SynthConfig(users=50, items=30, categories=3), out, progress=False)
    before = {name: (out / name).read_bytes() for name in FILES}
    calls = []
    real_write = pq.ParquetWriter.write_table

    def disk_full_on_third_write(self: pq.ParquetWriter, table: pa.Table, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        real_write(self, table, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full_on_third_write)
    config = SynthConfig(users=3 * BLOCK_USERS, items=30, categories=3, mean_length=4.0)
    with pytest.raises(OSError, match="No space"):
        generate(config, out, overwrite=True, chunk_users=BLOCK_USERS, progress=False)
    assert len(calls) == 3
    assert {name: (out / name).read_bytes() for name in FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]  # no temporary folder left behind


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ({"min_length": 2}, "--min-length"),
        ({"items": 5, "categories": 10}, "--items"),
        ({"stay_prob": 1.5}, "--stay-prob"),
        ({"users": 0}, "--users"),
        ({"max_length": 4, "min_length": 5}, "--max-length"),
    ],
)
def test_bad_config_names_the_option(override: dict, option: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=option):
        generate(SynthConfig(**override), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    help_text = parser.format_help()
    for option in ("--users", "--items", "--categories", "--seed", "--mean-length", "--max-length", "--zipf"):
        assert option in help_text
    out = tmp_path / "log"
    args = parser.parse_args(
        ["--output", str(out), "--users", "400", "--items", "100", "--seed", "5", "--no-progress"]
    )
    assert synth.run(args) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["params"]["users"] == 400 and meta["seed"] == 5
    assert f"{meta['counts']['events']:,} events" in printed and "H(next | current)" in printed


def test_reader_rejects_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        open_reader("synthetic", tmp_path / "missing")
    with pytest.raises(DataError, match=EVENTS_FILE):
        open_reader("synthetic", tmp_path)
    pq.write_table(pa.table({"user": ["u1"], "item": ["i1"], "timestamp": [1]}), tmp_path / EVENTS_FILE)
    with pytest.raises(DataError, match="field 'action'"):
        open_reader("synthetic", tmp_path)
    bad = pa.table(
        {"user": ["u1", None], "item": ["i1", "i2"], "timestamp": [1, 2], "action": ["view", "view"]}
    )
    pq.write_table(bad, tmp_path / EVENTS_FILE)
    with pytest.raises(DataError, match="row 2, field 'user'"):
        list(open_reader("synthetic", tmp_path).events())
    bad = bad.set_column(0, "user", pa.array(["u1", "u1"])).set_column(
        3, "action", pa.array(["view", "like"])
    )
    pq.write_table(bad, tmp_path / EVENTS_FILE)
    with pytest.raises(DataError, match="row 2, field 'action'"):
        list(open_reader("synthetic", tmp_path).events())
    with pytest.raises(ConfigError, match="no reader options"):
        open_reader("synthetic", tmp_path, delimiter=",")
