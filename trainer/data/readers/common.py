"""Streaming helpers every reader shares: block-wise CSV reading, vectorised conversions, errors that point.

The helpers read delimited text in blocks with ``pyarrow.csv.open_csv`` (every column as a string, so ids
such as "007" are never int-parsed), convert columns vectorised, and turn pyarrow's errors into `DataError` s
that name the file, the 1-based data row and the field. A bad value is located by bisection: the conversion is
re-run on halves of the chunk until one element is left, which costs about one more pass over the chunk, and
only on error.

Timestamps may be integer or float seconds, ISO-8601 strings or dates (naive values are taken as UTC), or
Parquet timestamp / date columns; all become int64 seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from trainer.data.readers.base import CHUNK_ROWS, EVENT_SCHEMA
from trainer.errors import DataError

# What pyarrow and the decompressors raise on malformed input; anything else is a bug and keeps its traceback.
READ_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError, EOFError, ValueError)
MAX_BLOCK_BYTES = 1 << 26  # bounded memory per block; small blocks are merged by `coalesce`
MIN_BLOCK_BYTES = 1 << 16


# ----------------------------------------------------------------------------------------- files


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pyarrow's messages span several)."""
    return " ".join(str(exc).split())


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise a `DataError` saying what was looked for."""
    if not path.is_file():
        raise DataError(f"{what} not found", file=path)
    if path.stat().st_size == 0:
        raise DataError("file is empty", file=path)
    return path


# ----------------------------------------------------------------------------------------- CSV streaming


@dataclasses.dataclass(frozen=True)
class CsvSource:
    """One delimited text file and how to parse it; every column is read as a string.

    Args:
        path: the file (``.gz`` / ``.bz2`` are decompressed on the fly), named in errors.
        delimiter: one character.
        column_names: names for a file without a header row; None means the first row is the header.
        include: columns to keep (all of them must exist); required when the file has a header.
        encoding: text encoding (``latin1`` for old MovieLens files).
        quoted: whether ``"`` quotes fields; off for formats whose titles contain bare quotes.
        opener: returns the byte stream to parse instead of ``path`` (e.g. a transcoded stream).
        shown_delimiter: how to print the delimiter in error messages when ``opener`` rewrote it.
        block_size: bytes per parsed block; None estimates it from the file's head.
    """

    path: Path
    delimiter: str = ","
    column_names: tuple[str, ...] | None = None
    include: tuple[str, ...] | None = None
    encoding: str = "utf8"
    quoted: bool = True
    opener: Callable[[], Any] | None = None
    shown_delimiter: str | None = None
    block_size: int | None = None

    def open(self) -> Any:
        """The input pyarrow parses: a fresh stream from ``opener`` or the path (compression by extension)."""
        return self.opener() if self.opener is not None else str(self.path)

    def head(self, size: int = 1 << 20) -> bytes:
        """The first ``size`` decompressed bytes, for sizing blocks."""
        if self.opener is None:
            return file_head(self.path, size)
        stream = self.opener()
        try:
            return stream.read(size)
        finally:
            stream.close()


def file_head(path: Path, size: int = 1 << 20) -> bytes:
    """The first ``size`` bytes of a file, decompressed when its extension says so."""
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            return stream.read(size)
    except READ_ERRORS as exc:
        raise DataError(f"cannot read the file: {one_line(exc)}", file=path) from None


def estimate_block_size(head: bytes, separators: bytes = b"\n", rows: int | None = None) -> int:
    """Bytes per block so a block holds about ``rows`` (default `CHUNK_ROWS`) rows, from how often
    ``separators`` occur in ``head``; clamped so memory stays bounded and a block still holds long lines."""
    count = sum(head.count(bytes([sep])) for sep in separators)
    per_row = len(head) / max(count, 1)
    return int(min(max(per_row * (rows or CHUNK_ROWS), MIN_BLOCK_BYTES), MAX_BLOCK_BYTES))


def _open_csv(src: CsvSource, *, threaded: bool, handler: Callable | None = None) -> pacsv.CSVStreamingReader:
    names = src.column_names or src.include
    read = pacsv.ReadOptions(
        use_threads=threaded,
        block_size=src.block_size or estimate_block_size(src.head()),
        column_names=list(src.column_names) if src.column_names else None,
        encoding=src.encoding,
    )
    parse = pacsv.ParseOptions(
        delimiter=src.delimiter,
        quote_char='"' if src.quoted else False,
        invalid_row_handler=handler,
    )
    conversion = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names or ()},
        include_columns=list(src.include) if src.include else None,
        strings_can_be_null=False,
    )
    return pacsv.open_csv(src.open(), read_options=read, parse_options=parse, convert_options=conversion)


def csv_header(src: CsvSource) -> list[str]:
    """Column names of a file with a header row (reads only its first block)."""
    read = pacsv.ReadOptions(block_size=1 << 20, encoding=src.encoding)
    parse = pacsv.ParseOptions(delimiter=src.delimiter, quote_char='"' if src.quoted else False)
    try:
        return pacsv.open_csv(src.open(), read_options=read, parse_options=parse).schema.names
    except READ_ERRORS as exc:
        raise _csv_error(src, exc, 0) from None


def check_columns(found: Iterable[str], wanted: Iterable[str], file: Path) -> None:
    """Raise a `DataError` naming the first missing column and listing the columns found."""
    found = list(found)
    for name in wanted:
        if name not in found:
            raise DataError(f"column not found; columns found: {', '.join(found)}", file=file, field=name)


def csv_chunks(src: CsvSource) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield ``(rows_before, batch)`` in file order; every column is a string."""
    offset = 0
    try:
        for batch in _open_csv(src, threaded=True):
            yield offset, batch
            offset += batch.num_rows
    except READ_ERRORS as exc:
        raise _csv_error(src, exc, offset) from None


