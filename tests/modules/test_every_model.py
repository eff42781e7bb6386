"""What every registered retrieval model must pass (a new model gets these tests by registering itself):

* it trains: loss and gradients finite, and the loss falls on a small fixed batch;
* its numerics are pinned: the first steps reproduce its golden-loss file (tests/modules/golden/);
* it exports: the scripted `serving.inference.Retriever` scores every item as the eager model does;
* it builds on ``meta`` and materialises (what `DistributedModelParallel` does);
* it trains under 2-process DMP with falling loss (tests/integration/test_every_model_distributed.py).
"""

from __future__ import annotations

import json

import pytest
import torch

from serving.inference import retriever_of, script
from tests.modules import model_zoo

MODELS = model_zoo.retrieval_models()


def test_the_registry_holds_the_zoo() -> None:
    assert "sasrec" in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_trains_with_finite_gradients_and_falling_loss(name: str) -> None:
    model = model_zoo.build(name).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=model_zoo.LR)
    data = model_zoo.batch()
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss, logs = model(data)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
        losses.append(loss.item())
    assert {"loss", "num_targets", "num_sequences"} <= set(logs)
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses


@pytest.mark.parametrize("name", MODELS)
def test_matches_its_golden_losses(name: str) -> None:
    path = model_zoo.golden_path(name)
    assert path.is_file(), f"{path} missing: run `.venv/bin/python scripts/golden_losses.py --write {name}`"
    golden = json.loads(path.read_text())
    assert model_zoo.train_losses(name, golden["steps"]) == pytest.approx(golden["losses"], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_exported_scores_equal_the_eager_models(name: str) -> None:
    model = model_zoo.build(name).eval()
    data = model_zoo.batch("last")
    with torch.no_grad():
        expected = model.encode(data) @ model.item_embeddings(torch.arange(1, model_zoo.NUM_ITEMS + 1)).T
    scripted = script(retriever_of(model))
    history = data.sparse["history"]
    with torch.inference_mode():
        scores, items = scripted(history.values(), history.lengths(), model_zoo.NUM_ITEMS, False, data.timestamps)
    got = torch.zeros_like(scores).scatter_(1, items - 1, scores)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_builds_on_meta_and_materialises(name: str) -> None:
    model = model_zoo.registry.build(model_zoo.tiny_config(name), num_items=model_zoo.NUM_ITEMS,
                                     max_len=model_zoo.MAX_LEN, device="meta")
    assert all(p.is_meta for p in model.parameters())
    model = model.to_empty(device="cpu")
    model.reset_parameters()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    loss, _ = model(model_zoo.batch())
    assert torch.isfinite(loss)
