"""`seqrec prepare` on small in-memory logs: filters, ordering, ids, splits, features, atomicity, partitions, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.cli import build_parser, main
from trainer.data import schema
from trainer.data.partitions import prefetch
from trainer.data.prepare import PrepareConfig, config_from_args, prepare
from trainer.data.readers.base import EVENT_SCHEMA, RawLog
from trainer.data.vocab import Vocabulary
from trainer.errors import ConfigError, DataError


def make_log(events: list[tuple], *, chunk: int = 3, columns: tuple[str, ...] = ("user", "item", "timestamp"),
             item_features: pa.Table | None = None, user_features: pa.Table | None = None,
             fail_after: int | None = None, files: list[Path] | None = None) -> RawLog:
    """A RawLog of ``events`` (tuples in ``columns`` order) streamed in chunks of ``chunk`` rows."""
    fields = [EVENT_SCHEMA.field(name) for name in columns]
    table = pa.table({f.name: pa.array([e[i] for e in events], f.type) for i, f in enumerate(fields)})

    def batches():
        for n, batch in enumerate(table.to_batches(max_chunksize=chunk)):
            if fail_after is not None and n == fail_after:
                raise DataError("bad value", file="log.csv", row=n * chunk + 1, field="timestamp")
            yield batch

    return RawLog(format="test", files=files or [], events=batches, item_features=item_features,
                  user_features=user_features)


def run_prepare(tmp_path: Path, raw: RawLog, name: str = "out", **options) -> tuple[schema.Manifest, dict]:
    config = PrepareConfig(format="test", input=tmp_path, output=tmp_path / name, **options)
    manifest = prepare(config, raw)
    tables = {f: pq.read_table(tmp_path / name / f"{f}.parquet") for f in ("items", "users", "sequences")}
    return manifest, tables


def sequences_by_raw_id(tables: dict) -> dict[str, list[str]]:
    """Each user's item raw ids in sequence order."""
    item_raw = ["<pad>"] + tables["items"]["raw_id"].to_pylist()
    user_raw = tables["users"]["raw_id"].to_pylist()
    seq = tables["sequences"]
    return {user_raw[u]: [item_raw[i] for i in items]
            for u, items in zip(seq["user_idx"].to_pylist(), seq["items"].to_pylist())}


def test_tie_order_id_remap_and_loo_positions(tmp_path: Path) -> None:
    events = [  # (user, item, timestamp) in input order; bob's ties at t=5 must keep input order z, x, y
        ("bob", "z", 5), ("ann", "x", 3), ("bob", "x", 5), ("ann", "y", 1), ("bob", "y", 5), ("ann", "w", 2),
        ("bob", "w", 1), ("ann", "v", 9),
    ]
    manifest, tables = run_prepare(tmp_path, make_log(events))
    assert tables["users"]["raw_id"].to_pylist() == ["bob", "ann"]  # first appearance
    assert tables["users"]["user_idx"].to_pylist() == [0, 1]
    assert tables["items"]["raw_id"].to_pylist() == ["z", "x", "y", "w", "v"]
    assert tables["items"]["item_idx"].to_pylist() == [1, 2, 3, 4, 5]
    assert sequences_by_raw_id(tables) == {"bob": ["w", "z", "x", "y"], "ann": ["y", "w", "x", "v"]}
    seq = tables["sequences"]
    assert seq["timestamps"].to_pylist() == [[1, 5, 5, 5], [1, 2, 3, 9]]
    assert seq["train_end"].to_pylist() == [2, 2] and seq["valid_end"].to_pylist() == [3, 3]
    assert seq.schema.equals(schema.SEQUENCE_SCHEMA)
    assert manifest.counts["users"] == 2 and manifest.counts["items"] == 5 and manifest.counts["interactions"] == 8
    assert (manifest.counts["train_interactions"], manifest.counts["valid_targets"],
            manifest.counts["test_targets"]) == (4, 2, 2)
    on_disk = schema.read_manifest(tmp_path / "out")
    assert on_disk.counts == manifest.counts and on_disk.split == {"policy": "leave_one_out"}


