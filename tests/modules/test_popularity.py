"""The popularity baseline ranks by train counts, through the same evaluation code as trained models."""

from __future__ import annotations

from pathlib import Path

import torch

from modules.popularity import Popularity
from trainer.cli import main as seqrec
from trainer.config import EvalConfig
from trainer.evaluate import evaluate_popularity
from trainer.evaluation.ranking import topk_full_ranking


def test_ranks_items_by_popularity() -> None:
    model = Popularity(torch.tensor([0.0, 5.0, 9.0, 1.0]))
    items = torch.cat([torch.zeros(1, 1), model.item_embeddings(torch.arange(1, 4))])
    queries = model.encode(type("B", (), {"user_idx": torch.arange(2)})())
    _, ids = topk_full_ranking(queries, items, 3)
    assert ids.tolist() == [[2, 1, 3], [2, 1, 3]]


def test_popularity_baseline_on_a_dataset(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    metrics = evaluate_popularity(tiny_dataset, "test", EvalConfig(ks=[10]))
    assert metrics["users"] == 600 and 0.0 < metrics["ndcg@10"] < 1.0
    out = ["--output", str(tmp_path / "pop")]
    assert seqrec(["evaluate", "--popularity", str(tiny_dataset), *out, "eval.ks=[5,10]"]) == 0
    assert '"baseline": "popularity"' in capsys.readouterr().out
    assert seqrec(["evaluate", "--popularity", str(tiny_dataset), "model.dim=3"]) == 2
