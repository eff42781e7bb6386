"""Taobao UserBehavior (format ``taobao``): pv / cart / fav / buy events, with page views as impressions.

The CSV has no header: ``user_id,item_id,category_id,behavior_type,timestamp`` (seconds). Every event becomes an
event of the user's sequence with its behaviour as the action (``pv``, ``cart``, ``fav``, ``buy``); the item's
``category_id`` is its side feature. The log has no impressions or negatives, so every page view is taken as an
impression of its item and labelled by what followed: ``cart`` / ``fav`` / ``buy`` = 1 when the same user
carted / favourited / bought that item at the time of the view or later in the log (post-view conversion). A
ranker then predicts, from the history, which viewed items convert.

Example: ``seqrec prepare --format taobao ../shared/data/taobao-userbehavior-814 data/taobao --split time
--valid-frac 0.15 --test-frac 0.15 --short-users drop``
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

COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIOURS = ("pv", "cart", "fav", "buy")
LABELS = ("cart", "fav", "buy")


def read(path: str | Path, **options: Any) -> RawLog:
    """Open the UserBehavior CSV (or the folder holding one ``*.csv``)."""
    if options:
        raise ConfigError(f"the taobao format takes no reader options (got {sorted(options)})")
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if len(files) != 1:
        raise DataError(f"expected one UserBehavior .csv, found {len(files)}", file=path)
    table = _read(files[0])
    events = pa.table({"user": table["user_id"], "item": table["item_id"], "timestamp": table["timestamp"],
                       "action": table["behavior_type"]})
    items = pa.table({"item": table["item_id"], "category": table["category_id"]})
    items = items.take(np.unique(items["item"].to_numpy(zero_copy_only=False), return_index=True)[1])
    return RawLog("taobao", files, lambda: iter(events.to_batches()), item_features=items,
                  impressions=lambda: post_view_impressions(events))


def _read(path: Path) -> pa.Table:
    types = {"user_id": pa.string(), "item_id": pa.string(), "category_id": pa.string(),
             "behavior_type": pa.string(), "timestamp": pa.int64()}
    try:
        table = csv.read_csv(path, read_options=csv.ReadOptions(column_names=list(COLUMNS)),
                             convert_options=csv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as exc:
        raise DataError(f"not a UserBehavior CSV {list(COLUMNS)} ({str(exc).splitlines()[0]})", file=path) from exc
    for name in COLUMNS:
        if table[name].null_count:
            row = int(np.flatnonzero(table[name].is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError("missing value", file=path, row=row + 1, field=name)
    known = pc.is_in(table["behavior_type"], value_set=pa.array(BEHAVIOURS)).to_numpy(zero_copy_only=False)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise DataError(f"unknown behaviour {table['behavior_type'][row].as_py()!r} (expected one of "
                        f"{list(BEHAVIOURS)})", file=path, row=row + 1, field="behavior_type")
    return table


def post_view_impressions(events: pa.Table) -> pa.Table:
    """One impression per page view, labelled 1 per behaviour the user did on that item at or after the view."""
    pair = pc.binary_join_element_wise(events["user"], events["item"], "\x1f")
    _, key = np.unique(pair.to_numpy(zero_copy_only=False), return_inverse=True)
    action = events["action"].to_numpy(zero_copy_only=False)
    ts = events["timestamp"].to_numpy()
    view = action == "pv"
    labels = {}
    for name in LABELS:
        last = np.full(key.max() + 1, np.iinfo(np.int64).min)
        hit = action == name
        np.maximum.at(last, key[hit], ts[hit])
        labels[name] = pa.array((last[key[view]] >= ts[view]).astype(np.int8))
    return pa.table({"user": events["user"].filter(pa.array(view)), "item": events["item"].filter(pa.array(view)),
                     "timestamp": pa.array(ts[view]), **labels})
