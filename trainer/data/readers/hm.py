"""H&M Personalized Fashion Recommendations (Kaggle) layout (format ``hm``).

A folder with ``transactions_train.csv`` (``t_dat`` YYYY-MM-DD, ``customer_id``, ``article_id``, ...) and,
when present, ``articles.csv`` and ``customers.csv`` side features. The timestamp is the day in unix seconds;
several purchases share a day, and `prepare` keeps the file order among them. Price and sales channel are not
used. ``article_id`` is read as a string so its leading zero stays ("0108775015").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from trainer.data.readers.base import RawLog
from trainer.data.readers.common import (
    CsvSource,
    check_columns,
    check_present,
    coalesce,
    convert,
    csv_chunks,
    csv_header,
    event_batch,
    first_per_key,
    require_file,
    to_float32,
)

TRANSACTIONS = "transactions_train.csv"
ARTICLE_FEATURES = (
    "product_type_name",
    "product_group_name",
    "colour_group_name",
    "department_name",
    "index_group_name",
    "section_name",
    "garment_group_name",
)
CUSTOMER_FEATURES = ("club_member_status", "fashion_news_frequency")  # plus numeric "age"


def read(path: Path) -> RawLog:
    """Read an H&M folder (or its ``transactions_train.csv``) into a `RawLog`."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    transactions = require_file(path if path.is_file() else folder / TRANSACTIONS, f"H&M {TRANSACTIONS}")
    src = _source(transactions, ("t_dat", "customer_id", "article_id"))

    def events() -> Iterator[pa.RecordBatch]:
        return coalesce(_events(src))

    files = [transactions]
    items = users = None
    if (folder / "articles.csv").is_file():
        items = _side(_source(folder / "articles.csv", ("article_id", *ARTICLE_FEATURES)), "item")
        files.append(folder / "articles.csv")
    if (folder / "customers.csv").is_file():
        users = _side(_source(folder / "customers.csv", ("customer_id", "age", *CUSTOMER_FEATURES)), "user")
        files.append(folder / "customers.csv")
    return RawLog("hm", files, events, items, users)


def _source(path: Path, columns: tuple[str, ...]) -> CsvSource:
    """A CSV source keeping ``columns`` (all strings), after checking the header has them."""
    src = CsvSource(require_file(path, f"H&M {path.name}"), include=columns)
    check_columns(csv_header(src), columns, path)
    return src


def _day_seconds(values: pa.Array) -> pa.Array:
    return pc.cast(pc.strptime(values, format="%Y-%m-%d", unit="s"), pa.int64())


def _events(src: CsvSource) -> Iterator[pa.RecordBatch]:
    for offset, batch in csv_chunks(src):
        where = {"file": src.path, "offset": offset}
        user, item = batch.column("customer_id"), batch.column("article_id")
        check_present(user, field="customer_id", **where)
        check_present(item, field="article_id", **where)
        day = convert(
            batch.column("t_dat"), _day_seconds, field="t_dat", what="not a YYYY-MM-DD date", **where
        )
        yield event_batch(user, item, day)


def _side(src: CsvSource, key: str) -> pa.Table:
    """The side file whole, its first column renamed to ``key``; ``age`` becomes numeric (empty -> null)."""
    table = pa.Table.from_batches([batch for _, batch in csv_chunks(src)]).combine_chunks()
    source_key = src.include[0]
    check_present(table[source_key].chunk(0), file=src.path, offset=0, field=source_key)
    columns = {key if name == source_key else name: table[name].chunk(0) for name in src.include}
    if "age" in columns:
        columns["age"] = convert(
            columns["age"], to_float32, file=src.path, offset=0, field="age", what="not a number"
        )
    return first_per_key(pa.table(columns), key)
