"""Where `prepare` keeps the encoded events between passes, and how it streams them.

Small logs stay in memory as one partition (`MemoryStore`); past the spill threshold the events go to user-hash
Parquet partitions in a temporary folder (`DiskStore`), each small enough to sort and filter on its own.
`Cursor` reads a user-sorted partition block by block for the final write, and `prefetch` runs the reader in a
background thread so parsing overlaps encoding.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Spill files are written and read back a few times: plain encoding, no compression, no statistics.
SPILL_ROW_GROUP = 1 << 16
SPILL_WRITE = {"compression": "none", "use_dictionary": False, "write_statistics": False}

Columns = dict[str, np.ndarray]  # compact event columns: user int32, item int32, ts int64, optional action int8


class MemoryStore:
    """The whole log as one in-memory partition (inputs below the spill threshold)."""

    partitions = 1

    def __init__(self) -> None:
        self._chunks: list[Columns] = []
        self._data: Columns | None = None
        self.size = 0

    def append(self, cols: Columns) -> None:
        self._chunks.append(cols)
        self.size += len(cols["user"])

    def chunks(self) -> list[Columns]:
        return self._chunks

    def get(self, part: int, names: tuple[str, ...] | None = None) -> Columns:
        if self._data is None:
            keys = self._chunks[0].keys() if self._chunks else ("user", "item", "ts")
            self._data = {k: np.concatenate([c[k] for c in self._chunks]) if self._chunks else _empty(k)
                          for k in keys}
            self._chunks = []
        return dict(self._data) if names is None else {k: self._data[k] for k in names}

    def put(self, part: int, cols: Columns) -> None:
        self._data = cols

    def batches(self, part: int) -> Iterator[Columns]:
        yield self.get(part)

    def close(self) -> None:
        self._data = None


class DiskStore:
    """User-hash partitions as Parquet files in a temporary folder: each partition is processed on its own."""

    def __init__(self, folder: Path, partitions: int, has_actions: bool) -> None:
        self.folder, self.partitions = folder, partitions
        folder.mkdir()
        fields = [("user", pa.int32()), ("item", pa.int32()), ("ts", pa.int64())]
        self.schema = pa.schema(fields + ([("action", pa.int8())] if has_actions else []))
        self._writers = [pq.ParquetWriter(self._path(p), self.schema, **SPILL_WRITE) for p in range(partitions)]

    def _path(self, part: int) -> Path:
        return self.folder / f"part-{part:05d}.parquet"

    def append(self, cols: Columns) -> None:
        part = (cols["user"] % self.partitions).astype(np.uint16)
        order = np.argsort(part, kind="stable")  # stable: keeps input order inside each partition
        ends = np.cumsum(np.bincount(part, minlength=self.partitions))
        cols = {k: v[order] for k, v in cols.items()}
        for p, (start, end) in enumerate(zip(np.r_[0, ends[:-1]], ends)):
            if end > start:
                self._writers[p].write_table(_table({k: v[start:end] for k, v in cols.items()}, self.schema))

    def finish_appends(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []

    def get(self, part: int, names: tuple[str, ...] | None = None) -> Columns:
        table = pq.read_table(self._path(part), columns=list(names) if names else None)
        return {name: table[name].to_numpy() for name in table.column_names}

    def put(self, part: int, cols: Columns) -> None:
        tmp = self._path(part).with_suffix(".new")
        pq.write_table(_table(cols, self.schema), tmp, row_group_size=SPILL_ROW_GROUP, **SPILL_WRITE)
        os.replace(tmp, self._path(part))

    def batches(self, part: int) -> Iterator[Columns]:
        # One row group at a time, no pre-buffering: all partitions are read side by side when writing.
        file = pq.ParquetFile(self._path(part), pre_buffer=False)
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, use_threads=False)
            yield {name: table[name].to_numpy() for name in table.column_names}

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


def _table(cols: Columns, table_schema: pa.Schema) -> pa.Table:
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in table_schema}, schema=table_schema)


def _empty(name: str) -> np.ndarray:
    return np.empty(0, {"user": np.int32, "item": np.int32, "ts": np.int64, "action": np.int8}[name])


class Cursor:
    """Reads a user-sorted partition block by block (all rows of users up to a given code)."""

    def __init__(self, batches: Iterator[Columns]) -> None:
        self._batches, self._buffer = batches, None

    def take_until(self, last_user: int) -> list[Columns]:
        pieces = []
        while True:
            if self._buffer is None:
                self._buffer = next(self._batches, None)
                if self._buffer is None:
                    return pieces
            cut = int(np.searchsorted(self._buffer["user"], last_user, side="right"))
            pieces.append({k: v[:cut] for k, v in self._buffer.items()})
            if cut < len(self._buffer["user"]):
                self._buffer = {k: v[cut:] for k, v in self._buffer.items()}
                return pieces
            self._buffer = None


def prefetch(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Pull the reader's chunks in a background thread: parsing (pyarrow, GIL released) overlaps encoding.

    Reader exceptions are re-raised here, in order; stopping early tells the thread to stop after its chunk.
    """
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for batch in batches:
                if not put((True, batch)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer thread, re-raised there
            put((False, exc))

    thread = threading.Thread(target=pull, name="prepare-reader", daemon=True)
    thread.start()
    try:
        while True:
            ok, value = slots.get()
            if ok:
                yield value
            elif value is None:
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()
