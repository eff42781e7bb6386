"""S3-Rec text logs (format ``s3rec``): one user per line, ``user item1 item2 ...`` in time order.

An optional ``<Name>_item2attributes.json`` next to ``<Name>.txt`` (``{"item": [attr, ...]}``) becomes the
item feature ``attributes`` (list<string>). There is no time in the files: the timestamp is the running event
index, which keeps every user's order. Lines are split vectorised (one string column per line, split on
whitespace).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer.data.readers.base import RawLog
from trainer.data.readers.common import (
    CsvSource,
    check_present,
    coalesce,
    csv_chunks,
    estimate_block_size,
    event_batch,
    first_per_key,
)
from trainer.data.readers.sasrec import text_file
from trainer.errors import DataError

# A byte that never occurs in these files, so each line parses as one column; splitting is done by us.
_NO_DELIMITER = "\x1f"


def read(path: Path, *, attributes: str | Path | None = None) -> RawLog:
    """Read an S3-Rec file (a ``.txt`` file or a folder with one) and its item attributes when present.

    Args:
        path: the ``.txt`` file, or the folder holding it.
        attributes: the attribute JSON; default ``<Name>_item2attributes.json`` beside the text file, if any.
    """
    file = text_file(Path(path))
    attr_file = (
        Path(attributes) if attributes is not None else file.with_name(f"{file.stem}_item2attributes.json")
    )
    if attributes is not None and not attr_file.is_file():
        raise DataError("attribute file not found", file=attr_file)
    src = CsvSource(file, delimiter=_NO_DELIMITER, column_names=("line",), quoted=False)
    # Size blocks by events (ids), not lines: a line holds a whole user.
    src = dataclasses.replace(src, block_size=estimate_block_size(src.head(), separators=b" \t\n"))

    def events() -> Iterator[pa.RecordBatch]:
        return coalesce(_events(src))

    item_features = read_attributes(attr_file) if attr_file.is_file() else None
    files = [file, attr_file] if item_features is not None else [file]
    return RawLog("s3rec", files, events, item_features=item_features)


def _events(src: CsvSource) -> Iterator[pa.RecordBatch]:
    position = 0  # events before this chunk: the running timestamp
    for offset, batch in csv_chunks(src):
        tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(batch.column(0)))
        user = pc.list_element(tokens, 0)
        check_present(user, file=src.path, offset=offset, field="user")
        items = pc.list_slice(tokens, 1)
        item = pc.list_flatten(items)
        user = user.take(pc.list_parent_indices(items))
        timestamp = pa.array(np.arange(position, position + len(item), dtype=np.int64))
        position += len(item)
        yield event_batch(user, item, timestamp)


def read_attributes(path: Path) -> pa.Table:
    """``{"item": [attr, ...]}`` as a table ``item`` string, ``attributes`` list<string>."""
    try:
        with open(path, encoding="utf8") as handle:
            mapping = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable JSON object: {exc}", file=path) from None
    if not isinstance(mapping, dict):
        raise DataError("expected a JSON object {item: [attribute, ...]}", file=path)
    try:
        # C-level conversion of the whole dict; a non-list value fails here.
        values = pa.array(list(mapping.values()))
        attributes = pc.cast(values, pa.list_(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"every value must be a list of attribute ids: {exc}", file=path, field="attributes"
        ) from None
    table = pa.table({"item": pa.array(list(mapping.keys()), pa.string()), "attributes": attributes})
    return first_per_key(table, "item")
