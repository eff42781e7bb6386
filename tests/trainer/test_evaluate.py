"""Evaluation glue: seen-item index, the sampled (paper) protocol, and `seqrec evaluate` on a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.evaluate import SeenIndex
from trainer.train import run_training


@pytest.fixture(scope="module")
def trained_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval_run")
    results = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=r")))
    return Path(results["run_dir"])


def test_seen_index_returns_full_histories(tiny_dataset: Path) -> None:
    table = pq.read_table(tiny_dataset / "sequences.parquet").to_pylist()
    index = SeenIndex(tiny_dataset, "test")
    users = torch.tensor([5, 0, 42])
    values, offsets = index.gather(users)
    for i, user in enumerate(users.tolist()):
        row = table[user]
        assert values[offsets[i] : offsets[i + 1]].tolist() == row["items"][: row["valid_end"]]
    valid_values, valid_offsets = SeenIndex(tiny_dataset, "valid").gather(torch.tensor([7]))
    assert valid_values.tolist() == table[7]["items"][: table[7]["train_end"]]


def test_evaluate_command_full_and_sampled(trained_run: Path) -> None:
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert seqrec(["evaluate", str(trained_run), "--split", "valid"]) == 0
    full = json.loads((trained_run / "eval_valid.json").read_text())
    assert (full["protocol"], full["ranking"], full["split_policy"]) == ("seen_removed", "full", "leave_one_out")
    assert full["ndcg@10"] == pytest.approx(trained["valid"]["ndcg@10"], abs=1e-6)
    assert seqrec(["evaluate", str(trained_run), "--split", "valid", "eval.sampled_negatives=100"]) == 0
    sampled = json.loads((trained_run / "eval_valid_sampled100.json").read_text())
    assert json.loads((trained_run / "eval_valid.json").read_text()) == full  # not replaced
    assert sampled["ranking"] == "sampled-100" and sampled["users"] == full["users"]
    # 100 sampled competitors instead of ~300 items: the paper protocol is the easier one.
    assert sampled["ndcg@10"] > full["ndcg@10"]
    for name in ("valid", "valid_sampled100"):
        per_user = pq.read_table(trained_run / f"per_user_{name}.rank0.parquet")
        assert per_user.num_rows == full["users"] and "ndcg@10" in per_user.column_names
    # beyond-accuracy metrics: per user in the full-ranking file, and by bucket, every user in one bucket
    columns = pq.read_table(trained_run / "per_user_valid.rank0.parquet").column_names
    assert {"novelty", "ild", "serendipity", "history_length", "target_bucket"} <= set(columns)
    for grouping in ("history_length", "target_popularity"):
        assert sum(b["users"] for b in full["buckets"][grouping].values()) == full["users"]
    assert 0 < full["gini@10"] < 1 and 0 < full["ild@10"] <= 1  # the synthetic items have categories


def test_evaluate_command_errors(tmp_path: Path) -> None:
    assert seqrec(["evaluate", str(tmp_path)]) == 2


def test_other_settings_write_new_files_or_are_refused(trained_run: Path, tiny_dataset: Path) -> None:
    assert seqrec(["evaluate", str(trained_run), "--split", "valid", "eval.protocol=none"]) == 0
    none = json.loads((trained_run / "eval_valid_none.json").read_text())
    assert none["protocol"] == "none" and none["removed_targets"] == 0.0
    assert none["dataset"] == json.loads((trained_run / "metrics.json").read_text())["valid"]["dataset"]
    before = (trained_run / "eval_valid_none.json").read_text()
    # same name, other ks: refused, the file untouched; --overwrite replaces it
    assert seqrec(["evaluate", str(trained_run), "--split", "valid", "eval.protocol=none", "eval.ks=[10]"]) == 2
    assert (trained_run / "eval_valid_none.json").read_text() == before
    assert seqrec(["evaluate", str(trained_run), "--split", "valid", "--overwrite", "eval.protocol=none",
                   "eval.ks=[10]"]) == 0
    assert "ndcg@5" not in json.loads((trained_run / "eval_valid_none.json").read_text())
    users = pq.read_table(tiny_dataset / "users.parquet").to_pydict()
    raw_of = dict(zip(users["user_idx"], users["raw_id"]))
    per_user = pq.read_table(trained_run / "per_user_valid_none.rank0.parquet").to_pydict()
    assert per_user["user_id"] == [raw_of[u] for u in per_user["user_idx"]]


def test_popularity_baseline_writes_its_results(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pop"
    assert seqrec(["evaluate", "--popularity", str(tiny_dataset), "--output", str(out)]) == 0
    results = json.loads((out / "eval_test.json").read_text())
    assert results["baseline"] == "popularity" and results["protocol"] == "seen_removed"
    assert pq.read_table(out / "per_user_test.rank0.parquet").num_rows == results["users"]
    assert seqrec(["evaluate", "--popularity", str(tiny_dataset), "--output", str(out), "eval.ks=[10]"]) == 2


def test_run_configs_with_the_old_filter_seen_key_still_load() -> None:
    from omegaconf import OmegaConf

    from trainer.config import from_dict, to_yaml

    def old_config(filter_seen: bool) -> dict:
        raw = OmegaConf.to_container(OmegaConf.create(to_yaml(load_config([]))))
        del raw["eval"]["protocol"]
        raw["eval"]["filter_seen"] = filter_seen
        return raw

    assert from_dict(old_config(False)).eval.protocol == "none"
    assert from_dict(old_config(True)).eval.protocol == "seen_removed"


def test_popularity_and_mmr_strength_zero_is_the_plain_ranking_and_gets_its_own_file(trained_run: Path) -> None:
    assert seqrec(["evaluate", str(trained_run), "--split", "valid"]) == 0
    plain = json.loads((trained_run / "eval_valid.json").read_text())
    for kind in ("mmr", "popularity"):
        assert seqrec(["evaluate", str(trained_run), "--split", "valid", f"eval.bias_rerank={kind}"]) == 0
        zero = json.loads((trained_run / f"eval_valid_{kind}0.json").read_text())
        for name in ("ndcg@10", "hr@20", "coverage@10", "gini@10"):
            assert zero[name] == pytest.approx(plain[name], abs=1e-12), (kind, name)
    assert seqrec(["evaluate", str(trained_run), "--split", "valid", "eval.bias_rerank=popularity",
                   "eval.bias_strength=2"]) == 0
    strong = json.loads((trained_run / "eval_valid_popularity2.json").read_text())
    assert strong["avg_pop@10"] < plain["avg_pop@10"]
    assert strong["settings"]["bias_strength"] == 2.0
    assert seqrec(["evaluate", str(trained_run), "eval.bias_rerank=mmr", "eval.bias_strength=2"]) == 2
