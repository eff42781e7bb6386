"""Where `seqrec recommend` reads histories from, cut into chunks that any process can read on its own.

Three sources, each a list of `Chunk`s (small, picklable descriptions) plus a reader that turns one chunk into
``(user ids, item indices, lengths)``, so memory stays bounded by one chunk and chunks can be scored by several
processes in any order:

* every user of a dataset folder: consecutive row groups of ``sequences.parquet`` holding at least
  `CHUNK_USERS` users per chunk (more users per chunk: batches of more similar lengths); the history is the whole
  sequence (``split=all``), or the input of the test / validation targets (``split=test|valid``, exactly what
  ``seqrec evaluate`` feeds the model);
* a file of raw user ids (one per line): the same row groups, keeping only those users;
* a file of histories (chunks of `CHUNK_USERS` lines or rows), ``.jsonl`` (``{"user": "u1", "history": ["i1", "i2"]}`` per line, ``user`` optional) or
  ``.parquet`` (columns ``user`` string and ``history`` list of raw item ids): raw item ids are mapped through the
  artefact's id map, unknown ones dropped and counted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data.schema import SEQUENCES, USERS
from trainer.errors import DataError

SPLITS = ("all", "test", "valid")
CHUNK_USERS = 2048


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One unit of work: row groups ``row_groups`` of a Parquet file, or lines from byte ``start`` to ``stop``."""

    index: int
    row_groups: tuple[int, ...] = ()
    start: int = 0
    stop: int = 0
    first_line: int = 1


@dataclasses.dataclass
class Histories:
    """One chunk's histories: raw user ids ``(U,)``, item indices ``values (T,) int64`` (1..N), ``lengths (U,)``."""

    users: pa.Array
    values: np.ndarray
    lengths: np.ndarray
    unknown: int = 0


@dataclasses.dataclass(frozen=True)
class Source:
    """What to read (picklable, so worker processes rebuild the reader themselves)."""

    dataset: Path
    split: str = "all"
    users: Path | None = None
    histories: Path | None = None
    chunk_users: int = CHUNK_USERS

    def describe(self) -> dict[str, str]:
        """The settings that decide the output and its chunks (compared on resume)."""
        return {"dataset": str(self.dataset), "split": self.split, "users": str(self.users or ""),
                "histories": str(self.histories or ""), "chunk_users": str(self.chunk_users)}


def plan(source: Source) -> tuple[list[Chunk], int]:
    """The chunks of ``source`` and how many users they hold in all (for the progress bar)."""
    if source.histories is not None:
        path = source.histories
        if not path.is_file():
            raise DataError("histories file does not exist", file=path)
        if path.suffix == ".parquet":
            return _row_group_chunks(path, source.chunk_users), pq.ParquetFile(path).metadata.num_rows
        return _jsonl_chunks(path, source.chunk_users)
    meta = pq.ParquetFile(source.dataset / SEQUENCES).metadata
    chunks = _row_group_chunks(source.dataset / SEQUENCES, source.chunk_users)
    wanted = _wanted_users(source)
    return chunks, meta.num_rows if wanted is None else len(wanted)


def _row_group_chunks(path: Path, chunk_users: int) -> list[Chunk]:
    """Consecutive row groups of ``path`` with at least ``chunk_users`` rows each (the last one may hold fewer)."""
    meta = pq.ParquetFile(path).metadata
    chunks, group, rows = [], [], 0
    for i in range(meta.num_row_groups):
        group.append(i)
        rows += meta.row_group(i).num_rows
        if rows >= chunk_users:
            chunks.append(Chunk(len(chunks), row_groups=tuple(group)))
            group, rows = [], 0
    if group:
        chunks.append(Chunk(len(chunks), row_groups=tuple(group)))
    return chunks


def _jsonl_chunks(path: Path, lines_per_chunk: int) -> tuple[list[Chunk], int]:
    """Byte ranges of ``lines_per_chunk`` non-empty lines each (one pass, no line kept in memory)."""
    chunks, start, count, lines, total, line_no, first = [], 0, 0, 0, 0, 0, 1
    with open(path, "rb") as f:
        for raw in f:
            line_no += 1
            if raw.strip():
                count, total = count + 1, total + 1
            lines += len(raw)
            if count == lines_per_chunk:
                chunks.append(Chunk(len(chunks), start=start, stop=start + lines, first_line=first))
                start, lines, count, first = start + lines, 0, 0, line_no + 1
    if count:
        chunks.append(Chunk(len(chunks), start=start, stop=start + lines, first_line=first))
    return chunks, total


