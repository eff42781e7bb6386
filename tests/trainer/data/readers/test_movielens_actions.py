"""MovieLens ratings mapped to actions, with impressions labelled by action (real ML-100K)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trainer.data import schema
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.readers.movielens_actions import parse_actions
from trainer.errors import ConfigError, DataError


def test_ml100k_ratings_become_actions_and_labels(shared_data: Path, tmp_path: Path) -> None:
    manifest = prepare(PrepareConfig(format="movielens-actions", input=shared_data / "movielens-100k",
                                     output=tmp_path / "ds", split="time", valid_frac=0.1, test_frac=0.1,
                                     short_users="drop"))
    counts = manifest.counts
    # ML-100K's rating histogram: 6,110 ones, 11,370 twos, 27,145 threes, 34,174 fours, 21,201 fives
    assert counts["events_read"] == 100_000 and sorted(manifest.actions) == ["dislike", "like", "neutral"]
    kept = counts["impressions"]
    assert kept + counts["impressions_dropped"] == 100_000
    imp = pq.read_table(tmp_path / "ds" / schema.IMPRESSIONS)
    labels = np.stack([imp[n].to_numpy() for n in ("dislike", "neutral", "like")])
    assert (labels.sum(0) == 1).all(), "every rating is exactly one action"
    seq = pq.read_table(tmp_path / "ds" / schema.SEQUENCES, columns=["actions"])
    actions = np.array(manifest.actions)[seq["actions"].combine_chunks().values.to_numpy()]
    assert (actions == "like").sum() == imp["like"].to_numpy().sum() == counts["impressions_like"]


def test_the_mapping_is_configurable_and_checked(shared_data: Path, tmp_path: Path) -> None:
    assert parse_actions("0.5-2.5:dislike, 3-5:like") == [(0.5, 2.5, "dislike"), (3.0, 5.0, "like")]
    with pytest.raises(ConfigError, match="RATING"):
        parse_actions("4-2:like")
    with pytest.raises(DataError, match=r"field 'rating': rating 3.0 is in no actions range"):
        prepare(PrepareConfig(format="movielens-actions", input=shared_data / "movielens-100k",
                              output=tmp_path / "bad", reader_options={"actions": "1-2:dislike,4-5:like"}))
    assert not (tmp_path / "bad").exists()
