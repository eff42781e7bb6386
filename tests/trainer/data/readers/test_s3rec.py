"""S3-Rec reader: real Beauty / LastFM counts and attributes, running timestamps, whitespace and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trainer.data.readers import common, open_reader
from trainer.errors import DataError


def test_beauty_counts_and_attributes(shared_data: Path) -> None:
    raw = open_reader("s3rec", shared_data / "s3rec-beauty")
    table = pa.Table.from_batches(list(raw.events()))
    assert table.num_rows == 198_502
    assert pc.count_distinct(table["user"]).as_py() == 22_363
    assert pc.count_distinct(table["item"]).as_py() == 12_101
    assert np.array_equal(table["timestamp"].to_numpy(), np.arange(table.num_rows))
    assert table.slice(0, 6).column("user").to_pylist() == ["1"] * 5 + ["2"]
    assert table.slice(0, 6).column("item").to_pylist() == ["1", "2", "3", "4", "5", "6"]

    items = raw.item_features
    assert items.schema.field("attributes").type == pa.list_(pa.string())
    assert items.num_rows == 12_101
    assert pc.all(pc.is_in(table["item"], value_set=items["item"])).as_py()
    flat = pc.list_flatten(items["attributes"])
    assert pc.count_distinct(flat).as_py() == 637
    assert pc.max(pc.list_value_length(items["attributes"])).as_py() == 6
    assert items.slice(0, 1).to_pylist() == [{"item": "4", "attributes": ["1", "2", "3"]}]
    assert [p.name for p in raw.files] == ["Beauty.txt", "Beauty_item2attributes.json"]


def test_lastfm_long_lines(shared_data: Path) -> None:
    raw = open_reader("s3rec", shared_data / "s3rec-lastfm" / "LastFM.txt")
    table = pa.Table.from_batches(list(raw.events()))
    assert table.num_rows == 52_551
    assert pc.count_distinct(table["user"]).as_py() == 1_090
    counts = pc.value_counts(table["user"]).field("counts")
    assert pc.max(counts).as_py() == 899
    assert raw.item_features.num_rows == 3_646


def test_whitespace_unicode_and_no_attribute_file(tmp_path: Path) -> None:
    file = tmp_path / "Tiny.txt"
    file.write_text("u1 007 b  c \nü\t日本 x\n\nu3\n", encoding="utf8")
    raw = open_reader("s3rec", file)
    assert raw.item_features is None and raw.files == [file]
    table = pa.Table.from_batches(list(raw.events()))
    assert table.to_pydict() == {
        "user": ["u1", "u1", "u1", "ü", "ü"],
        "item": ["007", "b", "c", "日本", "x"],
        "timestamp": [0, 1, 2, 3, 4],
    }
    assert pa.Table.from_batches(list(raw.events())).equals(table)


def test_running_index_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CHUNK_ROWS", 5_000)
    lines = [" ".join([str(u)] + [str(u * 7 + k) for k in range(u % 9 + 1)]) for u in range(20_000)]
    file = tmp_path / "Many.txt"
    file.write_text("\n".join(lines) + "\n")
    batches = list(open_reader("s3rec", file).events())
    assert len(batches) > 2
    table = pa.Table.from_batches(batches)
    assert table.num_rows == sum(u % 9 + 1 for u in range(20_000))
    assert np.array_equal(table["timestamp"].to_numpy(), np.arange(table.num_rows))
    last = lines[-1].split()
    assert table.slice(table.num_rows - len(last) + 1).column("item").to_pylist() == last[1:]


def test_explicit_attributes_and_bad_attribute_files(tmp_path: Path) -> None:
    file = tmp_path / "Tiny.txt"
    file.write_text("1 10 11\n")
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"10": [3, 4], "11": []}))
    raw = open_reader("s3rec", file, attributes=attrs)
    assert raw.item_features.to_pylist() == [
        {"item": "10", "attributes": ["3", "4"]},
        {"item": "11", "attributes": []},
    ]
    with pytest.raises(DataError, match="missing.json: attribute file not found"):
        open_reader("s3rec", file, attributes=tmp_path / "missing.json")
    attrs.write_text(json.dumps({"10": 3}))
    with pytest.raises(DataError, match="list of attribute ids") as err:
        open_reader("s3rec", file, attributes=attrs)
    assert err.value.field == "attributes"
    attrs.write_text('{"10": [1, 2')
    with pytest.raises(DataError, match="not a readable JSON object"):
        open_reader("s3rec", file, attributes=attrs)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "Empty.txt").write_text("")
    with pytest.raises(DataError, match="Empty.txt: file is empty"):
        open_reader("s3rec", tmp_path)
