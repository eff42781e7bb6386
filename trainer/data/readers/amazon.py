"""Amazon review JSON lines (format ``amazon``), plain or ``.gz``, with optional product metadata.

Reviews: ``reviewerID`` -> user, ``asin`` -> item, ``overall`` -> rating, ``unixReviewTime`` -> timestamp. The
metadata file (option ``meta``, JSON lines, plain or ``.gz``) gives ``categories`` (from ``category``,
list<string>), ``brand`` and ``price`` (``"$12.99"`` -> 12.99; ranges and text -> null).

Only the needed fields are parsed (explicit schema, other fields ignored), because free-form fields such as
``style`` and ``image`` vary between lines and break schema inference. Duplicate reviews are kept: `prepare`
decides about them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from trainer.data.readers.base import RawLog
from trainer.data.readers.common import (
    READ_ERRORS,
    check_present,
    coalesce,
    estimate_block_size,
    event_batch,
    file_head,
    first_per_key,
    one_line,
    require_file,
)
from trainer.errors import DataError

REVIEW_SCHEMA = pa.schema(
    [
        ("reviewerID", pa.string()),
        ("asin", pa.string()),
        ("overall", pa.float64()),
        ("unixReviewTime", pa.int64()),
    ]
)
META_SCHEMA = pa.schema(
    [
        ("asin", pa.string()),
        ("category", pa.list_(pa.string())),
        ("brand", pa.string()),
        ("price", pa.string()),
    ]
)
_ROW = re.compile(r"in row (\d+)")
_COLUMN = re.compile(r"Column\(/([^)/]+)")


def read(path: Path, *, meta: str | Path | None = None) -> RawLog:
    """Read an Amazon review file and, when given, its metadata file into a `RawLog`."""
    reviews = require_file(Path(path), "Amazon review file")
    meta_file = require_file(Path(meta), "Amazon metadata file") if meta is not None else None

    def events() -> Iterator[pa.RecordBatch]:
        return coalesce(_events(reviews))

    items = _meta_table(meta_file) if meta_file is not None else None
    return RawLog("amazon", [reviews] + ([meta_file] if meta_file else []), events, item_features=items)


def json_chunks(path: Path, schema: pa.Schema) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield ``(rows_before, batch)`` of the ``schema`` fields of a JSON-lines file, in file order."""
    read_options = pajson.ReadOptions(block_size=estimate_block_size(file_head(path)))
    parse_options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    offset = 0
    try:
        for batch in pajson.open_json(str(path), read_options=read_options, parse_options=parse_options):
            yield offset, batch
            offset += batch.num_rows
    except READ_ERRORS as exc:
        raise _json_error(path, exc, offset) from None


def _json_error(path: Path, exc: Exception, offset: int) -> DataError:
    """A `DataError` for a pyarrow JSON failure; its "in row N" counts from the start of the failing block."""
    text = one_line(exc)
    if "Empty JSON" in text:
        return DataError("file is empty", file=path)
    row = _ROW.search(text)
    column = _COLUMN.search(text)
    return DataError(
        f"cannot parse: {_ROW.sub('', text).strip()}"
        if row
        else f"cannot read the file after {offset} data rows: {text}",
        file=path,
        row=offset + int(row.group(1)) + 1 if row else None,
        field=column.group(1) if column else None,
    )


def _events(path: Path) -> Iterator[pa.RecordBatch]:
    for offset, batch in json_chunks(path, REVIEW_SCHEMA):
        for name in ("reviewerID", "asin", "unixReviewTime"):
            check_present(batch.column(name), file=path, offset=offset, field=name)
        yield event_batch(
            batch.column("reviewerID"),
            batch.column("asin"),
            batch.column("unixReviewTime"),
            batch.column("overall"),
        )


def _meta_table(path: Path) -> pa.Table:
    """``item`` + ``categories`` list<string>, ``brand`` string, ``price`` float32 (first line per asin)."""
    batches = [batch for _, batch in json_chunks(path, META_SCHEMA)]
    table = pa.Table.from_batches(batches, schema=META_SCHEMA).combine_chunks()
    item = table["asin"].chunk(0) if table.num_rows else pa.array([], pa.string())
    check_present(item, file=path, offset=0, field="asin")
    features = pa.table(
        {
            "item": item,
            "categories": table["category"],
            "brand": table["brand"],
            "price": parse_price(table["price"].combine_chunks()),
        }
    )
    return first_per_key(features, "item")


def parse_price(values: pa.Array) -> pa.Array:
    """``"$1,299.99"`` -> 1299.99 as float32; anything that is not a single amount becomes null."""
    cleaned = pc.replace_substring_regex(pc.utf8_trim_whitespace(values), r"^\$\s*|,", "")
    amount = pc.fill_null(pc.match_substring_regex(cleaned, r"^\d+(\.\d*)?$"), False)
    return pc.cast(pc.if_else(amount, cleaned, pa.scalar(None, pa.string())), pa.float32())
