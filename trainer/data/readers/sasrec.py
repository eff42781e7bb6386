"""SASRec text logs (format ``sasrec``): ``user item`` per line, each user's lines in time order.

The files carry no time, so the timestamp is the 0-based data line number: it keeps the file's order, which
is the only order there is. ``path`` is the ``.txt`` file or a folder holding exactly one ``.txt`` file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from trainer.data.readers.base import RawLog
from trainer.data.readers.common import (
    CsvSource,
    check_present,
    coalesce,
    csv_chunks,
    event_batch,
    require_file,
)
from trainer.errors import DataError


def read(path: Path) -> RawLog:
    """Read a SASRec ``user item`` file (ids kept as strings) into a `RawLog`."""
    file = text_file(Path(path))
    src = CsvSource(file, delimiter=" ", column_names=("user", "item"), quoted=False)

    def events() -> Iterator[pa.RecordBatch]:
        return coalesce(_events(src))

    return RawLog("sasrec", [file], events)


def text_file(path: Path) -> Path:
    """The ``.txt`` file itself, or the only ``.txt`` file in a folder."""
    if not path.is_dir():
        return require_file(path, "SASRec .txt file")
    found = sorted(path.glob("*.txt"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(
            f"expected exactly one .txt file in the folder, found: {names}; pass the file path", file=path
        )
    return require_file(found[0], "SASRec .txt file")


def _events(src: CsvSource) -> Iterator[pa.RecordBatch]:
    for offset, batch in csv_chunks(src):
        user, item = batch.column(0), batch.column(1)
        check_present(user, file=src.path, offset=offset, field="user")
        check_present(item, file=src.path, offset=offset, field="item")
        line = pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
        yield event_batch(user, item, line)