def test_popularity_counts_only_the_train_part(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    events = [(f"u{rng.integers(20)}", f"i{rng.integers(15)}", int(rng.integers(50))) for _ in range(300)]
    _, tables = run_prepare(tmp_path, make_log(events, chunk=64), short_users="drop")
    expected: dict[str, int] = {}
    seq = tables["sequences"]
    for items, train_end in zip(sequences_by_raw_id(tables).values(), seq["train_end"].to_pylist()):
        for item in items[:train_end]:
            expected[item] = expected.get(item, 0) + 1
    got = dict(zip(tables["items"]["raw_id"].to_pylist(), tables["items"]["popularity"].to_pylist()))
    assert got == {item: expected.get(item, 0) for item in got}
    assert sum(got.values()) == sum(seq["train_end"].to_pylist())


def test_time_split_with_cuts_and_fractions(tmp_path: Path) -> None:
    events = [("a", "x", 0), ("a", "y", 10), ("a", "z", 20), ("b", "x", 5), ("b", "z", 15), ("c", "y", 5),
              ("c", "x", 100)]
    manifest, tables = run_prepare(tmp_path, make_log(events), split="time", valid_cut=10, test_cut=20)
    seq = tables["sequences"]
    assert seq["train_end"].to_pylist() == [1, 1, 1]
    assert seq["valid_end"].to_pylist() == [2, 2, 1]
    assert manifest.split == {"policy": "time", "valid_cut": 10, "test_cut": 20}
    assert (manifest.counts["valid_targets"], manifest.counts["test_targets"]) == (2, 2)
    # fractions of the range [0, 100]: test_cut = 100 - 20 = 80, valid_cut = 80 - 70 = 10
    manifest, tables = run_prepare(tmp_path, make_log(events), "frac", split="time", valid_frac=0.7, test_frac=0.2)
    assert (manifest.split["valid_cut"], manifest.split["test_cut"]) == (10, 80)
    assert tables["sequences"]["valid_end"].to_pylist() == [3, 2, 1]


def test_min_rating_filter(tmp_path: Path) -> None:
    events = [("a", "x", 1, 5.0), ("a", "y", 2, 2.0), ("a", "z", 3, 4.0), ("a", "w", 4, None), ("a", "v", 5, 4.5)]
    manifest, tables = run_prepare(tmp_path, make_log(events, columns=("user", "item", "timestamp", "rating")),
                                   min_rating=4.0)
    assert sequences_by_raw_id(tables) == {"a": ["x", "z", "v"]}
    assert manifest.counts["removed_min_rating"] == 2
    assert manifest.filters["min_rating"] == {"threshold": 4.0, "removed_events": 2}
    with pytest.raises(ConfigError, match="min_rating"):
        run_prepare(tmp_path, make_log(events[:3]), "no-ratings", min_rating=4.0)


# k = 3. Single pass drops item q (1 event), then u1 (2 left); item w keeps 2 events (< 3) and so do u2, u3's
# shares. The fixed point also drops w, then u2 and u3, leaving the 3 x 3 core.
KCORE_EVENTS = [(f"c{n}", item, t) for n in range(3) for t, item in enumerate("abc")] + [
    ("u1", "a", 10), ("u1", "q", 11), ("u1", "w", 12),
    ("u2", "a", 10), ("u2", "b", 11), ("u2", "w", 12),
    ("u3", "b", 10), ("u3", "c", 11), ("u3", "w", 12),
]


def test_kcore_single_pass_differs_from_fixed_point(tmp_path: Path) -> None:
    manifest, tables = run_prepare(tmp_path, make_log(KCORE_EVENTS), "single", kcore=3, kcore_iterate=False)
    assert sorted(sequences_by_raw_id(tables)) == ["c0", "c1", "c2", "u2", "u3"]
    assert sorted(tables["items"]["raw_id"].to_pylist()) == ["a", "b", "c", "w"]
    assert manifest.filters["kcore"]["iterations"] == 1
    assert (manifest.counts["removed_kcore_users"], manifest.counts["removed_kcore_items"],
            manifest.counts["removed_kcore_events"]) == (1, 1, 3)

    manifest, tables = run_prepare(tmp_path, make_log(KCORE_EVENTS), "fixed", kcore=3)
    sequences = sequences_by_raw_id(tables)
    assert sequences == {f"c{n}": ["a", "b", "c"] for n in range(3)}
    assert manifest.filters["kcore"]["iterations"] == 3
    assert (manifest.counts["removed_kcore_users"], manifest.counts["removed_kcore_items"],
            manifest.counts["removed_kcore_events"]) == (3, 2, 9)


@pytest.mark.parametrize(("policy", "expected", "removed"), [
    ("none", ["x", "y", "x", "x", "x", "z"], 0),
    ("exact", ["x", "y", "x", "x", "z"], 1),
    ("first", ["x", "y", "z"], 3),
])
def test_dedupe_policies(tmp_path: Path, policy: str, expected: list[str], removed: int) -> None:
    events = [("a", "x", 1), ("a", "y", 1), ("a", "x", 1), ("a", "x", 2), ("a", "x", 3), ("a", "z", 4)]
    manifest, tables = run_prepare(tmp_path, make_log(events), dedupe=policy)
    assert sequences_by_raw_id(tables) == {"a": expected}
    assert manifest.counts["duplicates_found"] == 1  # reported whatever the policy
    assert manifest.counts["removed_dedupe"] == removed == manifest.filters["dedupe"]["removed_events"]


def test_side_features_and_actions(tmp_path: Path) -> None:
    events = [("u1", "a", 1, "view"), ("u1", "b", 2, "buy"), ("u1", "c", 3, "view"),
              ("u2", "c", 1, "cart"), ("u2", "d", 2, "view"), ("u2", "a", 3, "view")]
    items = pa.table({
        "item": ["b", "a", "c", "zzz"],
        "brand": ["nike", "acme", None, "other"],
        "tags": pa.array([["x", "y"], ["y"], [], ["q"]], pa.list_(pa.string())),
        "price": pa.array([10.0, 1.0, 100.0, 5.0]),
    })
    users = pa.table({"user": ["u2"], "age": pa.array([30], pa.int64())})
    manifest, tables = run_prepare(
        tmp_path, make_log(events, columns=("user", "item", "timestamp", "action"), item_features=items,
                           user_features=users), buckets=2)
    item_rows = {row["raw_id"]: row for row in tables["items"].to_pylist()}
    # brand: sorted values of matched items (acme, nike) -> 1, 2; missing/absent -> 0
    assert [item_rows[i]["brand"] for i in "abcd"] == [1, 2, 0, 0]
    assert [item_rows[i]["tags"] for i in "abcd"] == [[2], [1, 2], [0], [0]]
    assert tables["items"].schema.field("brand").type == pa.int32()
    assert tables["items"].schema.field("tags").type == pa.list_(pa.int32())
    # price over matched items {1, 10, 100}, 2 buckets: one edge at the median 10 -> 1 <= 10 < 100
    assert [item_rows[i]["price"] for i in "abcd"] == [1, 1, 2, 0]
    assert manifest.features["items"]["brand"] == {"kind": "categorical", "cardinality": 3}
    assert manifest.features["items"]["tags"] == {"kind": "multi", "cardinality": 3}
    assert manifest.features["items"]["price"]["kind"] == "bucket"
    assert manifest.features["items"]["price"]["edges"] == [10.0]
    assert manifest.features["items"]["price"]["cardinality"] == 3
    assert dict(zip(tables["users"]["raw_id"].to_pylist(), tables["users"]["age"].to_pylist())) == {"u1": 0, "u2": 1}
    assert manifest.actions == ["view", "buy", "cart"]
    seq = tables["sequences"]
    assert seq.schema.field("actions").type == pa.list_(pa.int8())
    assert seq["actions"].to_pylist() == [[0, 1, 0], [2, 0, 0]]


def test_duplicate_feature_key_is_an_error(tmp_path: Path) -> None:
    items = pa.table({"item": ["a", "a"], "brand": ["x", "y"]})
    with pytest.raises(DataError, match="'a' appears more than once"):
        run_prepare(tmp_path, make_log([("u", i, t) for t, i in enumerate("abc")], item_features=items))
    assert not (tmp_path / "out").exists()


def test_reader_error_leaves_nothing(tmp_path: Path) -> None:
    parent = tmp_path / "datasets"
    parent.mkdir()
    raw = make_log([("u", f"i{t}", t) for t in range(20)], chunk=4, fail_after=2)
    config = PrepareConfig(format="test", input=tmp_path, output=parent / "out")
    with pytest.raises(DataError, match=r"log.csv, row 9, field 'timestamp': bad value"):
        prepare(config, raw)
    assert list(parent.iterdir()) == []  # neither the output nor a temporary folder
    # the same with spilled partitions on disk at the time of failure
    config = PrepareConfig(format="test", input=tmp_path, output=parent / "out", spill_threshold=2, partitions=3)
    with pytest.raises(DataError):
        prepare(config, make_log([("u", f"i{t}", t) for t in range(20)], chunk=4, fail_after=3))
    assert list(parent.iterdir()) == []


def test_existing_output_is_an_error_unless_overwrite(tmp_path: Path) -> None:
    events = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3)]
    run_prepare(tmp_path, make_log(events))
    with pytest.raises(DataError, match="already exists"):
        run_prepare(tmp_path, make_log(events))
    manifest, tables = run_prepare(tmp_path, make_log(events + [("b", "x", 1), ("b", "y", 2), ("b", "x", 3)]),
                                   overwrite=True)
    assert manifest.counts["users"] == 2 and tables["sequences"].num_rows == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_short_users_error_names_the_first_one_and_drop_removes_them(tmp_path: Path) -> None:
    events = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("shorty", "x", 1), ("shorty", "y", 2), ("solo", "x", 5)]
    with pytest.raises(DataError, match=r"user 'shorty': has 2 event\(s\).*at least 3.*--short-users drop"):
        run_prepare(tmp_path, make_log(events))
    assert not (tmp_path / "out").exists()
    manifest, tables = run_prepare(tmp_path, make_log(events), short_users="drop")
    assert sequences_by_raw_id(tables) == {"a": ["x", "y", "z"]}
    assert (manifest.counts["removed_short_users"], manifest.counts["removed_short_user_events"]) == (2, 3)
    # time split: a user needs one event before the validation cut
    with pytest.raises(DataError, match=r"user 'solo'.*none before the validation cut 4"):
        run_prepare(tmp_path, make_log(events), "time", split="time", valid_cut=4, test_cut=5)


