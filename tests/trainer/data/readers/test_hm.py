"""H&M reader on a small H&M-shaped folder: string article ids, day timestamps, side features, bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from trainer.data.readers import common, open_reader
from trainer.data.readers.hm import ARTICLE_FEATURES
from trainer.errors import DataError

CUSTOMERS = ["00000dbacae5abe5e23885899a1fa44253a17956c6d1c3d25f88aa139fdfc657", "a" * 64, "b" * 64]
ARTICLES = ["0108775015", "0108775044", "0929511001"]
ARTICLE_HEADER = (
    "article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,"
    "colour_group_name,department_name,index_group_name,section_name,garment_group_name,detail_desc"
)


def _epoch(day: str) -> int:
    return int(dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp())


def _write(folder: Path, transactions: list[str]) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "transactions_train.csv").write_text(
        "t_dat,customer_id,article_id,price,sales_channel_id\n" + "\n".join(transactions) + "\n"
    )
    (folder / "articles.csv").write_text(
        ARTICLE_HEADER + "\n"
        "0108775015,108775,Strap top,253,Vest top,Garment Upper body,Black,Jersey Basic,Ladieswear,"
        'Womens Everyday Basics,Jersey Basic,"Jersey top with narrow shoulder straps, soft"\n'
        "0108775044,108775,Strap top,253,Vest top,Garment Upper body,White,Jersey Basic,Ladieswear,"
        "Womens Everyday Basics,Jersey Basic,Jersey top\n"
    )
    (folder / "customers.csv").write_text(
        "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code\n"
        f"{CUSTOMERS[0]},,,ACTIVE,NONE,49,52043ee2162cf5aa7ee79974281641c6f11a68d276429a91f8ca0d4b6efa8100\n"
        f"{CUSTOMERS[1]},1.0,1.0,ACTIVE,Regularly,,2973abc54daa8a5f8ccfe9362140c63247c5eee03f1d93f4c830291c\n"
    )
    return folder


def _rows(n: int) -> list[str]:
    return [
        f"2018-09-{20 + i % 10:02d},{CUSTOMERS[i % 3]},{ARTICLES[i % 3]},0.0508,{1 + i % 2}" for i in range(n)
    ]


def test_events_and_side_features(tmp_path: Path) -> None:
    folder = _write(tmp_path / "hm", _rows(6))
    raw = open_reader("hm", folder)
    table = pa.Table.from_batches(list(raw.events()))
    assert table.schema.names == ["user", "item", "timestamp"]
    assert table.column("item").to_pylist() == ARTICLES * 2  # leading zeros kept
    assert table.column("user").to_pylist() == CUSTOMERS * 2
    assert table.column("timestamp").to_pylist() == [_epoch(f"2018-09-{20 + i}") for i in range(6)]
    assert [p.name for p in raw.files] == ["transactions_train.csv", "articles.csv", "customers.csv"]

    items = raw.item_features
    assert items.column_names == ["item", *ARTICLE_FEATURES]
    assert items.to_pylist()[0] == {
        "item": "0108775015",
        "product_type_name": "Vest top",
        "product_group_name": "Garment Upper body",
        "colour_group_name": "Black",
        "department_name": "Jersey Basic",
        "index_group_name": "Ladieswear",
        "section_name": "Womens Everyday Basics",
        "garment_group_name": "Jersey Basic",
    }
    users = raw.user_features
    assert users.column_names == ["user", "age", "club_member_status", "fashion_news_frequency"]
    assert users.column("age").type == pa.float32()
    assert users.column("age").to_pylist() == [49.0, None]
    assert users.column("fashion_news_frequency").to_pylist() == ["NONE", "Regularly"]


def test_transactions_only_and_file_path(tmp_path: Path) -> None:
    folder = _write(tmp_path / "hm", _rows(3))
    (folder / "articles.csv").unlink()
    (folder / "customers.csv").unlink()
    raw = open_reader("hm", folder / "transactions_train.csv")
    assert raw.item_features is None and raw.user_features is None
    assert sum(b.num_rows for b in raw.events()) == 3


def test_bad_date_names_row_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "CHUNK_ROWS", 1_000)
    rows = _rows(5_000)
    rows[4_321] = rows[4_321].replace("2018-09-", "2018/09/")
    folder = _write(tmp_path / "hm", rows)
    with pytest.raises(
        DataError, match=r"transactions_train.csv, row 4322, field 't_dat': not a YYYY-MM-DD date"
    ):
        list(open_reader("hm", folder).events())


def test_misnamed_column_missing_file_and_short_row(tmp_path: Path) -> None:
    folder = _write(tmp_path / "hm", _rows(3))
    text = (folder / "transactions_train.csv").read_text()
    (folder / "transactions_train.csv").write_text(text.replace("article_id", "article"))
    with pytest.raises(
        DataError, match="field 'article_id': column not found; columns found: t_dat, customer_id"
    ):
        open_reader("hm", folder)
    (folder / "transactions_train.csv").write_text(text + "2018-09-20,x\n")
    with pytest.raises(DataError, match=r"row 4: wrong number of fields: expected 5, found 2"):
        list(open_reader("hm", folder).events())
    (folder / "transactions_train.csv").unlink()
    with pytest.raises(DataError, match="transactions_train.csv: H&M transactions_train.csv not found"):
        open_reader("hm", folder)