def _wanted_users(source: Source) -> np.ndarray | None:
    """Sorted ``user_idx`` of the ``--users`` file (None = every user); an unknown id names its line."""
    if source.users is None:
        return None
    if not source.users.is_file():
        raise DataError("user id file does not exist", file=source.users)
    raw = [line.strip() for line in source.users.read_text().splitlines()]
    table = pq.read_table(source.dataset / USERS, columns=["user_idx", "raw_id"])
    index = pc.index_in(pa.array(raw, pa.string()), value_set=table.column("raw_id").combine_chunks())
    missing = [i for i, (r, x) in enumerate(zip(raw, index.to_pylist())) if x is None and r]
    if missing:
        line = missing[0] + 1
        raise DataError(f"user {raw[missing[0]]!r} is not in {source.dataset / USERS}", file=source.users, row=line)
    found = index.filter(pc.is_valid(index)).to_numpy()
    return np.unique(table.column("user_idx").to_numpy()[found].astype(np.int64))


class Reader:
    """Reads one chunk of a `Source` (built once per process)."""

    def __init__(self, source: Source, raw_item_ids: pa.Array) -> None:
        self.source = source
        self.item_ids = raw_item_ids
        self.wanted = _wanted_users(source)
        self.user_raw: pa.Array | None = None
        if source.histories is None:
            table = pq.read_table(source.dataset / USERS, columns=["user_idx", "raw_id"])
            order = np.argsort(table.column("user_idx").to_numpy(), kind="stable")
            self.user_raw = table.column("raw_id").combine_chunks().take(pa.array(order))

    def read(self, chunk: Chunk) -> Histories:
        """The histories of ``chunk``."""
        if self.source.histories is None:
            return self._dataset_chunk(chunk)
        if self.source.histories.suffix == ".parquet":
            table = pq.ParquetFile(self.source.histories).read_row_groups(list(chunk.row_groups))
            return self._raw_histories(table, self.source.histories, first_row=None)
        return self._raw_histories(_read_jsonl(self.source.histories, chunk), self.source.histories, chunk.first_line)

    def _dataset_chunk(self, chunk: Chunk) -> Histories:
        columns = ["user_idx", "items", "train_end", "valid_end"]
        table = pq.ParquetFile(self.source.dataset / SEQUENCES).read_row_groups(list(chunk.row_groups), columns=columns)
        user_idx = table.column("user_idx").to_numpy().astype(np.int64)
        if self.wanted is not None:
            keep = np.isin(user_idx, self.wanted)
            table, user_idx = table.filter(pa.array(keep)), user_idx[keep]
        items = table.column("items").combine_chunks()
        offsets = items.offsets.to_numpy().astype(np.int64)
        full = np.diff(offsets)
        ends = {"all": full, "test": table.column("valid_end").to_numpy(), "valid": table.column("train_end").to_numpy()}
        lengths = np.minimum(ends[self.source.split].astype(np.int64), full)
        flat = items.values.to_numpy().astype(np.int64)[offsets[0] : offsets[-1]]
        position = np.arange(len(flat)) - np.repeat(offsets[:-1] - offsets[0], full)
        values = flat[position < np.repeat(lengths, full)]
        return Histories(self.user_raw.take(pa.array(user_idx)), values, lengths)

    def _raw_histories(self, table: pa.Table, path: Path, first_row: int | None) -> Histories:
        """Map a table with ``history`` (list of raw ids) and optional ``user`` to item indices."""
        if "history" not in table.column_names:
            raise DataError("no 'history' column (a list of raw item ids per user)", file=path, field="history")
        history = table.column("history").combine_chunks()
        if not pa.types.is_list(history.type) and not pa.types.is_large_list(history.type):
            raise DataError(f"'history' must be a list of item ids, got {history.type}", file=path, field="history")
        raw = pc.cast(history.flatten(), pa.string())
        index = pc.index_in(raw, value_set=self.item_ids)
        known = pc.is_valid(index).to_numpy(zero_copy_only=False)
        rows = np.repeat(np.arange(len(history)), np.diff(history.offsets.to_numpy()))
        lengths = np.bincount(rows[known], minlength=len(history)).astype(np.int64)
        values = index.filter(pc.is_valid(index)).to_numpy().astype(np.int64) + 1
        if "user" in table.column_names:
            users = pc.cast(table.column("user").combine_chunks(), pa.string())
        else:  # no ids given: the line (JSONL) or row (Parquet, chunk-local) number
            base = first_row or 0
            users = pa.array([str(base + i) for i in range(len(history))], pa.string())
        return Histories(users, values, lengths, unknown=int((~known).sum()))


def _read_jsonl(path: Path, chunk: Chunk) -> pa.Table:
    """Lines ``chunk.start:chunk.stop`` of a JSON-lines file as a table; a bad line is named by its number."""
    users: list[str | None] = []
    histories: list[list[str]] = []
    with open(path, "rb") as f:
        f.seek(chunk.start)
        text = f.read(chunk.stop - chunk.start).decode("utf-8", errors="replace")
    for offset, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        row = chunk.first_line + offset
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", file=path, row=row) from None
        history = record.get("history") if isinstance(record, dict) else None
        if not isinstance(history, list):
            raise DataError("expected an object with a 'history' list of item ids", file=path, row=row,
                            field="history")
        users.append(str(record["user"]) if "user" in record else str(row))
        histories.append([str(x) for x in history])
    return pa.table({"user": pa.array(users, pa.string()), "history": pa.array(histories, pa.list_(pa.string()))})