def random_log(seed: int) -> RawLog:
    """Ties, exact duplicates, repeated pairs, actions and features: everything the partitions must preserve."""
    rng = np.random.default_rng(seed)
    n = 4000
    users = rng.zipf(1.5, n) % 300
    events = [(f"user{u}", f"item{i}", int(t), a) for u, i, t, a in zip(
        users, rng.zipf(1.3, n) % 120, rng.integers(0, 40, n), rng.choice(["view", "buy"], n))]
    events += events[:200]  # exact duplicates
    item_ids = sorted({e[1] for e in events})
    items = pa.table({"item": item_ids, "price": rng.random(len(item_ids)),
                      "tags": [[f"t{j}" for j in rng.integers(0, 9, rng.integers(0, 4))] for _ in item_ids]})
    return make_log(events, chunk=257, columns=("user", "item", "timestamp", "action"), item_features=items)


@pytest.mark.parametrize("options", [
    {"dedupe": "exact", "kcore": 3, "short_users": "drop"},
    {"dedupe": "first", "kcore": 2, "kcore_iterate": False, "short_users": "drop", "split": "time",
     "valid_frac": 0.2, "test_frac": 0.1},
])
def test_partitioned_path_gives_identical_output(tmp_path: Path, options: dict) -> None:
    manifest, tables = run_prepare(tmp_path, random_log(1), "memory", **options)
    spilled, spilled_tables = run_prepare(tmp_path, random_log(1), "disk", spill_threshold=100, partitions=5,
                                          **options)
    for name, table in tables.items():
        assert table.equals(spilled_tables[name]), name
    assert {**manifest.__dict__, "created": ""} == {**spilled.__dict__, "created": ""}
    assert manifest.counts["removed_kcore_events"] > 0 and manifest.counts["removed_dedupe"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "memory"]  # no partition files left


