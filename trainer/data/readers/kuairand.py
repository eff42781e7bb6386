"""Reader for KuaiRand-Pure (format name ``kuairand``): an exposure log of short videos, one row per impression.

The folder holds ``log_standard_*.csv`` (``user_id, video_id, time_ms, is_click, long_view, is_like, is_follow,
...``), ``user_features_pure.csv`` and ``video_features_basic_pure.csv`` (see its README). Every impression
becomes

* an event of the user's sequence (``timestamp`` = ``time_ms // 1000`` seconds) whose ``action`` is its
  strongest signal in `ACTION_PRIORITY` (``skip`` when it was shown and not clicked: a negative behaviour the
  sequence keeps, as TransAct keeps hides);
* an impression with one 0/1 label per signal in `LABELS` (``click``, ``long_view``, ``like``, ``follow``, ...).

Side features: every user and video column is categorical (ids, ranges, one-hot codes) except the counts and
durations in `NUMERIC`, which prepare buckets.

Example: ``seqrec prepare --format kuairand ../shared/data/kuairand-pure-14d data/kuairand --split time
--valid-frac 0.143 --test-frac 0.143 --short-users drop``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from trainer.data.readers.base import RawLog
from trainer.errors import ConfigError, DataError

# label name -> log column
LABELS = {"click": "is_click", "long_view": "long_view", "like": "is_like", "follow": "is_follow",
          "comment": "is_comment", "forward": "is_forward", "hate": "is_hate", "profile_enter": "is_profile_enter"}
# the action of an event: its first signal in this order (rarest and strongest first); none of them = "skip"
ACTION_PRIORITY = ("hate", "follow", "like", "forward", "comment", "profile_enter", "long_view", "click")
NUMERIC = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days", "video_duration",
           "server_width", "server_height")
USER_FILE, VIDEO_FILE = "user_features_pure.csv", "video_features_basic_pure.csv"


def read(path: str | Path, **options: Any) -> RawLog:
    """Open a KuaiRand-Pure folder (or its ``log_standard_*.csv``); the log is small enough to read whole."""
    if options:
        raise ConfigError(f"the kuairand format takes no reader options (got {sorted(options)})")
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    logs = sorted(folder.glob("log_standard_*.csv")) if path.is_dir() else [path]
    if not logs:
        raise DataError("no log_standard_*.csv in the folder", file=folder)
    table = pa.concat_tables([_read_log(p) for p in logs])
    events, impressions = _split_log(table)
    side = {name: folder / name for name in (USER_FILE, VIDEO_FILE) if (folder / name).is_file()}
    return RawLog(
        format="kuairand",
        files=logs + list(side.values()),
        events=lambda: iter(events.to_batches()),
        item_features=_side(side.get(VIDEO_FILE), "video_id", "item"),
        user_features=_side(side.get(USER_FILE), "user_id", "user"),
        impressions=lambda: impressions,
    )


def _read_log(path: Path) -> pa.Table:
    needed = ["user_id", "video_id", "time_ms", *LABELS.values()]
    try:
        table = csv.read_csv(path, convert_options=csv.ConvertOptions(include_columns=needed))
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(f"not a KuaiRand log with columns {needed} ({exc})", file=path) from exc
    for name in needed:
        if table.column(name).null_count:
            row = int(np.flatnonzero(table.column(name).is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError("missing value", file=path, row=row + 1, field=name)
    return table


def _split_log(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(events with actions, impressions with labels) of the same rows, in input order."""
    user = table.column("user_id").cast(pa.string())
    item = table.column("video_id").cast(pa.string())
    seconds = pc.divide(table.column("time_ms").cast(pa.int64()), 1000)
    labels = {name: table.column(column).to_numpy().astype(np.int8) for name, column in LABELS.items()}
    names = np.array([*ACTION_PRIORITY, "skip"], dtype=object)
    first = np.full(len(table), len(ACTION_PRIORITY), dtype=np.int64)
    for code in range(len(ACTION_PRIORITY) - 1, -1, -1):  # the highest-priority signal wins
        first[labels[ACTION_PRIORITY[code]] > 0] = code
    events = pa.table({"user": user, "item": item, "timestamp": seconds,
                       "action": pa.array(names[first].tolist(), pa.string())})
    impressions = pa.table({"user": user, "item": item, "timestamp": seconds,
                            **{name: pa.array(values) for name, values in labels.items()}})
    return events, impressions


def _side(path: Path | None, key: str, name: str) -> pa.Table | None:
    """A side table keyed by ``name``: numeric columns in `NUMERIC` stay numbers, the rest become strings."""
    if path is None:
        return None
    table = csv.read_csv(path)
    columns = {name: table.column(key).cast(pa.string())}
    for column in table.column_names:
        if column == key or column == "upload_dt":
            continue
        values = table.column(column)
        columns[column] = values.cast(pa.float64()) if column in NUMERIC else values.cast(pa.string())
    return pa.table(columns)
