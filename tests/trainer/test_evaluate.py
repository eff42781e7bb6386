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
    assert full["protocol"] == "full"
    assert full["ndcg@10"] == pytest.approx(trained["valid"]["ndcg@10"], abs=1e-6)
    assert seqrec(["evaluate", str(trained_run), "--split", "valid", "eval.sampled_negatives=100"]) == 0
    sampled = json.loads((trained_run / "eval_valid_sampled100.json").read_text())
    assert json.loads((trained_run / "eval_valid.json").read_text()) == full  # not replaced
    assert sampled["protocol"] == "sampled-100" and sampled["users"] == full["users"]
    # 100 sampled competitors instead of ~300 items: the paper protocol is the easier one.
    assert sampled["ndcg@10"] > full["ndcg@10"]
    for name in ("valid", "valid_sampled100"):
        per_user = pq.read_table(trained_run / f"per_user_{name}.rank0.parquet")
        assert per_user.num_rows == full["users"] and "ndcg@10" in per_user.column_names


def test_evaluate_command_errors(tmp_path: Path) -> None:
    assert seqrec(["evaluate", str(tmp_path)]) == 2
