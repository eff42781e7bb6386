"""Retrieve-then-rank: evaluated against each stage alone (exact identities at the edges), and exported as one
scripted model with the serving signature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from serving.export import ExportConfig, export_run, load_trained
from serving.inference import TwoStage, retriever_of, script
from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.evaluation.two_stage import evaluate_two_stage
from trainer.train import run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("two_stage")
    common = ("trainer.test_at_end=false", "trainer.epochs=3")
    towers = run_training(load_config(
        [o for o in train_overrides(tiny_dataset, out, "model=two_tower_mean", "trainer.run_id=towers", *common)
         if "encoder.dropout" not in o]))
    ranker = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=sasrec", *common)))
    return Path(towers["run_dir"]), Path(ranker["run_dir"])


def _stages(runs: tuple[Path, Path]):
    return retriever_of(load_trained(runs[0]).model), retriever_of(load_trained(runs[1]).model)


def test_two_stage_is_bounded_by_its_stages(runs: tuple[Path, Path], tiny_dataset: Path) -> None:
    retriever, ranker = _stages(runs)
    metrics = evaluate_two_stage(retriever, ranker, tiny_dataset, "valid", retrieve=50)
    assert metrics["two_stage"]["users"] == metrics["ranker"]["users"] == 600
    # the final list only re-orders the candidates: it cannot find what retrieval missed
    assert metrics["two_stage"]["recall@50"] == pytest.approx(metrics["retrieval"]["recall@50"])
    assert metrics["two_stage"]["recall@10"] <= metrics["retrieval"]["recall@50"]


def test_retrieving_the_whole_catalogue_is_the_ranker_alone(runs: tuple[Path, Path], tiny_dataset: Path) -> None:
    retriever, ranker = _stages(runs)
    metrics = evaluate_two_stage(retriever, ranker, tiny_dataset, "valid", retrieve=ranker.num_items)
    assert metrics["two_stage"]["ndcg@10"] == pytest.approx(metrics["ranker"]["ndcg@10"], abs=1e-9)


def test_scripted_two_stage_serves_the_reranked_candidates(runs: tuple[Path, Path]) -> None:
    retriever, ranker = _stages(runs)
    served = script(TwoStage(retriever, ranker, 20))
    history, lengths = torch.tensor([3, 7, 9, 1, 2]), torch.tensor([3, 2])
    scores, items = served(history, lengths, 5, True)
    _, candidates = retriever(history, lengths, 20, True)
    query, catalogue = ranker.encode_and_catalogue(history, lengths, torch.zeros_like(history))
    expected = torch.topk((catalogue[candidates - 1] * query[:, None]).sum(-1), 5, dim=1)
    torch.testing.assert_close(scores, expected.values)
    assert torch.equal(items, candidates.gather(1, expected.indices))
    assert not set(items[0].tolist()) & {3, 7, 9}  # seen items never come back


def test_commands_evaluate_and_export_retrieve_then_rank(runs: tuple[Path, Path], tmp_path: Path) -> None:
    towers, ranker = runs
    assert seqrec(["evaluate", str(towers), "--rerank", str(ranker), "--retrieve", "30", "--split", "test"]) == 0
    result = json.loads((towers / "eval_test_two_stage.json").read_text())
    assert set(result) >= {"retrieval", "ranker", "two_stage"} and result["retrieve"] == 30
    meta = export_run(ExportConfig(run=towers, rerank=ranker, retrieve=30, output=tmp_path / "exp", ann="none"))
    assert meta["two_stage"]["retrieve"] == 30 and set(meta["stage_latency"]) == {"retrieval", "two_stage"}
    assert abs(meta["metrics"]["relative_change"]) < 0.1
    served = torch.jit.load(str(tmp_path / "exp" / "model.pt"))
    scores, items = served(torch.tensor([3, 7, 9]), torch.tensor([3]), 10, True)
    assert items.shape == (1, 10) and bool((scores[:, :-1] >= scores[:, 1:]).all())
