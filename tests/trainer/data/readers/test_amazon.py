"""Amazon reader: the real All Beauty 5-core file (duplicates kept), metadata features, and bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from trainer.data.readers import common, open_reader
from trainer.data.readers.amazon import parse_price
from trainer.errors import DataError


def _review(user: str, item: str, time: object, **extra: object) -> dict:
    return {"reviewerID": user, "asin": item, "overall": 4.0, "unixReviewTime": time, **extra}


def _write_lines(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def test_all_beauty_counts_and_duplicates_kept(shared_data: Path) -> None:
    raw = open_reader("amazon", shared_data / "amazon2018-all-beauty-5core" / "All_Beauty_5.json.gz")
    table = pa.Table.from_batches(list(raw.events()))
    assert table.schema.names == ["user", "item", "timestamp", "rating"]
    assert table.num_rows == 5_269
    assert pc.count_distinct(table["user"]).as_py() == 991
    assert pc.count_distinct(table["item"]).as_py() == 85
    assert table.slice(0, 1).to_pylist() == [
        {"user": "A3CIUOJXQ5VDQ2", "item": "B0000530HU", "timestamp": 1472688000, "rating": 5.0}
    ]
    assert (
        pc.min(table["timestamp"]).as_py() == 1095724800 and pc.max(table["timestamp"]).as_py() == 1534982400
    )
    # Measured: 1,108 rows repeat an earlier (user, item, timestamp); the reader keeps them for prepare.
    distinct = table.group_by(["user", "item", "timestamp"]).aggregate([([], "count_all")])
    assert table.num_rows - distinct.num_rows == 1_108
    assert raw.item_features is None


def test_meta_features_and_unicode_ids(tmp_path: Path) -> None:
    reviews = _write_lines(
        tmp_path / "r.json",
        [
            _review("ü-1", "007", 10, style={"Size:": " 7 oz"}, image=["x"]),
            _review("u2", "B1", 20, style={"Color": 3}),
        ],
    )
    meta = _write_lines(
        tmp_path / "meta.json.gz",
        [
            {
                "asin": "007",
                "category": ["Beauty", "Skin"],
                "brand": "Acme",
                "price": "$1,299.99",
                "title": "T",
            },
            {"asin": "B1", "category": [], "price": "$3.49 - $12.99"},
            {"asin": "007", "category": ["again"], "brand": "Dup", "price": "$1"},
        ],
    )
    raw = open_reader("amazon", reviews, meta=meta)
    assert raw.files == [reviews, meta]
    assert pa.Table.from_batches(list(raw.events())).column("user").to_pylist() == ["ü-1", "u2"]
    assert raw.item_features.to_pylist() == [
        {"item": "007", "categories": ["Beauty", "Skin"], "brand": "Acme", "price": pytest.approx(1299.99)},
        {"item": "B1", "categories": [], "brand": None, "price": None},
    ]


def test_parse_price() -> None:
    prices = pa.array(["$12.99", " $ 5 ", "", None, "$3 - $4", "free", "7.5"])
    assert parse_price(prices).to_pylist() == [pytest.approx(12.99), 5.0, None, None, None, None, 7.5]


def test_bad_timestamp_and_missing_field_name_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "CHUNK_ROWS", 2_000)  # several blocks: the row counts across them
    records = [_review(f"u{i}", "a", 1_000 + i) for i in range(9_000)]
    records[7_000]["unixReviewTime"] = "yesterday"
    path = _write_lines(tmp_path / "r.json", records)
    with pytest.raises(DataError, match="r.json, row 7001, field 'unixReviewTime'"):
        list(open_reader("amazon", path).events())
    records[7_000] = {"reviewerID": "u", "unixReviewTime": 5}
    _write_lines(path, records)
    with pytest.raises(DataError, match="r.json, row 7001, field 'asin': missing value"):
        list(open_reader("amazon", path).events())


def test_truncated_gzip_empty_and_missing_files(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "r.json.gz", [_review(f"u{i}", "a", i) for i in range(20_000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="r.json.gz: cannot read the file.*[Tt]runcated"):
        list(open_reader("amazon", path).events())
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(DataError, match="empty.json: file is empty"):
        open_reader("amazon", tmp_path / "empty.json")
    with pytest.raises(DataError, match="meta.json: Amazon metadata file not found"):
        open_reader(
            "amazon", _write_lines(tmp_path / "ok.json", [_review("u", "a", 1)]), meta=tmp_path / "meta.json"
        )
    (tmp_path / "bad.json").write_text(
        '{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n{"reviewerID": \n'
    )
    with pytest.raises(DataError, match="bad.json, row 2: cannot parse"):
        list(open_reader("amazon", tmp_path / "bad.json").events())
