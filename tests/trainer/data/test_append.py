"""`seqrec prepare --append-to`: old indices kept, new ones appended, histories merged, splits and popularity
recomputed, the parent untouched, lineage recorded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.trainer.data.test_prepare import make_log, run_prepare, sequences_by_raw_id
from trainer.cli import main
from trainer.data import schema
from trainer.data.append import AppendConfig, append
from trainer.errors import DataError


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a folder (to show it did not change)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def run_append(tmp_path: Path, parent: Path, events: list[tuple], name: str = "v2", **options) -> dict:
    config = AppendConfig(parent=parent, format="test", input=tmp_path, output=tmp_path / name, **options)
    append(config, make_log(events, columns=("user", "item", "timestamp")))
    return {f: pq.read_table(tmp_path / name / f"{f}.parquet") for f in ("items", "users", "sequences")}


OLD = [("ann", "a", 1), ("ann", "b", 2), ("ann", "c", 3), ("bob", "b", 1), ("bob", "c", 4), ("bob", "d", 6)]
NEW = [("cat", "e", 10), ("ann", "d", 3), ("cat", "a", 11), ("bob", "e", 7), ("cat", "b", 12), ("ann", "e", 9)]


def test_append_keeps_indices_merges_in_time_order_and_recomputes(tmp_path: Path) -> None:
    _, old = run_prepare(tmp_path, make_log(OLD), name="v1")
    before = folder_digest(tmp_path / "v1")
    new = run_append(tmp_path, tmp_path / "v1", NEW)
    assert new["items"]["raw_id"].to_pylist() == ["a", "b", "c", "d", "e"]  # e: the one new item, at the end
    assert new["items"]["item_idx"].to_pylist() == [1, 2, 3, 4, 5]
    assert new["items"]["raw_id"].to_pylist()[: old["items"].num_rows] == old["items"]["raw_id"].to_pylist()
    assert new["users"]["raw_id"].to_pylist() == ["ann", "bob", "cat"]
    assert new["users"]["user_idx"].to_pylist() == [0, 1, 2]
    # ann's new d at t=3 ties her old c at t=3: the old event stays first
    assert sequences_by_raw_id(new) == {"ann": ["a", "b", "c", "d", "e"], "bob": ["b", "c", "d", "e"],
                                        "cat": ["e", "a", "b"]}
    seq = new["sequences"]
    assert seq["timestamps"].to_pylist() == [[1, 2, 3, 3, 9], [1, 4, 6, 7], [10, 11, 12]]
    assert seq["train_end"].to_pylist() == [3, 2, 1] and seq["valid_end"].to_pylist() == [4, 3, 2]
    # train popularity over the merged train parts: ann a b c, bob b c, cat e
    assert new["items"]["popularity"].to_pylist() == [1, 2, 2, 0, 1]
    assert folder_digest(tmp_path / "v1") == before  # the old version is untouched and still readable
    assert schema.read_manifest(tmp_path / "v1").counts["interactions"] == 6
    manifest = schema.read_manifest(tmp_path / "v2")
    assert manifest.counts["interactions"] == 12 and manifest.counts["items"] == 5
    lineage = manifest.lineage
    assert lineage["version"] == 2 and lineage["items_kept"] == 4
    assert lineage["parent"]["manifest_sha256"] == hashlib.sha256(
        (tmp_path / "v1" / schema.MANIFEST).read_bytes()).hexdigest()
    assert lineage["history"][0]["new_items"] == 1 and lineage["history"][0]["new_users"] == 1


def test_append_twice_counts_versions_and_keeps_every_earlier_index(tmp_path: Path) -> None:
    run_prepare(tmp_path, make_log(OLD), name="v1")
    run_append(tmp_path, tmp_path / "v1", NEW, name="v2")
    third = run_append(tmp_path, tmp_path / "v2", [("dan", "f", 20), ("dan", "a", 21), ("dan", "g", 22)], name="v3")
    assert third["items"]["raw_id"].to_pylist() == ["a", "b", "c", "d", "e", "f", "g"]
    lineage = schema.read_manifest(tmp_path / "v3").lineage
    assert lineage["version"] == 3 and [h["operation"] for h in lineage["history"]] == ["append", "append"]


def test_append_applies_the_parents_dedupe_over_the_merged_history(tmp_path: Path) -> None:
    run_prepare(tmp_path, make_log(OLD), name="v1", dedupe="exact")
    new = run_append(tmp_path, tmp_path / "v1", [("ann", "c", 3), ("ann", "f", 5)])  # (ann, c, 3) is a repeat
    assert sequences_by_raw_id(new)["ann"] == ["a", "b", "c", "f"]
    assert schema.read_manifest(tmp_path / "v2").lineage["history"][0]["removed_dedupe"] == 1


def test_append_recomputes_a_fractional_time_split(tmp_path: Path) -> None:
    run_prepare(tmp_path, make_log(OLD), name="v1", split="time", valid_frac=0.2, test_frac=0.2)
    run_append(tmp_path, tmp_path / "v1", [("ann", "e", 11), ("bob", "e", 9)])
    split = schema.read_manifest(tmp_path / "v2").split
    # merged range 1..11: test_cut = 11 - 2 = 9, valid_cut = 9 - 2 = 7
    assert (split["valid_cut"], split["test_cut"], split["valid_frac"]) == (7, 9, 0.2)
    seq = pq.read_table(tmp_path / "v2" / "sequences.parquet")
    assert seq["train_end"].to_pylist() == [3, 3] and seq["valid_end"].to_pylist() == [3, 3]


def test_append_short_new_user_is_an_error_naming_them(tmp_path: Path) -> None:
    run_prepare(tmp_path, make_log(OLD), name="v1")
    with pytest.raises(DataError, match="user 'eve'.*leave-one-out needs at least 3"):
        run_append(tmp_path, tmp_path / "v1", [("eve", "a", 5)])
    assert not (tmp_path / "v2").exists()


def test_cli_appends_a_synthetic_log_with_actions(tmp_path: Path, capsys) -> None:
    from trainer.data.synth import SynthConfig, generate

    for name, seed, users in (("day1", 1, 200), ("day2", 2, 300)):
        generate(SynthConfig(users=users, items=100, categories=5, seed=seed, mean_length=8), tmp_path / name,
                 progress=False)
    assert main(["prepare", "--format", "synthetic", str(tmp_path / "day1"), str(tmp_path / "v1")]) == 0
    assert main(["prepare", "--format", "synthetic", "--append-to", str(tmp_path / "v1"), str(tmp_path / "day2"),
                 str(tmp_path / "v2")]) == 0
    old = pq.read_table(tmp_path / "v1" / "items.parquet")
    new = pq.read_table(tmp_path / "v2" / "items.parquet")
    assert new["raw_id"].to_pylist()[: old.num_rows] == old["raw_id"].to_pylist()
    assert new.schema.equals(old.schema)
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    # another seed draws other categories for the same item ids: the parent's codes cannot be reproduced
    assert manifest["lineage"]["history"][0]["features"]["items"]["category"].startswith("unknown")
    assert manifest["actions"][: 3] == json.loads((tmp_path / "v1" / "manifest.json").read_text())["actions"]
    seq = pq.read_table(tmp_path / "v2" / "sequences.parquet")
    assert "actions" in seq.column_names and seq.num_rows == 300
    ts = seq["timestamps"].to_pylist()
    assert all(np.all(np.diff(t) >= 0) for t in ts)
    code = main(["prepare", "--format", "synthetic", "--append-to", str(tmp_path / "v1"), str(tmp_path / "day2"),
                 str(tmp_path / "v3"), "--kcore", "5"])
    assert code == 2 and "--kcore is not re-applied" in capsys.readouterr().err
    assert not (tmp_path / "v3").exists()


def test_new_items_and_users_get_the_parents_feature_codes(shared_data: Path, tmp_path: Path) -> None:
    """MovieLens-100K cut in time: the later log's new movies and users are coded like a full prepare codes them."""
    import pyarrow as pa

    from trainer.data.prepare import PrepareConfig, prepare
    from trainer.data.readers import open_reader
    from trainer.data.readers.base import RawLog

    raw = open_reader("movielens", shared_data / "movielens-100k")
    events = pa.Table.from_batches(list(raw.events()))
    cut = int(np.quantile(events["timestamp"].to_numpy(), 0.7))
    early = pa.array(events["timestamp"].to_numpy() < cut)

    def part(mask: pa.Array | None) -> RawLog:
        table = events if mask is None else events.filter(mask)
        return RawLog(raw.format, raw.files, lambda: iter(table.to_batches()), raw.item_features, raw.user_features)

    source = shared_data / "movielens-100k"
    prepare(PrepareConfig(format="movielens", input=source, output=tmp_path / "v1", short_users="drop"), part(early))
    append(AppendConfig(parent=tmp_path / "v1", format="movielens", input=source, output=tmp_path / "v2"),
           part(pa.compute.invert(early)))
    prepare(PrepareConfig(format="movielens", input=source, output=tmp_path / "full", short_users="drop"), part(None))
    v1 = pq.read_table(tmp_path / "v1" / "items.parquet")
    v2, full = (pq.read_table(tmp_path / name / "items.parquet") for name in ("v2", "full"))
    new = v2.slice(v1.num_rows)
    assert new.num_rows > 20
    by_raw = dict(zip(full["raw_id"].to_pylist(), full["genres"].to_pylist()))
    assert new["genres"].to_pylist() == [by_raw[r] for r in new["raw_id"].to_pylist()]  # same 19-genre vocabulary
    assert all(g != [0] for g in new["genres"].to_pylist())
    status = schema.read_manifest(tmp_path / "v2").lineage["history"][0]["features"]
    assert status["items"]["genres"].startswith("coded")
    assert status["users"]["gender"].startswith("coded") and status["users"]["occupation"].startswith("coded")
    users1, users2 = (pq.read_table(tmp_path / name / "users.parquet") for name in ("v1", "v2"))
    new_users = users2.slice(users1.num_rows)
    assert new_users.num_rows > 10 and all(code > 0 for code in new_users["age"].to_pylist())
