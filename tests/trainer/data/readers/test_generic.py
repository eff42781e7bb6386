"""Generic ``events`` reader: CSV / Parquet, column mapping, timestamp kinds, side tables, and bad input."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.data.readers import common, open_reader
from trainer.errors import ConfigError, DataError


def _table(raw) -> pa.Table:
    return pa.Table.from_batches(list(raw.events()))


def _utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


def test_csv_mapping_iso_times_and_optional_columns(tmp_path: Path) -> None:
    file = tmp_path / "log.csv"
    file.write_text(
        "uid,sku,when,event,stars\n"
        "007,0042,2020-01-02,view,\n"
        "ü,日本,2020-01-02T03:04:05,cart,4.5\n"
        '"a,b",x,2020-01-02 03:04:05.9,purchase,1\n'
    )
    columns = {"user": "uid", "item": "sku", "timestamp": "when", "action": "event", "rating": "stars"}
    table = _table(open_reader("events", file, columns=columns))
    assert table.schema == pa.schema(
        [
            ("user", pa.string()),
            ("item", pa.string()),
            ("timestamp", pa.int64()),
            ("rating", pa.float32()),
            ("action", pa.string()),
        ]
    )
    assert table.to_pydict() == {
        "user": ["007", "ü", "a,b"],
        "item": ["0042", "日本", "x"],
        "timestamp": [_utc(2020, 1, 2), _utc(2020, 1, 2, 3, 4, 5), _utc(2020, 1, 2, 3, 4, 5)],
        "rating": [None, 4.5, 1.0],
        "action": ["view", "cart", "purchase"],
    }


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1600000000", "-5", "0"], [1600000000, -5, 0]),
        (["1600000000.75", "12", "1e3"], [1600000000, 12, 1000]),
        (
            ["2020-01-01T00:00:00Z", "2020-01-01T02:00:00+02:00", "1970-01-01 00:00:10Z"],
            [_utc(2020, 1, 1)] * 2 + [10],
        ),
    ],
)
def test_timestamp_strings(tmp_path: Path, values: list[str], expected: list[int]) -> None:
    file = tmp_path / "log.tsv"
    file.write_text("user\titem\ttimestamp\n" + "".join(f"u\ti\t{v}\n" for v in values))
    assert _table(open_reader("events", file)).column("timestamp").to_pylist() == expected


def test_parquet_folder_typed_columns_and_side_tables(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    when = [dt.datetime(2021, 5, 1, 12, 0, 0, 500_000), dt.datetime(2021, 5, 2)]
    pq.write_table(
        pa.table(
            {
                "user": pa.array([7, 8], pa.int64()),
                "item": ["a", "b"],
                "timestamp": pa.array(when, pa.timestamp("ms")),
            }
        ),
        folder / "part-0.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "user": pa.array([9], pa.int64()),
                "item": ["c"],
                "timestamp": pa.array([dt.date(2021, 5, 3)], pa.date32()),
            }
        ),
        folder / "part-1.parquet",
    )
    (folder / "notes.md").write_text("not an event file")
    items = tmp_path / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "sku": ["a", "b", "a"],
                "tags": [["x", "y"], [], ["z"]],
                "price": [1.5, 2.0, 3.0],
                "brand": pa.array(["p", "q", "r"]).dictionary_encode(),
            }
        ),
        items,
    )
    users = tmp_path / "users.csv"
    users.write_text("user,age,segment\n007,31,gold\n8,,silver\n")
    raw = open_reader("events", folder, items=items, users=users)
    table = _table(raw)
    assert table.column("user").to_pylist() == ["7", "8", "9"]
    assert table.column("timestamp").to_pylist() == [_utc(2021, 5, 1, 12), _utc(2021, 5, 2), _utc(2021, 5, 3)]
    assert [p.name for p in raw.files] == ["part-0.parquet", "part-1.parquet", "items.parquet", "users.csv"]
    assert raw.item_features.to_pylist() == [  # first row per key; first column is the key
        {"item": "a", "tags": ["x", "y"], "price": 1.5, "brand": "p"},
        {"item": "b", "tags": [], "price": 2.0, "brand": "q"},
    ]
    assert raw.user_features.column("user").to_pylist() == ["007", "8"]
    assert raw.user_features.column("age").to_pylist() == [31, None]
    assert raw.user_features.column("segment").to_pylist() == ["gold", "silver"]


def test_chunks_rows_and_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CHUNK_ROWS", 5_000)
    n = 40_000
    lines = [f"u{i % 321},i{i % 97},{1_000 + i}\n" for i in range(n)]
    text = "user,item,timestamp\n" + "".join(lines)
    file = tmp_path / "log.csv.gz"
    file.write_bytes(gzip.compress(text.encode()))
    raw = open_reader("events", file)
    batches = list(raw.events())
    assert len(batches) > 2 and all(b.num_rows >= 2_500 for b in batches[:-1])
    assert np.array_equal(pa.Table.from_batches(batches)["timestamp"].to_numpy(), 1_000 + np.arange(n))

    lines[30_010] = "u,i,noon\n"
    file.write_bytes(gzip.compress(("user,item,timestamp\n" + "".join(lines)).encode()))
    with pytest.raises(DataError, match=r"log.csv.gz, row 30011, field 'timestamp': not a timestamp: 'noon'"):
        list(raw.events())
    data = gzip.compress(text.encode())
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"log.csv.gz: cannot read the file.*[Tt]runcated"):
        list(raw.events())


def test_bad_values_are_located(tmp_path: Path) -> None:
    file = tmp_path / "log.csv"
    file.write_text("user,item,timestamp,rating\nu,i,1.5,5\nu,i,2020-01-01,4\n")
    with pytest.raises(DataError, match=r"row 2, field 'timestamp': not a timestamp: '2020-01-01'"):
        list(open_reader("events", file).events())
    file.write_text("user,item,timestamp,rating\nu,i,1,5\nu,i,2,five\n")
    with pytest.raises(DataError, match=r"row 2, field 'rating': rating is not a number: 'five'"):
        list(open_reader("events", file).events())
    file.write_text("user,item,timestamp\nu,i,1\n,i,2\n")
    with pytest.raises(DataError, match=r"row 2, field 'user': missing value"):
        list(open_reader("events", file).events())
    file.write_text("user;item;timestamp\nu;i;1\nu;i\n")
    with pytest.raises(DataError, match=r"row 2: wrong number of fields: expected 3, found 2: 'u;i'"):
        list(open_reader("events", file, delimiter=";").events())


def test_columns_files_and_config_errors(tmp_path: Path) -> None:
    file = tmp_path / "log.csv"
    file.write_text("uid,item,ts\nu,i,1\n")
    with pytest.raises(DataError, match=r"field 'timestamp': column not found; columns found: uid, item, ts"):
        open_reader("events", file, columns={"user": "uid"})
    with pytest.raises(DataError, match=r"field 'act': column not found"):
        open_reader("events", file, columns={"user": "uid", "timestamp": "ts", "action": "act"})
    with pytest.raises(ConfigError, match="unknown key.*usr"):
        open_reader("events", file, columns={"usr": "uid"})
    with pytest.raises(ConfigError, match="delimiter must be one character"):
        open_reader("events", file, delimiter="::")
    with pytest.raises(DataError, match="missing.csv: event file not found"):
        open_reader("events", tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        open_reader("events", tmp_path / "empty.csv")
    empty_folder = tmp_path / "none"
    empty_folder.mkdir()
    with pytest.raises(DataError, match="no event files"):
        open_reader("events", empty_folder)


def test_truncated_and_corrupt_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    n = 50_000
    pq.write_table(
        pa.table({"user": [f"u{i}" for i in range(n)], "item": ["i"] * n, "timestamp": range(n)}),
        good,
        compression="none",
    )
    data = good.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.parquet: not a readable Parquet file"):
        open_reader("events", tmp_path / "cut.parquet")
    # Keep the footer, overwrite the data pages: opening works, reading fails.
    (tmp_path / "bad.parquet").write_bytes(data[:4] + bytes(len(data) // 2) + data[4 + len(data) // 2 :])
    with pytest.raises(DataError, match="bad.parquet: corrupt Parquet data"):
        list(open_reader("events", tmp_path / "bad.parquet").events())
