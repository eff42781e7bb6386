"""Dataset versions: read a dataset folder as flat events, and write a new version of it next to the old one.

`seqrec prepare --append-to` (trainer.data.append) and `seqrec forget` (trainer.data.forget) both derive a new
dataset folder from an existing one; the old folder is never modified, so runs trained on it stay reproducible.
A derived version keeps the item indices of its parent (row i of items.parquet is the same raw item in both:
only new items are added at the end), which is what lets a checkpoint trained on the parent be fine-tuned on
the child (`trainer.growth`). Its manifest's ``lineage`` records the version number, the parent folder and the
checksum of the parent's manifest, how many items and users keep their index, and the history of operations
(``append`` with the new log's checksums; ``forget`` with the number of users removed, never their ids).

Everything here works on whole columns in memory (numpy/pyarrow, no per-row Python): about 30 bytes per event,
e.g. ~3 GB for 100M events.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data import schema
from trainer.data.schema import Manifest, atomic_output_dir, read_manifest
from trainer.errors import DataError

LOO_MIN_EVENTS = 3  # = prepare.LOO_MIN_EVENTS (a leave-one-out user needs a train item, a valid and a test target)


@dataclasses.dataclass
class Events:
    """All events of a dataset version, sorted by (user, time, input order).

    Args:
        user: (E,) int64 user index 0..U-1. item: (E,) int32 item index 1..N. ts: (E,) int64 seconds.
        action: (E,) int8 action codes, or None when the dataset has no actions.
    """

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    action: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Events:
        """The events at ``index`` (a mask or positions), in that order."""
        action = None if self.action is None else self.action[index]
        return Events(self.user[index], self.item[index], self.ts[index], action)

    @staticmethod
    def concat(first: Events, second: Events) -> Events:
        """``first`` then ``second`` (both must agree on having actions)."""
        action = None if first.action is None else np.concatenate([first.action, second.action])
        return Events(np.concatenate([first.user, second.user]), np.concatenate([first.item, second.item]),
                      np.concatenate([first.ts, second.ts]), action)


@dataclasses.dataclass
class Version:
    """One dataset folder in memory: its manifest, side tables and events."""

    path: Path
    manifest: Manifest
    items: pa.Table
    users: pa.Table
    events: Events


def read_version(folder: str | Path) -> Version:
    """Load a dataset folder (manifest, items, users, flattened sequences)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    tables = {}
    for name in (schema.ITEMS, schema.USERS, schema.SEQUENCES):
        if not (folder / name).is_file():
            raise DataError(f"missing {name}: not a complete dataset folder", file=folder)
        tables[name] = pq.read_table(folder / name)
    seq = tables[schema.SEQUENCES]
    lengths = pc.list_value_length(seq["items"]).to_numpy().astype(np.int64)
    user = np.repeat(seq["user_idx"].to_numpy().astype(np.int64), lengths)
    item = pc.list_flatten(seq["items"]).to_numpy().astype(np.int32)
    ts = pc.list_flatten(seq["timestamps"]).to_numpy().astype(np.int64)
    action = None
    if "actions" in seq.column_names:
        action = pc.list_flatten(seq["actions"]).to_numpy().astype(np.int8)
    return Version(folder, manifest, tables[schema.ITEMS], tables[schema.USERS], Events(user, item, ts, action))


def sort_events(events: Events) -> Events:
    """Sort by (user, time), stably: events of equal time keep their order (parent's events before new ones)."""
    return events.take(np.lexsort((events.ts, events.user)))


# ------------------------------------------------------------------------------------------------ splits


def split_positions(events: Events, num_users: int, cuts: tuple[int, int] | None) -> tuple[np.ndarray, ...]:
    """Per-user ``length``, ``train_end``, ``valid_end`` (leave-one-out when ``cuts`` is None)."""
    length = np.bincount(events.user, minlength=num_users).astype(np.int64)
    if cuts is None:
        return length, length - 2, length - 1
    train_end = np.bincount(events.user[events.ts < cuts[0]], minlength=num_users).astype(np.int64)
    valid_end = np.bincount(events.user[events.ts < cuts[1]], minlength=num_users).astype(np.int64)
    return length, train_end, valid_end


def short_users(length: np.ndarray, train_end: np.ndarray, cuts: tuple[int, int] | None) -> np.ndarray:
    """Mask of users too short for the split (leave-one-out: < 3 events; time: nothing before the valid cut)."""
    return train_end < 1 if cuts is not None else length < LOO_MIN_EVENTS


def cuts_of(split: dict[str, Any]) -> tuple[int, int] | None:
    """The time cuts recorded in a manifest's split (None for leave-one-out)."""
    return None if split["policy"] == "leave_one_out" else (int(split["valid_cut"]), int(split["test_cut"]))


# ----------------------------------------------------------------------------------------------- writing


@dataclasses.dataclass
class NewVersion:
    """What a derived version consists of, before it is written.

    Args:
        parent: the version it derives from.
        items / users: side tables of the new version (``item_idx`` 1..N, ``user_idx`` 0..U-1 in row order);
            ``popularity`` is recomputed on writing.
        events: sorted events over those indices (every user has at least one).
        split: the manifest's split entry (``cuts_of`` gives the cuts used).
        operation: lineage entry of this step, e.g. ``{"operation": "append", ...}``.
        counts: extra manifest counts (what the step added or removed).
        source: the manifest's source entry.
        actions: action names by code.
        features: the manifest's feature specs (default: the parent's).
    """

    parent: Version
    items: pa.Table
    users: pa.Table
    events: Events
    split: dict[str, Any]
    operation: dict[str, Any]
    counts: dict[str, int]
    source: dict[str, Any]
    actions: list[str]
    features: dict[str, dict[str, dict[str, Any]]] | None = None


