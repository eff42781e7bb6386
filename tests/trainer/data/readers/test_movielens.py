"""MovieLens reader: the three real layouts, the "::" rewriting stream, and bad input."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trainer.data.readers import open_reader
from trainer.data.readers.movielens import SENTINEL, DoubleColonStream
from trainer.errors import DataError


def _table(raw) -> pa.Table:
    return pa.Table.from_batches(list(raw.events()))


def test_100k_events_genres_and_users(shared_data: Path) -> None:
    raw = open_reader("movielens", shared_data / "movielens-100k")
    table = _table(raw)
    assert table.schema.names == ["user", "item", "timestamp", "rating"]
    assert table.schema.field("rating").type == pa.float32()
    assert table.num_rows == 100_000
    assert pc.count_distinct(table["user"]).as_py() == 943
    assert pc.count_distinct(table["item"]).as_py() == 1_682
    assert table.slice(0, 1).to_pylist() == [
        {"user": "196", "item": "242", "timestamp": 881250949, "rating": 3.0}
    ]
    assert pc.min(table["timestamp"]).as_py() == 874724710 and pc.max(table["timestamp"]).as_py() == 893286638

    items = raw.item_features
    assert items.num_rows == 1_682 and items.schema.field("genres").type == pa.list_(pa.string())
    toy_story = items.filter(pc.equal(items["item"], "1")).to_pylist()[0]
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert pc.count_distinct(pc.list_flatten(items["genres"])).as_py() == 19

    users = raw.user_features
    assert users.schema.names == ["user", "age", "gender", "occupation"]
    assert pa.types.is_integer(users.schema.field("age").type)
    assert users.num_rows == 943
    assert users.slice(0, 1).to_pylist() == [
        {"user": "1", "age": 24, "gender": "M", "occupation": "technician"}
    ]


def test_1m_partial_double_colon_format(shared_data: Path) -> None:
    raw = open_reader("movielens", shared_data / "movielens-1m-partial")
    table = _table(raw)
    assert table.num_rows == 487_650
    assert pc.count_distinct(table["user"]).as_py() == 2_999
    assert pc.count_distinct(table["item"]).as_py() == 3_615
    assert table.slice(0, 1).to_pylist() == [
        {"user": "1", "item": "1193", "timestamp": 978300760, "rating": 5.0}
    ]
    assert pc.min(table["timestamp"]).as_py() == 970620734
    assert pc.max(table["timestamp"]).as_py() == 1046388675
    assert raw.item_features.num_rows == 3_883  # full movies.dat
    assert pc.all(pc.is_in(table["item"], value_set=raw.item_features["item"])).as_py()
    assert raw.item_features.slice(1, 1).to_pylist() == [
        {"item": "2", "genres": ["Adventure", "Children's", "Fantasy"]}
    ]
    assert raw.user_features.num_rows == 6_040
    assert raw.user_features.slice(0, 1).to_pylist() == [
        {"user": "1", "age": 1, "gender": "F", "occupation": "10"}
    ]


def test_latest_small_csv(shared_data: Path) -> None:
    raw = open_reader("movielens", shared_data / "movielens-latest-small" / "ratings.csv")
    table = _table(raw)
    assert table.num_rows == 100_836
    assert pc.count_distinct(table["user"]).as_py() == 610
    assert pc.count_distinct(table["item"]).as_py() == 9_724
    assert set(pc.unique(table["rating"]).to_pylist()) == {x / 2 for x in range(1, 11)}
    items = raw.item_features
    assert items.num_rows == 9_742 and raw.user_features is None
    genres = pc.unique(pc.list_flatten(items["genres"])).to_pylist()
    assert len(genres) == 19 and "(no genres listed)" not in genres  # 20 values in the file, one means "none"
    assert pc.sum(pc.equal(pc.list_value_length(items["genres"]), 0)).as_py() > 0


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64])
def test_double_colon_stream_across_block_boundaries(tmp_path: Path, block: int) -> None:
    data = b"1::22::3::444\n55::6::7::8\n9::10::11::12\n::a::::b\n"
    file = tmp_path / "x.dat"
    file.write_bytes(data)
    with io.BufferedReader(DoubleColonStream(file, block=block), buffer_size=4) as stream:
        assert stream.read() == data.replace(b"::", SENTINEL)


def test_sentinel_byte_in_input(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_bytes(b"1::2::5::100\n1::3" + SENTINEL + b"::4::5\n")
    with pytest.raises(DataError, match="ratings.dat: contains byte"):
        list(open_reader("movielens", tmp_path).events())


def test_bad_rows_name_row_field_and_value(tmp_path: Path) -> None:
    ratings = tmp_path / "ratings.dat"
    ratings.write_bytes(b"1::2::5::100\n1::3::4\n")
    with pytest.raises(DataError, match=r"row 2: wrong number of fields: expected 4, found 3: '1::3::4'"):
        list(open_reader("movielens", tmp_path).events())
    ratings.write_bytes(b"1::2::5::100\n1::3::4::17:00\n")
    with pytest.raises(DataError, match=r"ratings.dat, row 2, field 'timestamp': not an integer: '17:00'"):
        list(open_reader("movielens", tmp_path).events())

    data = tmp_path / "k"
    data.mkdir()
    (data / "u.data").write_text("1\t2\t5\t100\n1\t3\tgood\t101\n")
    with pytest.raises(DataError, match=r"u.data, row 2, field 'rating': not a number: 'good'"):
        list(open_reader("movielens", data).events())
    (data / "u.data").write_text("1\t2\t5\t100\n")
    (data / "u.item").write_text("1|T|d||u|0|1\n")
    with pytest.raises(DataError, match="u.genre"):
        open_reader("movielens", data)
    (data / "u.genre").write_text("A|0\nB|1\n")
    (data / "u.item").write_text("1|T|d||u|0|1\n2|T|d||u|2|0\n")
    with pytest.raises(DataError, match=r"u.item, row 2, field 'A': genre flag must be 0 or 1, got '2'"):
        open_reader("movielens", data)


def test_header_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="looked for u.data, ratings.dat, ratings.csv"):
        open_reader("movielens", tmp_path)
    (tmp_path / "ratings.csv").write_text("user,movieId,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"field 'userId': column not found; columns found: user, movieId"):
        open_reader("movielens", tmp_path)
    (tmp_path / "ratings.csv").write_text("")
    with pytest.raises(DataError, match="ratings.csv: file is empty"):
        open_reader("movielens", tmp_path)
