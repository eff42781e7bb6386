"""Reader for the raw log folder written by ``seqrec synth`` (format name ``synthetic``).

The folder holds:

* ``events.parquet`` -- ``user`` string, ``item`` string, ``timestamp`` int64, ``action`` string in
  `ACTIONS`; users are contiguous and each user's events are in time order.
* ``items.parquet`` -- ``item`` string, ``category`` string, ``price`` float64 (item side features).
* ``users.parquet`` -- ``user`` string, ``age`` float64, ``country`` string (user side features).
* ``impressions.parquet`` (with ``--impressions``) -- ``user``, ``item``, ``timestamp`` and 0/1 ``view``,
  ``cart``, ``purchase`` labels of every shown item (`trainer.data.synth_impressions`).
* ``synth.json`` -- the generator's parameters, seed and counts (checksummed with the rest, not parsed here).

The file names and schemas are defined here, so the generator (`trainer.data.synth`) and this reader cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data.readers.base import CHUNK_ROWS, RawLog
from trainer.errors import ConfigError, DataError

EVENTS_FILE = "events.parquet"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
META_FILE = "synth.json"
IMPRESSIONS_FILE = "impressions.parquet"
ACTIONS = ("view", "cart", "purchase")

EVENTS_SCHEMA = pa.schema(
    [("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64()), ("action", pa.string())]
)
ITEMS_SCHEMA = pa.schema([("item", pa.string()), ("category", pa.string()), ("price", pa.float64())])
USERS_SCHEMA = pa.schema([("user", pa.string()), ("age", pa.float64()), ("country", pa.string())])
IMPRESSIONS_SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64()),
                                ("view", pa.int8()), ("cart", pa.int8()), ("purchase", pa.int8())])
# Columns that must never be null: the ids and the time (action is checked against `ACTIONS`).
_NOT_NULL = ("user", "item", "timestamp")


def read(path: str | Path, **options: Any) -> RawLog:
    """Open a folder written by ``seqrec synth``; events stream in chunks of `CHUNK_ROWS` rows, in file order."""
    if options:
        raise ConfigError(f"the synthetic format takes no reader options (got {sorted(options)})")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError("not a folder (expected the output folder of `seqrec synth`)", file=folder)
    events = folder / EVENTS_FILE
    if not events.is_file():
        raise DataError(f"missing {EVENTS_FILE}: not a folder written by `seqrec synth`", file=folder)
    _check_schema(events, EVENTS_SCHEMA)
    impressions = folder / IMPRESSIONS_FILE
    files = [p for p in (events, folder / ITEMS_FILE, folder / USERS_FILE, folder / META_FILE, impressions)
             if p.is_file()]
    if impressions.is_file():
        _check_schema(impressions, IMPRESSIONS_SCHEMA)
    return RawLog(
        format="synthetic",
        files=files,
        events=lambda: _iter_events(events),
        item_features=_read_side(folder / ITEMS_FILE, ITEMS_SCHEMA),
        user_features=_read_side(folder / USERS_FILE, USERS_SCHEMA),
        impressions=(lambda: pq.read_table(impressions).cast(IMPRESSIONS_SCHEMA)) if impressions.is_file() else None,
    )


def _check_schema(path: Path, schema: pa.Schema) -> None:
    """Fail early, naming the column, if ``path`` lacks a column of ``schema`` or holds one that cannot be cast."""
    try:
        actual = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", file=path) from exc
    for field in schema:
        index = actual.get_field_index(field.name)
        if index < 0:
            raise DataError(f"missing column (found {actual.names})", file=path, field=field.name)
        found = actual.field(index).type
        if found != field.type and not _castable(found, field.type):
            raise DataError(f"column has type {found}, expected {field.type}", file=path, field=field.name)


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    try:
        pa.array([], type=source).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _read_side(path: Path, schema: pa.Schema) -> pa.Table | None:
    """A side-feature table with exactly ``schema``'s columns, or None when the file is absent."""
    if not path.is_file():
        return None
    _check_schema(path, schema)
    return pq.read_table(path, columns=schema.names).cast(schema)


def _iter_events(path: Path) -> Iterator[pa.RecordBatch]:
    """Stream ``events.parquet`` as `EVENTS_SCHEMA` batches, checking nulls and action names per batch."""
    valid_actions = pa.array(ACTIONS)
    first_row = 1  # 1-based data row of the batch's first row, for error messages
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=EVENTS_SCHEMA.names):
        if batch.schema != EVENTS_SCHEMA:
            batch = batch.cast(EVENTS_SCHEMA)
        for name in _NOT_NULL:
            column = batch.column(name)
            if column.null_count:
                bad = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError("missing value", file=path, row=first_row + bad, field=name)
        known = pc.is_in(batch.column("action"), value_set=valid_actions).to_numpy(zero_copy_only=False)
        if not known.all():
            bad = int(np.flatnonzero(~known)[0])
            value = batch.column("action")[bad].as_py()
            raise DataError(
                f"unknown action {value!r} (expected one of {list(ACTIONS)})",
                file=path,
                row=first_row + bad,
                field="action",
            )
        first_row += batch.num_rows
        yield batch
