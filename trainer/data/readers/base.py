"""What every reader hands to `prepare`: a `RawLog` of streamed event chunks plus side-feature tables.

Event chunks are ``pyarrow.RecordBatch`` es with these columns (`EVENT_SCHEMA` order; optional ones may be absent):

* ``user`` string -- raw user id, exactly as in the source (unicode allowed).
* ``item`` string -- raw item id.
* ``timestamp`` int64 -- seconds (or any monotone int64; formats without time use the input line number).
* ``rating`` float32 -- optional explicit rating.
* ``action`` string -- optional behaviour type ("view", "cart", "purchase", ...).

Chunks arrive in input order; `prepare` keeps that order as the tie-break for equal timestamps, so readers must
never reorder. Readers are streaming and vectorised (pyarrow CSV/JSON readers, numpy), never a Python loop per
row, and raise `trainer.errors.DataError` naming the file, the row (1-based data row) and the field.

Side features are small ``pyarrow.Table`` s keyed by ``item`` / ``user`` (string) with feature columns of these
kinds, which `prepare` encodes: string -> categorical code, list<string> -> multi-valued codes, numeric ->
quantile bucket.

Impression logs (ranking data) also hand over ``impressions``: a table with ``user``, ``item`` (strings),
``timestamp`` int64 (the request time, same unit as the events) and one 0/1 label column per feedback signal;
`trainer.data.impressions` writes it as ``impressions.parquet``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa

EVENT_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
        ("action", pa.string()),
    ]
)
REQUIRED_EVENT_COLUMNS = ("user", "item", "timestamp")
CHUNK_ROWS = 1 << 20


@dataclasses.dataclass
class RawLog:
    """A raw interaction log, ready for `prepare`.

    Args:
        format: reader name (``"sasrec"``, ``"movielens"``, ...), recorded in the manifest.
        files: every input file read, for checksums in the manifest.
        events: returns a *fresh* iterator of event chunks each time it is called (prepare may stream twice).
        item_features: ``item`` string column + feature columns, or None.
        user_features: ``user`` string column + feature columns, or None.
        impressions: returns the impression table (see the module docstring), or None for plain event logs.
    """

    format: str
    files: list[Path]
    events: Callable[[], Iterator[pa.RecordBatch]]
    item_features: pa.Table | None = None
    user_features: pa.Table | None = None
    impressions: Callable[[], pa.Table] | None = None


def sha256_file(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