def _csv_error(src: CsvSource, exc: Exception, offset: int) -> DataError:
    """Turn a pyarrow CSV failure into a `DataError`; a malformed row is found by a serial re-read."""
    text = one_line(exc)
    if "Empty CSV file" in text:
        return DataError("file is empty", file=src.path)
    if "CSV parse error" in text:
        row, detail = _malformed_row(src)
        return DataError(f"wrong number of fields: {detail}", file=src.path, row=row)
    if "invalid UTF8" in text:
        return DataError(f"text is not valid {src.encoding} (after data row {offset}): {text}", file=src.path)
    return DataError(f"cannot read the file after {offset} data rows: {text}", file=src.path)


def _malformed_row(src: CsvSource) -> tuple[int | None, str]:
    """Re-read serially (pyarrow numbers rows only then); describe the first row with a wrong field count."""
    found = []

    def handler(row: Any) -> str:
        found.append(row)
        return "error"

    try:
        for _ in _open_csv(src, threaded=False, handler=handler):
            pass
    except READ_ERRORS:
        pass
    if not found:
        return None, "malformed row"
    bad = found[0]
    shown = bad.text if src.shown_delimiter is None else bad.text.replace(src.delimiter, src.shown_delimiter)
    # pyarrow counts the header as row 1 (and skips blank lines): make it a 1-based data row.
    row = None if bad.number is None else bad.number - (0 if src.column_names else 1)
    return row, f"expected {bad.expected_columns}, found {bad.actual_columns}: {shown!r}"