def test_output_matches_a_plain_python_reference(tmp_path: Path) -> None:
    raw = random_log(2)
    events = [row for batch in raw.events() for row in batch.to_pylist()]
    _, tables = run_prepare(tmp_path, raw, dedupe="exact", short_users="drop", spill_threshold=500, partitions=4)
    expected: dict[str, list] = {}
    seen = set()
    for _, e in sorted(enumerate(events), key=lambda ne: (ne[1]["user"], ne[1]["timestamp"], ne[0])):
        if (e["user"], e["item"], e["timestamp"]) not in seen:
            seen.add((e["user"], e["item"], e["timestamp"]))
            expected.setdefault(e["user"], []).append(e["item"])
    expected = {u: items for u, items in expected.items() if len(items) >= 3}
    assert sequences_by_raw_id(tables) == expected
    first_seen = list(dict.fromkeys(e["user"] for e in events if e["user"] in expected))
    assert tables["users"]["raw_id"].to_pylist() == first_seen
    seq = tables["sequences"]
    assert pq.ParquetFile(tmp_path / "out" / "sequences.parquet").metadata.row_group(0).num_rows == min(
        seq.num_rows, schema.row_group_users(seq.num_rows))
    lengths = [len(items) for items in seq["items"].to_pylist()]
    assert seq["train_end"].to_pylist() == [n - 2 for n in lengths]


