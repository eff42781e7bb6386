"""Taobao UserBehavior (real 814-user prefix): behaviours as actions, page views as impressions labelled by
what the user did on the item afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainer.data import schema
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.readers.taobao import post_view_impressions


def test_counts_match_the_readme(shared_data: Path, tmp_path: Path) -> None:
    manifest = prepare(PrepareConfig(format="taobao", input=shared_data / "taobao-userbehavior-814",
                                     output=tmp_path / "tb", split="time", valid_cut=1512172800,
                                     test_cut=1512259200, short_users="drop"))
    counts = manifest.counts
    # README: 84,287 events, 814 users, 55,233 items, pv 75,693
    assert (counts["interactions"], counts["users"], counts["items"]) == (84_287, 814, 55_233)
    assert counts["impressions"] == 75_693 and sorted(manifest.actions) == ["buy", "cart", "fav", "pv"]
    imp = pq.read_table(tmp_path / "tb" / schema.IMPRESSIONS)
    assert set(np.unique(imp["split"].to_numpy())) == {0, 1, 2}


def test_post_view_labels_by_hand() -> None:
    events = pa.table({"user": ["u", "u", "u", "u", "v"], "item": ["a", "a", "b", "a", "a"],
                       "timestamp": [1, 2, 3, 5, 4], "action": ["pv", "cart", "pv", "pv", "buy"]})
    imp = post_view_impressions(events)
    assert imp["item"].to_pylist() == ["a", "b", "a"] and imp["timestamp"].to_pylist() == [1, 3, 5]
    assert imp["cart"].to_pylist() == [1, 0, 0]  # carted at 2: after the first view of a, before the second
    assert imp["buy"].to_pylist() == [0, 0, 0]  # the buy of a was another user's
