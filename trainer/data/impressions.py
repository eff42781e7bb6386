"""Write ``impressions.parquet`` (ranking data) into a dataset folder whose other files are already written.

An impression is one shown item: (raw user, raw item, request time, 0/1 labels). `write_impressions` maps raw ids
through the folder's own ``users.parquet`` / ``items.parquet`` (impressions of users or items the filters removed
are dropped and counted), finds each request's history end in ``sequences.parquet`` (the events *strictly
before* the request time, so no label leaks into its own history) and assigns the split: by the time cuts of a
time split, else by history position (an impression after the user's validation events is test, and so on).
Vectorised with numpy; `prepare` calls it on its temporary folder, so a failure leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data import schema
from trainer.errors import DataError

REQUIRED = ("user", "item", "timestamp")
ROW_GROUP_ROWS = 8192


def write_impressions(folder: Path, table: pa.Table, cuts: tuple[int, int] | None, source: str) -> dict[str, int]:
    """Write ``folder/impressions.parquet`` from ``table``; returns the counts for the manifest."""
    labels = _label_columns(table, source)
    user_idx = _map_ids(table.column("user"), pq.read_table(folder / schema.USERS, columns=["raw_id"]).column(0))
    item_idx = _map_ids(table.column("item"), pq.read_table(folder / schema.ITEMS, columns=["raw_id"]).column(0))
    keep = (user_idx >= 0) & (item_idx >= 0)
    ts = _not_null(table.column("timestamp"), source, "timestamp").astype(np.int64)
    user_idx, item_idx, ts = user_idx[keep], item_idx[keep] + 1, ts[keep]
    labels = {name: values[keep] for name, values in labels.items()}
    seq = pq.read_table(folder / schema.SEQUENCES, columns=["timestamps", "train_end", "valid_end"])
    hist_end = history_ends(seq.column("timestamps"), user_idx, ts)
    if cuts is not None:
        split = (ts >= cuts[0]).astype(np.int8) + (ts >= cuts[1])
    else:
        train_end, valid_end = (seq.column(c).to_numpy()[user_idx] for c in ("train_end", "valid_end"))
        split = (hist_end >= train_end).astype(np.int8) + (hist_end >= valid_end)
    order = np.lexsort((ts, user_idx))  # stable: equal (user, time) keep input order
    columns = {"user_idx": user_idx.astype(np.int32), "item_idx": item_idx.astype(np.int32), "timestamp": ts,
               "hist_end": hist_end.astype(np.int32), "split": split.astype(np.int8), **labels}
    out = pa.table({name: pa.array(values[order]) for name, values in columns.items()})
    pq.write_table(out, folder / schema.IMPRESSIONS, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    per_split = np.bincount(split, minlength=3)
    return {"impressions": int(len(out)), "impressions_dropped": int((~keep).sum()),
            "impressions_train": int(per_split[0]), "impressions_valid": int(per_split[1]),
            "impressions_test": int(per_split[2]),
            **{f"impressions_{name}": int(values.sum()) for name, values in labels.items()}}


def history_ends(timestamps: pa.ChunkedArray, user_idx: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Per impression: how many of the user's (time-sorted) sequence events happened strictly before ``ts``."""
    array = timestamps.combine_chunks()
    offsets, values = array.offsets.to_numpy().astype(np.int64), array.values.to_numpy().astype(np.int64)
    # one sorted key over (user, time): time replaced by its rank among every time value seen
    _, rank = np.unique(np.concatenate([values, ts]), return_inverse=True)
    width = int(rank.max()) + 2 if len(rank) else 1
    owner = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    seq_key = owner * width + rank[: len(values)]
    imp_key = user_idx.astype(np.int64) * width + rank[len(values):]
    return np.searchsorted(seq_key, imp_key, side="left") - offsets[user_idx]


def read_label_names(folder: str | Path) -> list[str]:
    """Label columns of a dataset folder's ``impressions.parquet`` (empty when it has none)."""
    path = Path(folder) / schema.IMPRESSIONS
    if not path.is_file():
        return []
    return [name for name in pq.read_schema(path).names if name not in schema.IMPRESSION_SCHEMA.names]


def _label_columns(table: pa.Table, source: str) -> dict[str, np.ndarray]:
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise DataError(f"impressions lack columns {missing}", file=source)
    labels = {}
    for name in table.column_names:
        if name in REQUIRED:
            continue
        values = _not_null(table.column(name), source, name)
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"label must be 0 or 1, got {values[row]}", file=source, row=row + 1, field=name)
        labels[name] = values.astype(np.int8)
    if not labels:
        raise DataError("impressions carry no label column", file=source)
    return labels


def _not_null(column: pa.ChunkedArray, source: str, name: str) -> np.ndarray:
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError("missing value", file=source, row=row + 1, field=name)
    return column.to_numpy()


def _map_ids(raw: pa.ChunkedArray, vocabulary: pa.ChunkedArray) -> np.ndarray:
    """Row of each raw id in ``vocabulary`` (-1 when absent: filtered out by prepare)."""
    index = pc.index_in(raw.cast(pa.string()), value_set=vocabulary.combine_chunks())
    return index.fill_null(-1).to_numpy().astype(np.int64)