def test_empty_after_filters_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no events left after filters"):
        run_prepare(tmp_path, make_log([("a", "x", 1), ("b", "y", 2)]), kcore=2)


@pytest.mark.parametrize(("options", "message"), [
    ({"split": "time"}, "either valid_cut and test_cut"),
    ({"split": "time", "valid_cut": 5}, "both valid_cut and test_cut"),
    ({"split": "time", "valid_cut": 9, "test_cut": 5}, "must be <= test_cut"),
    ({"valid_frac": 0.1, "test_frac": 0.1}, "only to split='time'"),
    ({"split": "time", "valid_frac": 0.5, "test_frac": 0.5}, "valid_frac \\+ test_frac < 1"),
    ({"dedupe": "all"}, "dedupe='all'"),
    ({"kcore": -1}, "kcore must be >= 0"),
])
def test_config_validation(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PrepareConfig(format="test", input=tmp_path, output=tmp_path / "o", **options).validate()


def test_cli_options_reach_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "prepare", str(tmp_path / "log.csv"), str(tmp_path / "out"), "--format", "events", "--option", "meta=m.csv",
        "--option", "delimiter=;", "--columns", "user=uid,item=iid", "--kcore", "5", "--kcore-single-pass",
        "--dedupe", "first", "--split", "time", "--valid-frac", "0.1", "--test-frac", "0.2", "--min-rating", "3.5",
        "--short-users", "drop", "--buckets", "4", "--spill-threshold", "10", "--partitions", "3",
    ])
    config = config_from_args(args)
    assert config.reader_options == {"meta": "m.csv", "delimiter": ";", "columns": {"user": "uid", "item": "iid"}}
    assert (config.kcore, config.kcore_iterate, config.dedupe, config.split) == (5, False, "first", "time")
    assert (config.valid_frac, config.test_frac, config.min_rating, config.buckets) == (0.1, 0.2, 3.5, 4)
    assert (config.short_users, config.spill_threshold, config.partitions) == ("drop", 10, 3)