def coalesce(batches: Iterable[pa.RecordBatch], rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """Merge small consecutive batches so chunks hold between ``rows / 2`` and about ``rows`` (default
    `CHUNK_ROWS`) rows; batches that are already big enough pass through without a copy."""
    rows = rows or CHUNK_ROWS
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= rows // 2:
            yield _concat(pending)
            pending, count = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


# ----------------------------------------------------------------------------------------- conversions


def first_failure(values: pa.Array, convert: Callable[[pa.Array], Any]) -> int:
    """Index of the first element ``convert`` rejects (``convert(values)`` must fail), by bisection."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(values.slice(lo, mid - lo))
            lo = mid
        except READ_ERRORS:
            hi = mid
    return lo


def convert(
    values: pa.Array, fn: Callable[[pa.Array], pa.Array], *, file: Path, offset: int, field: str, what: str
) -> pa.Array:
    """``fn(values)``, or a `DataError` naming the row (``offset`` rows precede the chunk) and the value."""
    try:
        return fn(values)
    except READ_ERRORS:
        i = first_failure(values, fn)
        raise DataError(
            f"{what}: {values[i].as_py()!r}", file=file, row=offset + i + 1, field=field
        ) from None


def to_int64(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.int64())


def to_float32(values: pa.Array) -> pa.Array:
    """Numbers; empty strings become nulls (a missing optional value)."""
    return pc.cast(empty_to_null(values), pa.float32())


def empty_to_null(values: pa.Array) -> pa.Array:
    if not pa.types.is_string(values.type):
        return values
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)


def check_present(values: pa.Array, *, file: Path, offset: int, field: str) -> None:
    """Raise a `DataError` at the first null or empty value of a required column."""
    missing = pc.is_null(values)
    if pa.types.is_string(values.type):
        missing = pc.or_(missing, pc.fill_null(pc.equal(values, ""), True))
    if pc.any(missing).as_py():
        i = pc.index(missing, True).as_py()
        raise DataError("missing value", file=file, row=offset + i + 1, field=field)


def _float_seconds(values: pa.Array) -> pa.Array:
    return pc.cast(pc.floor(pc.cast(values, pa.float64())), pa.int64())


def _iso_seconds(values: pa.Array) -> pa.Array:
    return pc.divide(pc.cast(pc.cast(values, pa.timestamp("us")), pa.int64()), 1_000_000)


def _iso_zoned_seconds(values: pa.Array) -> pa.Array:
    return pc.divide(pc.cast(pc.cast(values, pa.timestamp("us", "UTC")), pa.int64()), 1_000_000)


_TIME_PARSERS = (to_int64, _float_seconds, _iso_seconds, _iso_zoned_seconds)


def _parse_time_strings(values: pa.Array) -> pa.Array:
    """Try integer, float, naive ISO-8601 and zoned ISO-8601 seconds on the whole chunk, in that order."""
    for parse in _TIME_PARSERS[:-1]:
        try:
            return parse(values)
        except READ_ERRORS:
            continue
    return _TIME_PARSERS[-1](values)


def unit_seconds(values: pa.Array) -> pa.Array:
    """Timestamp / date / numeric arrays as int64 seconds."""
    kind = values.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        return pc.divide(pc.cast(values.view(pa.int64()), pa.int64()), per_second)
    if pa.types.is_date32(kind):
        return pc.multiply(pc.cast(values.view(pa.int32()), pa.int64()), 86_400)
    if pa.types.is_date64(kind):
        return pc.divide(values.view(pa.int64()), 1_000)
    if pa.types.is_integer(kind):
        return pc.cast(values, pa.int64())
    if pa.types.is_floating(kind):
        return _float_seconds(values)
    raise pa.ArrowTypeError(f"unsupported timestamp type {kind}")


def to_seconds(values: pa.Array, *, file: Path, offset: int, field: str) -> pa.Array:
    """Any timestamp column as int64 seconds, or a `DataError` naming the first value that does not parse."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    check_present(values, file=file, offset=offset, field=field)
    if not pa.types.is_string(values.type):
        try:
            return unit_seconds(values)
        except READ_ERRORS as exc:
            raise DataError(f"cannot read timestamps: {one_line(exc)}", file=file, field=field) from None
    try:
        return _parse_time_strings(values)
    except READ_ERRORS:
        pass
    # Locate with the first parser that accepts the chunk's first value (float before int: "1.5" is a time).
    parsers = (_float_seconds, _iso_seconds, _iso_zoned_seconds)
    parse = next((p for p in parsers if _accepts(p, values.slice(0, 1))), parsers[0])
    i = first_failure(values, parse)
    raise DataError(f"not a timestamp: {values[i].as_py()!r}", file=file, row=offset + i + 1, field=field)


def _accepts(parse: Callable[[pa.Array], Any], values: pa.Array) -> bool:
    try:
        parse(values)
        return True
    except READ_ERRORS:
        return False


def as_id_strings(values: pa.Array) -> pa.Array:
    """Ids as plain strings (typed Parquet ids are formatted, never parsed)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values if values.type == pa.string() else pc.cast(values, pa.string())


def event_batch(
    user: pa.Array,
    item: pa.Array,
    timestamp: pa.Array,
    rating: pa.Array | None = None,
    action: pa.Array | None = None,
) -> pa.RecordBatch:
    """A chunk in `EVENT_SCHEMA` order; optional columns are left out when None."""
    columns = {"user": user, "item": item, "timestamp": timestamp, "rating": rating, "action": action}
    fields = [field for field in EVENT_SCHEMA if columns[field.name] is not None]
    arrays = [pc.cast(columns[field.name], field.type) for field in fields]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def drop_list_values(lists: pa.Array, drop: Iterable[str]) -> pa.Array:
    """``lists`` (list<string>) without the values in ``drop`` (e.g. empty strings, "(no genres listed)")."""
    flat = pc.list_flatten(lists)
    keep = pc.invert(pc.is_in(flat, value_set=pa.array(list(drop), pa.string()))).to_numpy(
        zero_copy_only=False
    )
    parents = pc.list_parent_indices(lists).to_numpy()
    counts = np.bincount(parents[keep], minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)))


def first_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the first row of every key (side tables must have one row per item / user)."""
    codes = pc.dictionary_encode(table[key]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    return table.take(np.sort(first)) if len(first) < len(table) else table
