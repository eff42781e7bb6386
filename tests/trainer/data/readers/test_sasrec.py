"""SASRec reader: real ML-1M / Video counts and order, ids as strings, chunking and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trainer.data.readers import base, common, open_reader
from trainer.errors import DataError


def _table(raw: base.RawLog) -> pa.Table:
    return pa.Table.from_batches(list(raw.events()))


def test_ml1m_counts_and_line_order(shared_data: Path) -> None:
    raw = open_reader("sasrec", shared_data / "sasrec-ml-1m" / "ml-1m.txt")
    table = _table(raw)
    assert table.schema.names == ["user", "item", "timestamp"]
    assert table.schema.field("user").type == pa.string()
    assert table.num_rows == 999_611
    assert pc.count_distinct(table["user"]).as_py() == 6_040
    assert pc.count_distinct(table["item"]).as_py() == 3_416
    timestamps = table["timestamp"].to_numpy()
    assert np.array_equal(timestamps, np.arange(table.num_rows))  # strictly increasing line numbers
    assert table.slice(0, 2).to_pylist() == [
        {"user": "1", "item": "1", "timestamp": 0},
        {"user": "1", "item": "2", "timestamp": 1},
    ]
    assert raw.files == [shared_data / "sasrec-ml-1m" / "ml-1m.txt"]
    assert raw.item_features is None and raw.user_features is None


def test_folder_with_one_txt(shared_data: Path) -> None:
    table = _table(open_reader("sasrec", shared_data / "sasrec-video-games"))
    assert table.num_rows == 287_107
    assert pc.count_distinct(table["user"]).as_py() == 31_013
    assert pc.count_distinct(table["item"]).as_py() == 23_715


def test_folder_with_several_txt_names_them(shared_data: Path) -> None:
    with pytest.raises(DataError, match="sas_to_original_items.txt") as err:
        open_reader("sasrec", shared_data / "sasrec-ml-1m")
    assert "ml-1m.txt" in str(err.value)


def test_ids_stay_strings_unicode_and_fresh_iterators(tmp_path: Path) -> None:
    file = tmp_path / "log.txt"
    file.write_text("007 0042\nÜser-é 日本\n007 x\r\n", encoding="utf8")
    raw = open_reader("sasrec", file)
    first, second = _table(raw), _table(raw)
    assert first.equals(second)
    assert first.column("user").to_pylist() == ["007", "Üser-é", "007"]
    assert first.column("item").to_pylist() == ["0042", "日本", "x"]


def test_chunks_and_row_numbers_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CHUNK_ROWS", 4_000)
    rows = 30_000
    lines = [f"{i // 10} {i % 97}" for i in range(rows)]
    file = tmp_path / "log.txt"
    file.write_text("\n".join(lines) + "\n")
    batches = list(open_reader("sasrec", file).events())
    assert len(batches) > 2
    assert all(2_000 <= b.num_rows <= 3 * 4_000 for b in batches[:-1])
    table = pa.Table.from_batches(batches)
    assert np.array_equal(table["timestamp"].to_numpy(), np.arange(rows))
    assert table["user"].to_pylist()[-1] == str((rows - 1) // 10)

    lines[25_000] = "1 2 3"
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        DataError, match=r"row 25001: wrong number of fields: expected 2, found 3: '1 2 3'"
    ) as err:
        list(open_reader("sasrec", file).events())
    assert err.value.row == 25_001 and err.value.file == file


def test_empty_id_names_row_and_field(tmp_path: Path) -> None:
    file = tmp_path / "log.txt"
    file.write_text("1 2\n1 \n")
    with pytest.raises(DataError) as err:
        list(open_reader("sasrec", file).events())
    assert (err.value.row, err.value.field) == (2, "item")


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.txt: SASRec .txt file not found"):
        open_reader("sasrec", tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty.txt: file is empty"):
        open_reader("sasrec", tmp_path / "empty.txt")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DataError, match="found: none"):
        open_reader("sasrec", folder)
