"""The shared ranker parts: per-head labels reach their heads, the context counters, DLRM-v2 training."""

from __future__ import annotations

import pytest
import torch

from modules import registry
from modules.rankers.dlrm import DLRMConfig
from modules.rankers.transact import TransActConfig
from modules.ranking import context_features
from tests.modules.rankers.batches import NUM_ACTIONS, NUM_ITEMS, impressions_batch

SMALL = dict(dim=8, num_actions=NUM_ACTIONS, user_buckets=64, dense_layers=[16], over_layers=[16, 8],
             cross_layers=2, cross_rank=4, heads=["always", "never", "coin"])


@pytest.mark.parametrize("config", [DLRMConfig(**SMALL), TransActConfig(**SMALL, action_dim=8, recent_k=2)])
def test_each_head_learns_its_own_constant_label(config) -> None:
    torch.manual_seed(0)
    model = registry.build(config, num_items=NUM_ITEMS, max_len=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for step in range(60):
        lengths = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(step)).tolist()
        labels = torch.stack([torch.ones(32), torch.zeros(32), torch.randint(0, 2, (32,)).float()], dim=1)
        batch = impressions_batch(lengths, seed=step, labels=labels)
        optimizer.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model.logits(impressions_batch([4] * 16, heads=3, seed=999)))
    assert (probs[:, 0] > 0.95).all() and (probs[:, 1] < 0.05).all()
    assert ((probs[:, 2] > 0.2) & (probs[:, 2] < 0.8)).all()  # the coin head stays uncertain


def test_labels_must_match_the_heads() -> None:
    model = registry.build(DLRMConfig(**SMALL), num_items=NUM_ITEMS, max_len=16)
    with pytest.raises(ValueError, match="3 heads"):
        model(impressions_batch([2, 3], heads=2))


def test_context_counts_action_shares_per_example() -> None:
    lengths, actions = torch.tensor([2, 0, 3]), torch.tensor([1, 1, 0, 2, 2])
    request = torch.tensor([0, 21600, 43200])  # midnight, 06:00, noon
    ctx = context_features(lengths, actions, request, num_actions=3)
    torch.testing.assert_close(ctx[:, 0], torch.log1p(lengths.float()))
    torch.testing.assert_close(ctx[:, 1:4], torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1 / 3, 0.0, 2 / 3]]))
    torch.testing.assert_close(ctx[:, 4:], torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]), atol=1e-6, rtol=0)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="model.heads"):
        DLRMConfig(heads=[]).validate()
    with pytest.raises(ValueError, match="model.num_heads"):
        TransActConfig(dim=8, action_dim=6, num_heads=4).validate()