def write_version(new: NewVersion, output: str | Path, overwrite: bool = False) -> Manifest:
    """Write ``new`` into the dataset folder ``output`` atomically (a temporary sibling renamed at the end)."""
    num_users, num_items = new.users.num_rows, new.items.num_rows
    length, train_end, valid_end = split_positions(new.events, num_users, cuts_of(new.split))
    if (length == 0).any():
        raise ValueError("every user of a dataset version needs at least one event")
    in_train = np.arange(len(new.events.user)) - np.repeat(np.cumsum(length) - length, length) < np.repeat(
        train_end, length)
    popularity = np.bincount(new.events.item[in_train], minlength=num_items + 1)[1:].astype(np.int64)
    items = new.items.set_column(new.items.schema.get_field_index("popularity"), "popularity", pa.array(popularity))
    manifest = Manifest(
        format_version=schema.FORMAT_VERSION, source=new.source,
        counts={"users": num_users, "items": num_items, "interactions": int(length.sum()),
                "train_interactions": int(train_end.sum()), "valid_targets": int((valid_end - train_end).sum()),
                "test_targets": int((length - valid_end).sum()), **new.counts},
        filters=new.parent.manifest.filters, split=new.split, features=new.features or new.parent.manifest.features,
        actions=new.actions, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        lineage=_lineage(new.parent, new.operation),
    )
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        _write_sequences(tmp / schema.SEQUENCES, new.events, length, train_end, valid_end)
        pq.write_table(items, tmp / schema.ITEMS)
        pq.write_table(new.users, tmp / schema.USERS)
        manifest.write(tmp)
    return manifest


def _write_sequences(path: Path, events: Events, length: np.ndarray, train_end: np.ndarray,
                     valid_end: np.ndarray) -> None:
    """sequences.parquet with the same schema, row groups and encoding as `seqrec prepare` writes."""
    table_schema = schema.SEQUENCE_SCHEMA
    if events.action is not None:
        table_schema = table_schema.insert(3, schema.ACTIONS_FIELD)
    offsets = pa.array(np.r_[0, np.cumsum(length)].astype(np.int32))
    arrays = {
        "user_idx": pa.array(np.arange(len(length), dtype=np.int32)),
        "items": pa.ListArray.from_arrays(offsets, pa.array(events.item.astype(np.int32))),
        "timestamps": pa.ListArray.from_arrays(offsets, pa.array(events.ts.astype(np.int64))),
        "train_end": pa.array(train_end.astype(np.int32)),
        "valid_end": pa.array(valid_end.astype(np.int32)),
    }
    if events.action is not None:
        arrays["actions"] = pa.ListArray.from_arrays(offsets, pa.array(events.action.astype(np.int8)))
    table = pa.table(arrays, schema=table_schema)
    pq.write_table(table, path, row_group_size=schema.row_group_users(len(length)), use_dictionary=False,
                   compression="zstd", compression_level=1)


def _lineage(parent: Version, operation: dict[str, Any]) -> dict[str, Any]:
    previous = parent.manifest.lineage or {"version": 1, "history": []}
    digest = hashlib.sha256((parent.path / schema.MANIFEST).read_bytes()).hexdigest()
    return {
        "version": int(previous["version"]) + 1,
        "parent": {"path": str(parent.path), "manifest_sha256": digest, "version": int(previous["version"])},
        "items_kept": parent.manifest.num_items if operation.get("items_kept") is None else operation["items_kept"],
        "history": [*previous["history"], operation],
    }


def default_output(folder: str | Path) -> Path:
    """``<folder>-v<N>``: the sibling folder for version N of the dataset ``folder`` (N = its version + 1)."""
    folder = Path(folder)
    lineage = read_manifest(folder).lineage or {"version": 1}
    base = folder.name.rsplit("-v", 1)[0] if folder.name.rsplit("-v", 1)[-1].isdigit() else folder.name
    return folder.with_name(f"{base}-v{int(lineage['version']) + 1}")


def new_rows(table: pa.Table, raw_ids: pa.Array, first_index: int, key: str,
             features: dict[str, pa.Array] | None = None) -> pa.Table:
    """Rows for new ids of a side table: index ``first_index``.., their raw ids, and the given feature columns
    (`trainer.data.version_features`); every other feature is unknown (0)."""
    count = len(raw_ids)
    columns = {}
    for field in table.schema:
        if field.name == key:
            columns[key] = pa.array(np.arange(first_index, first_index + count), field.type)
        elif field.name == "raw_id":
            columns["raw_id"] = raw_ids.cast(field.type)
        elif features and field.name in features:
            columns[field.name] = features[field.name].cast(field.type)
        elif pa.types.is_list(field.type):
            columns[field.name] = pa.array([[0]] * count, field.type)
        else:
            columns[field.name] = pa.array(np.zeros(count), field.type)
    return pa.table(columns, schema=table.schema)
