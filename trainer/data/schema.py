"""The dataset-folder contract (DESIGN.md), shared by `prepare`, `synth` and every reader of a dataset.

A dataset folder holds:

* ``manifest.json`` -- see `Manifest`.
* ``items.parquet`` -- ``item_idx`` int32 (1..N, row i has item_idx i+1; **0 is padding**), ``raw_id`` string,
  ``popularity`` int64 (count of the item in the *train* part of all sequences), then categorical features as
  int32 codes (0 = unknown) or list<int32> for multi-valued ones.
* ``users.parquet`` -- ``user_idx`` int32 (0..U-1, equal to the row in sequences.parquet), ``raw_id`` string,
  then user features (same encoding as item features).
* ``sequences.parquet`` -- one row per user, ordered by ``user_idx``: ``user_idx`` int32, ``items``
  list<int32>, ``timestamps`` list<int64>, optional ``actions`` list<int8>, and the split as positions:
  ``train_end`` int32 and ``valid_end`` int32. ``items[:train_end]`` is the training part,
  ``items[train_end:valid_end]`` are validation targets, ``items[valid_end:]`` test targets. Leave-one-out
  gives ``train_end = n - 2``, ``valid_end = n - 1``. Row groups hold `row_group_users(U)` users so ranks and
  loader workers can stream disjoint row groups.
* ``impressions.parquet`` (optional, ranking data) -- one row per shown item, ordered by (``user_idx``, time):
  `IMPRESSION_SCHEMA` (``hist_end``: the user's history is ``items[:hist_end]``, the events strictly before the
  request; ``split``: 0 train, 1 valid, 2 test, by the same time cuts or positions as the sequences), then one
  int8 0/1 label column per feedback signal (``click``, ``like``, ...).

Everything is written into a temporary sibling folder and renamed into place at the end (`atomic_output_dir`),
so a failed run never leaves a half-written dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from trainer.errors import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.parquet"
USERS = "users.parquet"
SEQUENCES = "sequences.parquet"
IMPRESSIONS = "impressions.parquet"
ROW_GROUP_USERS = 8192
MIN_ROW_GROUPS = 64
MIN_ROW_GROUP_USERS = 32
PADDING_IDX = 0

SEQUENCE_SCHEMA = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("items", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.int64())),
        ("train_end", pa.int32()),
        ("valid_end", pa.int32()),
    ]
)
ACTIONS_FIELD = pa.field("actions", pa.list_(pa.int8()))
IMPRESSION_SCHEMA = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("item_idx", pa.int32()),
        ("timestamp", pa.int64()),
        ("hist_end", pa.int32()),
        ("split", pa.int8()),
    ]
)


def row_group_users(num_users: int) -> int:
    """Users per row group: at most `ROW_GROUP_USERS`, but small enough that even a small dataset has about
    `MIN_ROW_GROUPS` row groups, since row groups are the unit ranks and loader workers divide between them."""
    return int(min(ROW_GROUP_USERS, max(MIN_ROW_GROUP_USERS, -(-num_users // MIN_ROW_GROUPS))))


@dataclasses.dataclass
class Manifest:
    """Everything a consumer needs to know about a dataset folder without reading the Parquet files.

    Args:
        format_version: `FORMAT_VERSION` of the writer; readers refuse other versions.
        source: ``{"format": ..., "files": {name: sha256}, ...}`` what the data came from.
        counts: ``{"users", "items", "interactions", "train_interactions", ...}``.
        filters: the filters applied and what each removed, e.g. ``{"min_rating": 4, "kcore": 5, ...}``.
        split: ``{"policy": "leave_one_out" | "time", ...}`` (time cuts as int64 timestamps).
        features: ``{"items": {name: {"kind": "categorical"|"multi"|"bucket", "cardinality": int}}, "users": ...}``.
            ``cardinality`` counts codes including 0 (unknown), i.e. the embedding table size.
        actions: action names by int8 code (``["view", "cart", "purchase"]``), empty if none.
        created: ISO-8601 UTC timestamp.
        lineage: for a version derived from another dataset folder (`trainer.data.versions`): ``{"version",
            "parent", "items_kept", "history"}``; empty for a folder made by `prepare` or `synth` (version 1).
    """

    format_version: int
    source: dict[str, Any]
    counts: dict[str, int]
    filters: dict[str, Any]
    split: dict[str, Any]
    features: dict[str, dict[str, dict[str, Any]]] = dataclasses.field(
        default_factory=lambda: {"items": {}, "users": {}}
    )
    actions: list[str] = dataclasses.field(default_factory=list)
    created: str = ""
    lineage: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_items(self) -> int:
        """Number of real items; embedding tables need ``num_items + 1`` rows (row 0 is padding)."""
        return int(self.counts["items"])

    @property
    def num_users(self) -> int:
        return int(self.counts["users"])

    def write(self, folder: str | Path) -> None:
        """Write ``manifest.json`` into ``folder``."""
        path = Path(folder) / MANIFEST
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")


def read_manifest(folder: str | Path) -> Manifest:
    """Read and validate a dataset folder's manifest; a clear `DataError` if it is missing or of another version."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise DataError("dataset folder does not exist (create it with `seqrec prepare`; for a synthetic one, `seqrec synth --output RAW` then `seqrec prepare --format synthetic RAW DATASET`)", file=folder)
    if not path.is_file():
        raise DataError("no manifest.json: not a seqrec dataset folder", file=folder)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at line {exc.lineno})", file=path) from exc
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"dataset format version {version!r} is not supported (this seqrec reads version {FORMAT_VERSION}); "
            "re-run `seqrec prepare`",
            file=path,
            field="format_version",
        )
    known = {f.name for f in dataclasses.fields(Manifest)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(f"unknown keys {unknown}", file=path)
    return Manifest(**raw)


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; rename it to ``target`` only if the block succeeds.

    On any exception the temporary folder is deleted and ``target`` is untouched, so a failed run leaves
    nothing half-written. An existing ``target`` is an error unless ``overwrite`` is set.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise DataError("output folder already exists (pass --overwrite to replace it)", file=target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)
