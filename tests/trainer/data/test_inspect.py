"""`seqrec inspect` on a dataset folder prepared from a small in-memory log."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from trainer.cli import main
from trainer.data.inspect import format_report, inspect_dataset
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.readers.base import EVENT_SCHEMA, RawLog


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Users with 3, 5, 9 and 40 events; item ``i0`` in every sequence."""
    rows = []
    for user, length in (("u3", 3), ("u5", 5), ("u9", 9), ("u40", 40)):
        rows += [(user, f"i{n}", n) for n in range(length)]
    table = pa.table({name: pa.array([r[k] for r in rows], EVENT_SCHEMA.field(name).type)
                      for k, name in enumerate(("user", "item", "timestamp"))})
    raw = RawLog(format="test", files=[], events=lambda: iter(table.to_batches(max_chunksize=7)))
    prepare(PrepareConfig(format="test", input=tmp_path, output=tmp_path / "ds"), raw)
    return tmp_path / "ds"


def test_summary_counts_lengths_popularity_and_split(dataset: Path) -> None:
    summary = inspect_dataset(dataset, top=3)
    lengths = summary["lengths"]
    assert (lengths["users"], lengths["min"], lengths["max"], lengths["median"]) == (4, 3, 40, 7.0)
    # power-of-two bins from the shortest user: [2, 3], [4, 7], [8, 15], [16, 31], [32, 63]
    assert [(b["min"], b["max"], b["users"]) for b in lengths["histogram"]] == [
        (2, 3, 1), (4, 7, 1), (8, 15, 1), (16, 31, 0), (32, 63, 1)]
    split = summary["split"]
    assert split == {"policy": "leave_one_out", "train_interactions": 1 + 3 + 7 + 38, "valid_targets": 4,
                     "test_targets": 4, "users_with_valid": 4, "users_with_test": 4}
    popularity = summary["popularity"]
    # train parts are i0..i(n-3): i0 is in all 4, i1..i2 in 3 (u5, u9, u40), i3..i6 in 2, i7..i37 in 1
    assert [(row["raw_id"], row["popularity"]) for row in popularity["head"]] == [("i0", 4), ("i1", 3), ("i2", 3)]
    assert popularity["items"] == 40
    assert popularity["items_le_1"] == 40 - 7  # i7..i39 (the last two have 0)
    assert popularity["items_le_5"] == 40
    assert popularity["top_1pct_share"] == pytest.approx(4 / 49)
    assert popularity["top_10pct_share"] == pytest.approx((4 + 3 + 3 + 2) / 49)
    assert summary["manifest"]["counts"]["users"] == 4


def test_text_report_has_every_section(dataset: Path) -> None:
    text = format_report(inspect_dataset(dataset))
    for expected in ("source: format 'test'", "users", "filters:", "kcore", "split:", "sequence lengths: min 3",
                     "32-63", "popularity", "i0", "<= 1 train interaction: 33", "top 10%"):
        assert expected in text, expected
    assert "#" * 40 in text  # the largest histogram bar is full width


def test_cli_text_and_json(dataset: Path, capsys) -> None:
    assert main(["inspect", str(dataset), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["split"]["test_targets"] == 4 and len(summary["popularity"]["head"]) == 10
    assert main(["inspect", str(dataset)]) == 0
    assert "sequence lengths" in capsys.readouterr().out


def test_cli_missing_dataset_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset folder does not exist" in err
