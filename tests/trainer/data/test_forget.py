"""`seqrec forget`: the users' raw ids and events appear nowhere in the new version; the old one is unchanged."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.trainer.data.test_append import folder_digest
from tests.trainer.data.test_prepare import make_log, run_prepare, sequences_by_raw_id
from trainer.cli import main
from trainer.data import schema
from trainer.data.forget import forget
from trainer.data.loader import LoaderConfig, build_loader
from trainer.errors import DataError

SECRET = ["alice.secret@example.com", "bob-7f3a9c"]
EVENTS = [
    ("alice.secret@example.com", "i1", 1), ("carol", "i1", 2), ("alice.secret@example.com", "i2", 3),
    ("carol", "i3", 4), ("bob-7f3a9c", "i4", 5), ("dave", "i2", 6), ("alice.secret@example.com", "i5", 7),
    ("carol", "i2", 8), ("dave", "i3", 9), ("bob-7f3a9c", "i1", 10), ("dave", "i1", 11), ("bob-7f3a9c", "i2", 12),
    ("erin", "i3", 13), ("erin", "i1", 14), ("erin", "i4", 15),
]


def every_cell_as_text(folder: Path) -> list[str]:
    """Every value of every column of every Parquet file (lists flattened), as text, plus the manifest."""
    cells = [(folder / schema.MANIFEST).read_text()]
    for path in folder.glob("*.parquet"):
        for column in pq.read_table(path).columns:
            values = column.combine_chunks()
            while pa.types.is_list(values.type):
                values = pc.list_flatten(values)
            cells.extend(str(v) for v in values.to_pylist())
    return cells


def test_forget_removes_every_trace_and_leaves_the_old_version_unchanged(tmp_path: Path) -> None:
    _, old = run_prepare(tmp_path, make_log(EVENTS), name="v1")
    before = folder_digest(tmp_path / "v1")
    manifest = forget(tmp_path / "v1", SECRET, tmp_path / "v2")
    new_folder = tmp_path / "v2"
    for raw_id in SECRET:
        assert not any(raw_id in cell for cell in every_cell_as_text(new_folder))
        assert all(raw_id.encode() not in p.read_bytes() for p in new_folder.iterdir())
        assert any(raw_id in cell for cell in every_cell_as_text(tmp_path / "v1"))  # still in the old version
    assert folder_digest(tmp_path / "v1") == before
    tables = {f: pq.read_table(new_folder / f"{f}.parquet") for f in ("items", "users", "sequences")}
    before_seqs = sequences_by_raw_id(old)
    assert sequences_by_raw_id(tables) == {u: s for u, s in before_seqs.items() if u not in SECRET}
    assert tables["users"]["user_idx"].to_pylist() == [0, 1, 2]
    assert tables["sequences"]["user_idx"].to_pylist() == [0, 1, 2]
    assert tables["items"]["raw_id"].to_pylist() == old["items"]["raw_id"].to_pylist()  # item indices kept
    # popularity without the forgotten users (train part = first item): carol i1, dave i2, erin i3
    popularity = dict(zip(tables["items"]["raw_id"].to_pylist(), tables["items"]["popularity"].to_pylist()))
    assert popularity == {"i1": 1, "i2": 1, "i3": 1, "i5": 0, "i4": 0}
    assert manifest.counts["users"] == 3 and manifest.counts["interactions"] == 9
    assert manifest.lineage["history"] == [{"operation": "forget", "users_removed": 2, "events_removed": 6,
                                            "items_kept": 5}]


def test_forget_keeps_the_time_cuts_and_the_loader_reads_the_new_version(tmp_path: Path) -> None:
    run_prepare(tmp_path, make_log(EVENTS), name="v1", split="time", valid_cut=9, test_cut=12, short_users="drop")
    forget(tmp_path / "v1", ["carol"], tmp_path / "v2")
    assert schema.read_manifest(tmp_path / "v2").split == schema.read_manifest(tmp_path / "v1").split
    loader = build_loader(tmp_path / "v2", LoaderConfig(batch_size=4, max_len=5, kind="causal", split="train"), 0, 1)
    seen = {int(u) for batch in loader for u in batch.user_idx}
    users = pq.read_table(tmp_path / "v2" / "users.parquet")["raw_id"].to_pylist()
    assert users == ["alice.secret@example.com", "bob-7f3a9c", "dave"]  # erin: dropped by v1's short-user policy
    assert seen == {0}  # only alice has two train events before the validation cut (t < 9)


def test_unknown_user_is_an_error_unless_missing_ok(tmp_path: Path, capsys) -> None:
    run_prepare(tmp_path, make_log(EVENTS), name="v1")
    with pytest.raises(DataError, match="user 'nobody': no such user"):
        forget(tmp_path / "v1", ["nobody"], tmp_path / "v2")
    assert not (tmp_path / "v2").exists()
    assert main(["forget", str(tmp_path / "v1"), "nobody", "carol", "--missing-ok"]) == 0
    assert (tmp_path / "v1-v2").is_dir() and schema.read_manifest(tmp_path / "v1-v2").counts["users"] == 4
    assert main(["forget", str(tmp_path / "v1-v2"), "dave"]) == 0  # default name counts versions: v1-v3
    assert schema.read_manifest(tmp_path / "v1-v3").lineage["version"] == 3
    assert main(["forget", str(tmp_path / "v1"), "nobody"]) == 2
    assert "no such user" in capsys.readouterr().err
