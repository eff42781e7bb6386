"""TransAct: the time-window mask, early fusion, the last-K/max-pool output, grouping, training."""

from __future__ import annotations

import torch

from modules import registry
from modules.rankers.transact import (
    TransActConfig,
    TransActEncoder,
    early_fusion,
    encode_grouped,
    visible_lengths,
)
from tests.modules.rankers.batches import NUM_ACTIONS, NUM_ITEMS, impressions_batch


def tiny(**overrides) -> TransActConfig:
    return TransActConfig(dim=8, action_dim=8, num_heads=2, heads=["click", "like"], num_actions=NUM_ACTIONS,
                          user_buckets=64, dense_layers=[16], over_layers=[16, 8], cross_layers=2, cross_rank=4,
                          recent_k=3, dropout=0.0, **overrides)


def test_time_window_mask_never_hides_a_whole_row() -> None:
    lengths = torch.tensor([1, 2, 5, 30, 0, 7])
    batch = impressions_batch(lengths.tolist())
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        visible = visible_lengths(lengths, batch.timestamps, batch.request_time, 10 ** 9, generator=g)
        assert (visible >= lengths.clamp(max=1)).all() and (visible <= lengths).all()
        assert visible[lengths > 0].min() >= 1
    # a huge window hides everything but the oldest action of each row; no window hides nothing
    assert visible_lengths(lengths, batch.timestamps, batch.request_time, 10 ** 12).tolist() == [1, 1, 1, 1, 0, 1]
    assert visible_lengths(lengths, batch.timestamps, batch.request_time, 0).tolist() == lengths.tolist()


def test_time_window_hides_only_actions_inside_the_window() -> None:
    lengths = torch.tensor([6])
    times = torch.tensor([0, 100, 200, 300, 400, 500])
    request = torch.tensor([600])
    visible = visible_lengths(lengths, times, request, 1000, generator=torch.Generator().manual_seed(0))
    w = torch.rand(1, generator=torch.Generator().manual_seed(0)) * 1000
    assert visible.item() == max(1, int((times < 600 - w).sum()))


def test_early_fusion_broadcasts_the_candidate_to_every_position() -> None:
    items, actions, candidate = torch.randn(3, 5, 8), torch.randn(3, 5, 4), torch.randn(3, 8)
    tokens = early_fusion(items, actions, candidate)
    assert tokens.shape == (3, 5, 4 + 8 + 8)
    torch.testing.assert_close(tokens[..., :4], actions)
    torch.testing.assert_close(tokens[..., 4:12], items)
    for position in range(5):
        torch.testing.assert_close(tokens[:, position, 12:], candidate)


def test_output_ignores_hidden_positions_and_grouping_changes_nothing() -> None:
    torch.manual_seed(0)
    encoder = TransActEncoder(tiny(), device=None).eval()
    tokens, visible = torch.randn(6, 9, 24), torch.tensor([9, 1, 4, 0, 6, 2])
    out = encoder(tokens, visible)
    changed = tokens.clone()
    for row, v in enumerate(visible.tolist()):
        changed[row, v:] = torch.randn(9 - v, 24)  # hidden / padded positions may hold anything
    torch.testing.assert_close(encoder(changed, visible), out)
    torch.testing.assert_close(encode_grouped(encoder, changed, visible, 3), out, rtol=1e-5, atol=1e-6)


def test_trains_on_meta_built_tables_with_falling_loss() -> None:
    model = registry.build(tiny(), num_items=NUM_ITEMS, max_len=32, device="meta")
    model = model.to_empty(device="cpu")
    model.reset_parameters()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    batch = impressions_batch([3, 0, 7, 12, 1, 5, 9, 2], heads=2, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss, logs = model(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert {"loss", "loss_click", "loss_like", "num_targets"} <= set(logs)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses
    assert model.score(batch).shape == (8, 1, 2)