def test_help_explains_every_option() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["prepare"]
    for action in sub._actions:
        if action.dest not in ("help", "verbose"):
            assert action.help and len(action.help) > 15, action.dest
    text = sub.format_help()
    assert all(flag in text for flag in ("--kcore-single-pass", "--short-users", "--valid-frac", "--columns"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--split", "time"], "error: split='time' needs either"),
    (["--option", "novalue"], "error: --option expects KEY=VALUE"),
    ([], "already exists"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "in").mkdir()
    code = main(["prepare", str(tmp_path / "in"), str(tmp_path / "out"), "--format", "events", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_manifest_is_json_with_source_checksums(tmp_path: Path) -> None:
    source = tmp_path / "log.txt"
    source.write_text("raw bytes\n")
    run_prepare(tmp_path, make_log([("a", "x", 1), ("a", "y", 2), ("a", "z", 3)], files=[source]))
    raw = json.loads((tmp_path / "out" / "manifest.json").read_text())
    digest = hashlib.sha256(b"raw bytes\n").hexdigest()
    assert raw["source"]["files"] == {"log.txt": {"sha256": digest, "bytes": 10}}
    assert raw["source"]["format"] == "test"
    assert raw["created"].endswith("+00:00") and raw["format_version"] == schema.FORMAT_VERSION


def test_fingerprint_vocabulary_matches_exact_lookup() -> None:
    rng = np.random.default_rng(3)
    chunks = [pa.array(np.char.add("u", rng.integers(0, 5000, 4000).astype(str))) for _ in range(3)]
    chunks += [pa.array(["", "é", "ab", "", "ba", "u5", "é", "ü" * 300]), pa.array(["x", "y", "x"]).slice(1),
               pa.array(["x", "y", ""], pa.large_string()), pa.array([7, 8, 7], pa.int64())]
    hashed, exact = Vocabulary(), Vocabulary(exact=True)
    for chunk in chunks:
        assert np.array_equal(hashed.encode(chunk), exact.encode(chunk))
    assert hashed.raw_ids().equals(exact.raw_ids()) and len(hashed) == len(set(hashed.raw_ids().to_pylist()))
    assert hashed.raw_ids().to_pylist()[:2] == chunks[0].to_pylist()[:2]  # codes follow first appearance


def test_reader_chunks_are_prefetched_in_order_and_errors_propagate() -> None:
    batches = [pa.record_batch({"x": [n]}) for n in range(5)]
    assert [b["x"][0].as_py() for b in prefetch(iter(batches), depth=1)] == list(range(5))

    def failing():
        yield batches[0]
        raise DataError("broken", file="f.csv", row=2)

    got = []
    with pytest.raises(DataError, match="f.csv, row 2: broken"):
        got.extend(prefetch(failing()))
    assert len(got) == 1
    early = prefetch(iter(batches), depth=1)
    assert next(early) is batches[0]
    early.close()  # stopping early stops the reader thread


def test_missing_value_names_row_and_field(tmp_path: Path) -> None:
    events = [("a", "x", 1, "view")] * 4 + [("a", "y", 2, None)]
    raw = make_log(events, columns=("user", "item", "timestamp", "action"), files=[tmp_path / "log.csv"])
    with pytest.raises(DataError, match=r"log.csv, row 5, field 'action': missing value"):
        run_prepare(tmp_path, raw)
    assert not (tmp_path / "out").exists()
