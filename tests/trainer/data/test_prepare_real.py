"""`seqrec prepare` on the real public datasets: the published counts, split targets and side features."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from trainer.data import schema
from trainer.data.inspect import inspect_dataset
from trainer.data.prepare import PrepareConfig, prepare


def test_sasrec_ml_1m(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "sasrec-ml-1m" / "ml-1m.txt"
    manifest = prepare(PrepareConfig(format="sasrec", input=source, output=tmp_path / "ml-1m"))
    counts = manifest.counts
    assert (counts["users"], counts["items"], counts["interactions"]) == (6040, 3416, 999_611)
    assert counts["test_targets"] == counts["valid_targets"] == 6040
    assert counts["train_interactions"] == 999_611 - 2 * 6040
    assert manifest.source["files"]["ml-1m.txt"]["sha256"] == (
        "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2")
    seq = pq.read_table(tmp_path / "ml-1m" / schema.SEQUENCES)
    lengths = pc.list_value_length(seq["items"])
    assert pc.min(lengths).as_py() == 18 and pc.max(lengths).as_py() == 2277  # README: min 18, max 2,277
    assert pc.all(pc.equal(seq["valid_end"], pc.subtract(lengths, 1))).as_py()
    users = pq.read_table(tmp_path / "ml-1m" / schema.USERS)
    assert users["raw_id"][0].as_py() == "1"  # lines are grouped by user 1..6040: first appearance = file order
    summary = inspect_dataset(tmp_path / "ml-1m")
    assert summary["popularity"]["train_interactions"] == counts["train_interactions"]


def test_s3rec_beauty_with_item_attributes(shared_data: Path, tmp_path: Path) -> None:
    manifest = prepare(PrepareConfig(format="s3rec", input=shared_data / "s3rec-beauty", output=tmp_path / "b"))
    counts = manifest.counts
    assert (counts["users"], counts["items"], counts["interactions"]) == (22_363, 12_101, 198_502)
    (name, spec), = manifest.features["items"].items()
    assert spec["kind"] == "multi" and spec["cardinality"] == 637 + 1  # README: 637 distinct attribute ids
    items = pq.read_table(tmp_path / "b" / schema.ITEMS)
    per_item = pc.list_value_length(items[name])
    assert abs(pc.mean(per_item).as_py() - 3.72) < 0.01  # README: 3.72 attributes per item, every item has some


def test_movielens_100k_with_genres_and_user_features(shared_data: Path, tmp_path: Path) -> None:
    manifest = prepare(PrepareConfig(format="movielens", input=shared_data / "movielens-100k",
                                     output=tmp_path / "ml-100k"))
    counts = manifest.counts
    assert (counts["users"], counts["items"], counts["interactions"]) == (943, 1682, 100_000)
    assert counts["duplicates_found"] == 0  # README: no duplicate (user, item) pairs
    genres = [spec for name, spec in manifest.features["items"].items() if "genre" in name]
    assert genres and genres[0]["kind"] == "multi"
    assert len(manifest.features["users"]) >= 3  # age, gender, occupation (and possibly zip code)
    users = pq.read_table(tmp_path / "ml-100k" / schema.USERS)
    for name in manifest.features["users"]:
        assert pc.min(users[name]).as_py() >= 1, name  # every user has demographics
