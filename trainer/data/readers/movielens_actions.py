"""MovieLens as multi-behaviour ranking data (format ``movielens-actions``): ratings mapped to actions.

Reads any MovieLens layout with `trainer.data.readers.movielens` and maps each rating to an action name with
``--option actions=1-2:dislike,3:neutral,4-5:like`` (the default; inclusive rating ranges, half stars allowed:
``0.5-2.5:dislike,3-3.5:neutral,4-5:like``). Every rating becomes

* an event of the user's sequence with that action, and
* an impression (the movie was shown and rated) with one 0/1 label per action name (``like``, ``dislike``, ...),

so a ranker predicts, from the history of rated movies and how they were rated, whether the user will like the
next one. A rating outside every range is an error naming the row and the field.

Example: ``seqrec prepare --format movielens-actions ../shared/data/movielens-100k data/ml100k-actions
--option actions=1-2:dislike,3:neutral,4-5:like``
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trainer.data.readers import movielens
from trainer.data.readers.base import RawLog
from trainer.errors import ConfigError, DataError

DEFAULT_ACTIONS = "1-2:dislike,3:neutral,4-5:like"


def parse_actions(spec: str) -> list[tuple[float, float, str]]:
    """``"1-2:dislike,3:neutral"`` -> ``[(1, 2, "dislike"), (3, 3, "neutral")]`` (ranges inclusive)."""
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        bounds, sep, name = part.partition(":")
        lo, _, hi = bounds.partition("-")
        try:
            low, high = float(lo), float(hi or lo)
        except ValueError:
            raise ConfigError(f"actions: {part!r} is not RATING[-RATING]:NAME") from None
        if not sep or not name or high < low:
            raise ConfigError(f"actions: {part!r} is not RATING[-RATING]:NAME with low <= high")
        out.append((low, high, name))
    if not out:
        raise ConfigError("actions: give at least one RATING[-RATING]:NAME range")
    return out


def read(path: str | Path, actions: str = DEFAULT_ACTIONS, **options: Any) -> RawLog:
    """MovieLens with an ``action`` per rating and impressions labelled by action (module docstring)."""
    if options:
        raise ConfigError(f"the movielens-actions format takes only the 'actions' option (got {sorted(options)})")
    ranges = parse_actions(actions)
    base = movielens.read(Path(path))
    names = list(dict.fromkeys(name for _, _, name in ranges))

    def events() -> Iterator[pa.RecordBatch]:
        first_row = 1
        for batch in base.events():
            codes = _codes(batch.column("rating").to_numpy(zero_copy_only=False), ranges, names, base.files[0],
                           first_row)
            first_row += batch.num_rows
            action = pa.array(np.array(names, dtype=object)[codes].tolist(), pa.string())
            yield pa.RecordBatch.from_arrays([*batch.columns, action], names=[*batch.schema.names, "action"])

    def impressions() -> pa.Table:
        table = pa.Table.from_batches(list(events()))
        action = table.column("action").to_numpy(zero_copy_only=False)
        labels = {name: pa.array((action == name).astype(np.int8)) for name in names}
        return pa.table({"user": table.column("user"), "item": table.column("item"),
                         "timestamp": table.column("timestamp"), **labels})

    return RawLog("movielens-actions", base.files, events, base.item_features, base.user_features, impressions)


def _codes(ratings: np.ndarray, ranges: list[tuple[float, float, str]], names: list[str], source: Path,
           first_row: int) -> np.ndarray:
    codes = np.full(len(ratings), -1, dtype=np.int64)
    for low, high, name in ranges:
        codes[(codes < 0) & (ratings >= low) & (ratings <= high)] = names.index(name)
    if (codes < 0).any():
        row = int(np.flatnonzero(codes < 0)[0])
        raise DataError(f"rating {ratings[row]} is in no actions range", file=source, row=first_row + row,
                        field="rating")
    return codes
