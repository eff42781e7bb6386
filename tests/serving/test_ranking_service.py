"""The ranker export (TorchScript equals the eager model, multi-candidate requests) and the ranking service's
request validation, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modules import registry
from modules.rankers.transact import TransActConfig
from serving.export import ExportConfig, export_run, load_trained
from serving.ranking_inference import scorer_of, script_scorer
from serving.ranking_service import RankingLimits, RankingService
from serving.service import RequestError
from tests.conftest import ranking_overrides
from tests.modules.rankers.batches import NUM_ACTIONS, NUM_ITEMS, impressions_batch
from trainer.config import load_config
from trainer.train import run_training


@pytest.fixture(scope="module")
def exported(tiny_impressions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rank_export")
    result = run_training(load_config(ranking_overrides(tiny_impressions, out, "transact", "trainer.epochs=1",
                                                        "model.action_dim=8", "model.num_heads=2")))
    meta = export_run(ExportConfig(run=Path(result["run_dir"]), output=out / "export"))
    assert meta["check"]["max_abs_logit_diff"] < 1e-4 and meta["check"]["examples"] > 100
    return Path(meta["output"])


def test_scripted_scorer_equals_the_model_for_many_candidates_per_request() -> None:
    torch.manual_seed(0)
    config = TransActConfig(dim=8, action_dim=8, num_actions=NUM_ACTIONS, user_buckets=64, heads=["a", "b"],
                            recent_k=3)
    model = registry.build(config, num_items=NUM_ITEMS, max_len=16).eval()
    scripted = script_scorer(scorer_of(model, 16))
    one = impressions_batch([4], heads=2, seed=3)
    history = one.sparse["history"]
    candidates = torch.tensor([5, 9, 17])
    with torch.inference_mode():
        got = scripted(history.values(), one.actions, one.timestamps, history.lengths(), candidates,
                       torch.tensor([3]), one.request_time, one.user_idx)
    for row, candidate in enumerate(candidates.tolist()):
        single = impressions_batch([4], heads=2, seed=3)
        values = torch.cat([history.values(), torch.tensor([candidate])])
        single.sparse = type(single.sparse)(keys=["history", "target", "negatives"], values=values,
                                            lengths=torch.tensor([4, 1, 0]))
        with torch.no_grad():
            torch.testing.assert_close(got[row], model.logits(single)[0], rtol=1e-5, atol=1e-5)


def test_valid_requests_rank_candidates_by_the_chosen_head(exported: Path) -> None:
    service = RankingService.load(exported)
    ids = json.loads((exported / "id_map.json").read_text())["raw_ids"]
    actions = json.loads((exported / "ranking.json").read_text())["actions"]
    body = {"history": [{"item": ids[0], "action": actions[1]}, {"item": "nope"}], "candidates": ids[1:21] + ["x"],
            "head": "cart"}
    answer, = service.rank([service.parse(json.dumps(body).encode())])
    scores = [c["scores"]["cart"] for c in answer["candidates"]]
    assert answer["head"] == "cart" and len(scores) == 20 and scores == sorted(scores, reverse=True)
    assert answer["unknown"] == ["nope"] and answer["unknown_candidates"] == ["x"]
    assert set(answer["candidates"][0]["scores"]) == {"view", "cart"}
    empty, = service.rank([service.parse({"history": [], "candidates": ["x", "y"]})])
    assert empty["candidates"] == [] and empty["unknown_candidates"] == ["x", "y"]


@pytest.mark.parametrize("body, field", [
    ({"candidates": []}, "'candidates' must be a non-empty"),
    ({"history": []}, "'candidates' must be a non-empty"),
    ({"history": [], "candidates": ["1"] * 501}, "'candidates' has 501 items; the limit is 500"),
    ({"history": [{"item": "1", "action": "teleport"}], "candidates": ["1"]}, "'history[0].action' must be one of"),
    ({"history": [{"itm": "1"}], "candidates": ["1"]}, "'history[0]' must be an object with an 'item'"),
    ({"history": "1,2", "candidates": ["1"]}, "'history' must be a list"),
    ({"history": [], "candidates": ["1"], "head": "fame"}, "'head' must be one of"),
    ({"history": [], "candidates": [True]}, "'candidates[0]' must be a string or an integer"),
    ({"history": [], "candidates": ["1"], "k": 3}, "unknown fields ['k']"),
])
def test_bad_requests_name_the_field(exported: Path, body: dict, field: str) -> None:
    service = RankingService.load(exported, RankingLimits(max_candidates=500))
    with pytest.raises(RequestError) as err:
        service.parse(body)
    assert field in str(err.value)


def test_the_trained_ranker_loads_unsharded(exported: Path) -> None:
    run = Path(json.loads((exported / "metadata.json").read_text())["source"]["run"])
    trained = load_trained(run)
    assert trained.model.config.heads == ["view", "cart"]


def test_the_handler_answers_a_mixed_batch_without_the_server(exported: Path) -> None:
    from serving.ranking_handler import RankingHandler
    from tests.serving.test_handler import FakeContext

    context = FakeContext(exported)
    handler = RankingHandler()
    handler.initialize(context)
    handler.context = context
    ids = json.loads((exported / "id_map.json").read_text())["raw_ids"]
    good = {"history": [{"item": ids[0]}], "candidates": ids[1:6]}
    batch = [{"body": json.dumps(good).encode()}, {"body": b'{"candidates": []}'}, {"body": good}]
    answers = handler.handle(batch, context)
    assert len(answers[0]["candidates"]) == 5 and answers[2] == answers[0]
    assert context.statuses[1][0] == 400 and "'candidates'" in context.statuses[1][1]
    assert 0 not in context.statuses and 2 not in context.statuses
