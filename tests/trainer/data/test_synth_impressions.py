"""`seqrec synth --impressions`: what was shown at each event, with labels that depend on the recent history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from trainer.data.readers.synthetic import EVENTS_FILE, IMPRESSIONS_FILE, ITEMS_FILE
from trainer.data.synth import SynthConfig, generate


def _generate(root: Path, impressions: int) -> Path:
    generate(SynthConfig(users=300, items=150, categories=6, seed=9, mean_length=10, max_length=40,
                         impressions=impressions), root, progress=False)
    return root


def test_events_do_not_change_and_every_event_has_its_impressions(tmp_path: Path) -> None:
    plain, shown = _generate(tmp_path / "plain", 0), _generate(tmp_path / "shown", 3)
    assert not (plain / IMPRESSIONS_FILE).exists()
    events = pq.read_table(shown / EVENTS_FILE)
    assert events.equals(pq.read_table(plain / EVENTS_FILE))
    imp = pq.read_table(shown / IMPRESSIONS_FILE)
    assert imp.num_rows == 4 * events.num_rows
    first = imp.take(np.arange(0, imp.num_rows, 4))  # the engaged item comes first at each request
    assert first["item"].equals(events["item"]) and first["timestamp"].equals(events["timestamp"])
    assert (first["view"].to_numpy() == 1).all()
    assert ((first["cart"].to_numpy() == 1) == np.isin(events["action"].to_numpy(zero_copy_only=False),
                                                        ["cart", "purchase"])).all()
    purchase, cart = imp["purchase"].to_numpy(), imp["cart"].to_numpy()
    assert (purchase <= cart).all() and (cart <= imp["view"].to_numpy()).all()


def test_shown_items_in_the_recent_interest_get_viewed_more(tmp_path: Path) -> None:
    root = _generate(tmp_path / "shown", 3)
    items = pq.read_table(root / ITEMS_FILE)
    category = dict(zip(items["item"].to_pylist(), items["category"].to_pylist()))
    imp = pq.read_table(root / IMPRESSIONS_FILE)
    cats = np.array([category[i] for i in imp["item"].to_pylist()])
    users = np.array(imp["user"].to_pylist())
    engaged = cats[::4]  # the category of each request's engaged item
    previous = np.r_[engaged[:1], engaged[:-1]]  # of the user's event before it (same user: checked below)
    same_user = np.r_[False, users[::4][1:] == users[::4][:-1]]
    shown = np.arange(imp.num_rows) % 4 != 0
    request = np.arange(imp.num_rows) // 4
    in_recent = (cats == previous[request]) & same_user[request] & shown
    other = ~(cats == previous[request]) & same_user[request] & shown
    view = imp["view"].to_numpy()
    assert view[in_recent].mean() > 2 * view[other].mean()  # the history predicts what gets engaged with
