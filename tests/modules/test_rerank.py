"""Re-rankers: strength 0 is the plain ranking, hand-computed cases, padding, TorchScript."""

from __future__ import annotations

import torch

from modules.rerank import mmr, popularity_penalty

IDS = torch.tensor([[1, 2, 3, 4]])
SCORES = torch.tensor([[4.0, 3.0, 2.0, 1.0]])


def test_strength_zero_returns_the_plain_ranking():
    gen = torch.Generator().manual_seed(0)
    scores = torch.sort(torch.randn(8, 30, generator=gen), dim=1, descending=True).values
    ids = torch.stack([torch.randperm(50, generator=gen)[:30] + 1 for _ in range(8)])
    emb, pop = torch.randn(51, 4, generator=gen), torch.rand(51, generator=gen) * 100
    assert torch.equal(mmr(scores, ids, emb, 0.0, 10), ids[:, :10])
    assert torch.equal(popularity_penalty(scores, ids, pop, 0.0, 10), ids[:, :10])
    # also through the general code path: a tiny strength keeps the order of well-separated scores
    assert torch.equal(popularity_penalty(scores, ids, pop, 1e-9, 10), ids[:, :10])
    assert torch.equal(mmr(scores, ids, emb, 1e-9, 10), ids[:, :10])


def test_popularity_penalty_moves_the_blockbuster_down():
    pop = torch.tensor([0.0, 10000.0, 1.0, 1.0, 1.0])
    # z(score) = [1.34, 0.45, -0.45, -1.34]; z(log1p pop) = [1.73, -0.58, -0.58, -0.58]: at strength 1
    # item 1 gets 1.34 - 1.73 = -0.39, item 2 0.45 + 0.58 = 1.03, item 3 0.13, item 4 -0.76
    assert popularity_penalty(SCORES, IDS, pop, 1.0, 4).tolist() == [[2, 3, 1, 4]]


def test_mmr_hand_example():
    # items 1 and 2 are the same direction, 3 orthogonal: after 1, MMR at 0.5 prefers 3 over the near-copy 2
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    scores = torch.tensor([[3.0, 2.9, 1.0]])
    # relevance [1, 0.95, 0]; step 2 gains: item 2 0.5 * 0.95 - 0.5 * 1 = -0.025, item 3 0 - 0 = 0
    assert mmr(scores, torch.tensor([[1, 2, 3]]), emb, 0.5, 3).tolist() == [[1, 3, 2]]
    # strength 1: pure diversity after the first pick
    assert mmr(SCORES, IDS, emb, 1.0, 2).tolist() == [[1, 3]]


def test_padding_candidates_are_never_chosen_first():
    scores = torch.tensor([[2.0, 1.0, float("-inf")]])
    ids = torch.tensor([[5, 6, 0]])
    emb, pop = torch.randn(7, 3), torch.arange(7.0)
    assert mmr(scores, ids, emb, 0.7, 3).tolist() == [[5, 6, 0]]
    assert popularity_penalty(scores, ids, pop, 5.0, 3)[0, 2].item() == 0


def test_rerankers_script():
    emb, pop = torch.randn(5, 3), torch.tensor([0.0, 9.0, 1.0, 4.0, 2.0])
    scripted_mmr, scripted_pop = torch.jit.script(mmr), torch.jit.script(popularity_penalty)
    assert torch.equal(scripted_mmr(SCORES, IDS, emb, 0.4, 3), mmr(SCORES, IDS, emb, 0.4, 3))
    assert torch.equal(scripted_pop(SCORES, IDS, pop, 0.8, 3), popularity_penalty(SCORES, IDS, pop, 0.8, 3))
