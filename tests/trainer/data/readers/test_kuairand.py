"""KuaiRand-Pure through `seqrec prepare`: impressions with labels, histories strictly before each request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.data import schema
from trainer.data.impressions import history_ends, read_label_names
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.readers.kuairand import LABELS
from trainer.errors import DataError


@pytest.fixture(scope="module")
def kuairand(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kuairand") / "ds"
    prepare(PrepareConfig(format="kuairand", input=shared_data / "kuairand-pure-14d", output=out, split="time",
                          valid_frac=0.143, test_frac=0.143, short_users="drop"))
    return out


def test_counts_match_the_readme(kuairand: Path) -> None:
    counts = schema.read_manifest(kuairand).counts
    # README: 228,329 impressions, 100,900 clicks; users without an event before the validation cut are dropped
    assert counts["events_read"] == 228_329
    assert counts["impressions"] + counts["impressions_dropped"] == 228_329
    assert counts["impressions"] == counts["interactions"]  # every impression is also an event of a sequence
    assert 0.43 < counts["impressions_click"] / counts["impressions"] < 0.45
    assert read_label_names(kuairand) == list(LABELS)


def test_history_ends_strictly_before_the_request(kuairand: Path) -> None:
    imp = pq.read_table(kuairand / schema.IMPRESSIONS)
    seq = pq.read_table(kuairand / schema.SEQUENCES, columns=["timestamps", "actions"])
    stamps = seq["timestamps"].combine_chunks()
    offsets, times = stamps.offsets.to_numpy(), stamps.values.to_numpy()
    user, end, ts = (imp[c].to_numpy().astype(np.int64) for c in ("user_idx", "hist_end", "timestamp"))
    before = offsets[user] + end - 1
    has = end > 0
    assert (times[before[has]] < ts[has]).all(), "an event at or after the request leaked into its history"
    after = offsets[user] + end
    assert (times[after] >= ts).all(), "an earlier event was left out of the history"
    split, cuts = imp["split"].to_numpy(), schema.read_manifest(kuairand).split
    assert ts[split == 0].max() < cuts["valid_cut"] <= ts[split == 1].min()
    assert ts[split == 1].max() < cuts["test_cut"] <= ts[split == 2].min()


def test_actions_are_the_strongest_signal(kuairand: Path) -> None:
    manifest = schema.read_manifest(kuairand)
    imp = pq.read_table(kuairand / schema.IMPRESSIONS)
    seq = pq.read_table(kuairand / schema.SEQUENCES, columns=["actions"])
    actions = np.array(manifest.actions)[seq["actions"].combine_chunks().values.to_numpy()]
    # impressions and events are the same rows; with no tie-break ambiguity the counts agree per signal
    assert (actions == "skip").sum() == (imp["click"].to_numpy() == 0).sum() - _clickless_signals(imp)
    assert (actions == "follow").sum() == ((imp["follow"].to_numpy() == 1) & (imp["hate"].to_numpy() == 0)).sum()


def _clickless_signals(imp: pa.Table) -> int:
    """Impressions without a click but with another signal (their action is that signal, not skip)."""
    other = np.zeros(imp.num_rows, bool)
    for name in LABELS:
        if name != "click":
            other |= imp[name].to_numpy() == 1
    return int((other & (imp["click"].to_numpy() == 0)).sum())


def test_history_ends_by_hand() -> None:
    stamps = pa.chunked_array([pa.array([[10, 20, 20, 30], [], [5]], pa.list_(pa.int64()))])
    ends = history_ends(stamps, np.array([0, 0, 0, 1, 2, 2]), np.array([20, 21, 5, 7, 5, 6]))
    assert ends.tolist() == [1, 3, 0, 0, 0, 1]


def test_a_bad_label_names_the_row_and_field(tmp_path: Path) -> None:
    from trainer.data.impressions import _label_columns

    table = pa.table({"user": ["a", "b"], "item": ["x", "y"], "timestamp": [1, 2], "click": [0, 3]})
    with pytest.raises(DataError, match=r"row 2, field 'click': label must be 0 or 1"):
        _label_columns(table, "log.csv")
