"""Generic CSV / Parquet event logs (format ``events``).

The ``events`` reader takes a file or a folder of ``.csv`` / ``.tsv`` / ``.csv.gz`` / ``.parquet`` files::

    read(Path("logs/"), columns={"user": "uid", "item": "sku", "timestamp": "ts", "action": "event"},
         items="items.parquet")

Timestamps may be integer or float seconds, ISO-8601 strings or dates (naive values are taken as UTC), or
Parquet timestamp / date columns; all become int64 seconds (see `trainer.data.readers.common`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trainer.data.readers.base import CHUNK_ROWS, RawLog
from trainer.data.readers.common import (
    READ_ERRORS,
    CsvSource,
    as_id_strings,
    check_columns,
    check_present,
    coalesce,
    convert,
    csv_chunks,
    csv_header,
    event_batch,
    first_per_key,
    one_line,
    require_file,
    to_float32,
    to_seconds,
    unit_seconds,
)
from trainer.errors import ConfigError, DataError

DEFAULT_COLUMNS = {
    "user": "user",
    "item": "item",
    "timestamp": "timestamp",
    "rating": "rating",
    "action": "action",
}
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".csv.bz2")  # a file passed directly may have any name


def read(
    path: Path,
    *,
    columns: dict[str, str] | None = None,
    delimiter: str | None = None,
    items: str | Path | None = None,
    users: str | Path | None = None,
) -> RawLog:
    """Read a CSV / Parquet event log (a file or a folder of files).

    Args:
        path: a file, or a folder whose CSV / Parquet files are read in name order.
        columns: our column name -> source column name; ``user``, ``item``, ``timestamp`` default to the same
            names, ``rating`` / ``action`` are used when present (or required when named here).
        delimiter: CSV delimiter (default ``,``; ``\\t`` for ``.tsv``).
        items / users: side-feature CSV / Parquet files; the ``item`` / ``user`` column (else the first
            column) is the key, the other columns are features.
    """
    if delimiter is not None and len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}")
    files = _event_files(Path(path))
    mapping = _mapping(columns)
    explicit = set(columns or ())
    present = _columns_of(files[0], delimiter)
    wanted = {
        ours: theirs
        for ours, theirs in mapping.items()
        if ours in explicit or theirs in present or ours in ("user", "item", "timestamp")
    }
    for file in files:
        check_columns(_columns_of(file, delimiter), wanted.values(), file)

    def events() -> Iterator[pa.RecordBatch]:
        for file in files:
            yield from coalesce(_file_events(file, wanted, delimiter))

    item_features = _side_table(Path(items), "item", delimiter) if items is not None else None
    user_features = _side_table(Path(users), "user", delimiter) if users is not None else None
    side = [Path(p) for p in (items, users) if p is not None]
    return RawLog("events", files + side, events, item_features, user_features)


def _mapping(columns: dict[str, str] | None) -> dict[str, str]:
    unknown = set(columns or ()) - set(DEFAULT_COLUMNS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in columns: {', '.join(sorted(unknown))}; allowed: {', '.join(DEFAULT_COLUMNS)}"
        )
    return {**DEFAULT_COLUMNS, **(columns or {})}


def _is_parquet(file: Path) -> bool:
    return file.name.lower().endswith(PARQUET_SUFFIXES)


def _event_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)
        )
        if not files:
            raise DataError(
                f"no event files ({', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}) in folder", file=path
            )
        return [require_file(f, "event file") for f in files]
    return [require_file(path, "event file")]


def _csv_source(file: Path, delimiter: str | None, include: Iterable[str] | None = None) -> CsvSource:
    tab = file.name.lower().endswith((".tsv", ".tsv.gz"))
    sep = delimiter or ("\t" if tab else ",")
    return CsvSource(file, delimiter=sep, include=tuple(include) if include is not None else None)


def _parquet(file: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(file)
    except READ_ERRORS as exc:
        raise DataError(f"not a readable Parquet file: {one_line(exc)}", file=file) from None


def _columns_of(file: Path, delimiter: str | None) -> list[str]:
    if _is_parquet(file):
        return _parquet(file).schema_arrow.names
    return csv_header(_csv_source(file, delimiter))


def _raw_chunks(file: Path, names: list[str], delimiter: str | None) -> Iterator[tuple[int, pa.RecordBatch]]:
    if not _is_parquet(file):
        yield from csv_chunks(_csv_source(file, delimiter, names))
        return
    offset = 0
    try:
        for batch in _parquet(file).iter_batches(batch_size=CHUNK_ROWS, columns=names):
            yield offset, batch
            offset += batch.num_rows
    except READ_ERRORS as exc:
        raise DataError(
            f"corrupt Parquet data after {offset} data rows: {one_line(exc)}", file=file
        ) from None


def _file_events(file: Path, wanted: dict[str, str], delimiter: str | None) -> Iterator[pa.RecordBatch]:
    names = list(dict.fromkeys(wanted.values()))
    for offset, batch in _raw_chunks(file, names, delimiter):
        col = {ours: batch.column(theirs) for ours, theirs in wanted.items()}
        for ours in ("user", "item"):
            col[ours] = as_id_strings(col[ours])
            check_present(col[ours], file=file, offset=offset, field=wanted[ours])
        timestamp = to_seconds(col["timestamp"], file=file, offset=offset, field=wanted["timestamp"])
        rating = col.get("rating")
        if rating is not None:
            rating = convert(
                rating,
                to_float32,
                file=file,
                offset=offset,
                field=wanted["rating"],
                what="rating is not a number",
            )
        action = as_id_strings(col["action"]) if "action" in col else None
        yield event_batch(col["user"], col["item"], timestamp, rating, action)


def _side_table(path: Path, key: str, delimiter: str | None) -> pa.Table:
    """A side-feature table keyed by ``key`` (string); other columns normalised to string / list / numeric."""
    require_file(path, f"{key} feature file")
    try:
        if _is_parquet(path):
            table = pq.read_table(path)
        else:
            src = _csv_source(path, delimiter)
            header = csv_header(src)
            source = header[header.index(key)] if key in header else header[0]
            convert_options = pacsv.ConvertOptions(column_types={source: pa.string()})
            table = pacsv.read_csv(
                path,
                parse_options=pacsv.ParseOptions(delimiter=src.delimiter),
                convert_options=convert_options,
            )
    except READ_ERRORS as exc:
        raise DataError(f"cannot read the feature table: {one_line(exc)}", file=path) from None
    source = key if key in table.column_names else table.column_names[0]
    table = table.rename_columns([key if name == source else name for name in table.column_names])
    features = {key: as_id_strings(table[key].combine_chunks())}
    check_present(features[key], file=path, offset=0, field=source)
    for name in table.column_names:
        if name != key:
            features[name] = _feature_column(table[name].combine_chunks(), path, name)
    return first_per_key(pa.table(features), key)


def _feature_column(values: pa.Array, file: Path, name: str) -> pa.Array:
    """Normalise to the kinds `prepare` encodes: string, list<string>, or numeric."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _feature_column(values.dictionary_decode(), file, name)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return values
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return unit_seconds(values)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pc.cast(values, pa.list_(pa.string()))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_boolean(kind):
        return pc.cast(values, pa.string())
    raise DataError(f"unsupported feature type {kind}", file=file, field=name)
