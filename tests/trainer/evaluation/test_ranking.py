"""Ranking kernels against hand-computed examples and a plain full-sort reference."""

from __future__ import annotations

import pytest
import torch

from trainer.evaluation.ranking import (
    full_ranking,
    sample_negatives,
    sampled_ranks,
    target_ranks,
    topk_full_ranking,
)

NEG_INF = float("-inf")


def jagged(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, offsets) from per-query id lists."""
    values = torch.tensor([v for row in lists for v in row], dtype=torch.int64)
    lengths = torch.tensor([len(row) for row in lists], dtype=torch.int64)
    return values, torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])


def reference_scores(queries, item_emb, seen=None):
    """Plain full score matrix with padding and seen items at -inf."""
    scores = queries @ item_emb.T
    scores[:, 0] = NEG_INF
    if seen is not None:
        values, offsets = seen
        rows = torch.repeat_interleave(torch.arange(queries.shape[0]), offsets[1:] - offsets[:-1])
        keep = (values >= 0) & (values < item_emb.shape[0])
        scores[rows[keep], values[keep]] = NEG_INF
    return scores


def reference_topk(queries, item_emb, k, seen=None):
    """Full stable sort: equal scores keep the lower id first."""
    scores = reference_scores(queries, item_emb, seen)
    k = min(k, item_emb.shape[0] - 1)
    top = torch.sort(scores, dim=1, descending=True, stable=True)
    ids = top.indices[:, :k].masked_fill(top.values[:, :k] == NEG_INF, 0)
    return top.values[:, :k], ids


def integer_problem(seed: int, batch: int = 7, num_items: int = 40, dim: int = 3):
    """Small-integer embeddings: scores are exact in float32 and full of ties."""
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randint(-2, 3, (batch, dim), generator=gen).float()
    item_emb = torch.randint(-2, 3, (num_items + 1, dim), generator=gen).float()
    item_emb[0] = 100.0  # padding scores highest for positive queries and must still never appear
    seen = jagged([torch.randint(0, num_items + 1, (i % 5,), generator=gen).tolist() for i in range(batch)])
    return queries, item_emb, seen


# Items 1..5 scored by one query q = (1, 0): scores = first coordinate.
HAND_ITEMS = torch.tensor([[100.0, 0.0], [1.0, 0.0], [3.0, 1.0], [3.0, -1.0], [2.0, 5.0], [3.0, 0.0]])
HAND_QUERY = torch.tensor([[1.0, 0.0]])


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 65536])
def test_topk_hand_example_ties_lower_id_first(chunk):
    # scores: item1=1, item2=3, item3=3, item4=2, item5=3; padding row 0 scores 100 but is never ranked.
    # Descending with ties by lower id: 2, 3, 5 (all 3), then 4 (2), then 1 (1).
    scores, ids = topk_full_ranking(HAND_QUERY, HAND_ITEMS, k=4, item_chunk=chunk)
    assert ids.tolist() == [[2, 3, 5, 4]]
    assert scores.tolist() == [[3.0, 3.0, 3.0, 2.0]]


def test_topk_all_equal_scores_are_ordered_by_id():
    item_emb = torch.zeros(11, 4)
    _, ids = topk_full_ranking(torch.ones(3, 4), item_emb, k=5, item_chunk=4)
    assert ids.tolist() == [[1, 2, 3, 4, 5]] * 3


def test_topk_seen_items_are_removed():
    # Seen item 3 (score 3, above item 4) and padding 0 in the seen list: 3 disappears, 0 is ignored.
    scores, ids = topk_full_ranking(HAND_QUERY, HAND_ITEMS, k=3, seen=jagged([[3, 0]]), item_chunk=2)
    assert ids.tolist() == [[2, 5, 4]]
    assert scores.tolist() == [[3.0, 3.0, 2.0]]


def test_topk_k_larger_than_catalogue_is_clipped():
    scores, ids = topk_full_ranking(HAND_QUERY, HAND_ITEMS, k=50)
    assert ids.tolist() == [[2, 3, 5, 4, 1]]
    # With two items seen, the last two slots hold no item: id 0 (padding) and score -inf.
    scores, ids = topk_full_ranking(HAND_QUERY, HAND_ITEMS, k=50, seen=jagged([[5, 1]]))
    assert ids.tolist() == [[2, 3, 4, 0, 0]]
    assert scores[0, 3:].tolist() == [NEG_INF, NEG_INF]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 65536])
def test_topk_chunked_matches_full_sort_reference(seed, chunk):
    queries, item_emb, seen = integer_problem(seed)
    for k in (1, 5, 13, 40):
        got = topk_full_ranking(queries, item_emb, k, seen=seen, item_chunk=chunk)
        want = reference_topk(queries, item_emb, k, seen)
        assert torch.equal(got[1], want[1]), (k, chunk)
        assert torch.equal(got[0], want[0])
    assert not (got[1] == 0).all()


def test_topk_random_float_embeddings_chunked_equals_unchunked():
    gen = torch.Generator().manual_seed(3)
    queries, item_emb = torch.randn(33, 16, generator=gen), torch.randn(2001, 16, generator=gen)
    _, ids_full = topk_full_ranking(queries, item_emb, 20, item_chunk=65536)
    for chunk in (17, 256, 1999):
        scores, ids = topk_full_ranking(queries, item_emb, 20, item_chunk=chunk)
        assert torch.equal(ids, ids_full)
        assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_topk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        topk_full_ranking(HAND_QUERY, HAND_ITEMS, k=0)
    with pytest.raises(ValueError, match="seen offsets"):
        topk_full_ranking(HAND_QUERY, HAND_ITEMS, k=2, seen=jagged([[1], [2]]))


def test_target_ranks_hand_example():
    # scores: 1:1, 2:3, 3:3, 4:2, 5:3. Target 4: items 2, 3, 5 are strictly higher -> rank 3, no tie.
    # Target 3: nothing higher -> rank 0; items 2 and 5 tie with it -> ties 2. Target 1: rank 4.
    ranks = target_ranks(HAND_QUERY.expand(3, 2), HAND_ITEMS, jagged([[4], [3], [1]]), item_chunk=2)
    assert ranks.rank.tolist() == [3, 0, 4]
    assert ranks.ties.tolist() == [0, 2, 0]
    assert ranks.rank.dtype == torch.int64


@pytest.mark.parametrize("chunk", [1, 3, 65536])
def test_target_ranks_seen_filtering_and_target_in_seen(chunk):
    # Target 4 with seen {2}: item 2 (above it) is removed; above it remain 3 and 5 -> rank 2.
    ranks = target_ranks(HAND_QUERY, HAND_ITEMS, jagged([[4]]), seen=jagged([[2]]), item_chunk=chunk)
    assert (ranks.rank.tolist(), ranks.removed.tolist()) == ([2], [False])
    # Target 3 with its tie partner 5 seen: only item 2 ties with it now.
    ranks = target_ranks(HAND_QUERY, HAND_ITEMS, jagged([[3]]), seen=jagged([[5]]), item_chunk=chunk)
    assert (ranks.rank.tolist(), ranks.ties.tolist()) == ([0], [1])


@pytest.mark.parametrize("chunk", [1, 3, 65536])
def test_repeated_target_is_removed_with_the_seen_items(chunk):
    # Target 4 with seen {2, 4} (a repeat): removed like every seen item -> rank N = 5, a miss at every K <= N,
    # even though it would rank 2 among the unseen items. The other query's target is not in its seen list.
    ranks = target_ranks(
        HAND_QUERY.expand(2, 2), HAND_ITEMS, jagged([[4], [4]]), seen=jagged([[2, 4], [2]]), item_chunk=chunk
    )
    assert ranks.rank.tolist() == [5, 2]
    assert ranks.removed.tolist() == [True, False] and ranks.ties.tolist() == [0, 0]
    # Nothing removed (seen=None): the repeat competes with every item, seen or not.
    assert target_ranks(HAND_QUERY, HAND_ITEMS, jagged([[4]]), item_chunk=chunk).rank.tolist() == [3]


def test_target_ranks_multiple_targets_compete():
    # One query, targets {4, 1}: 4 has 2, 3, 5 above -> 3; 1 has 2, 3, 5, 4 above (target 4 counts) -> 4.
    ranks = target_ranks(HAND_QUERY, HAND_ITEMS, jagged([[4, 1]]), item_chunk=2)
    assert ranks.rank.tolist() == [3, 4]


@pytest.mark.parametrize("chunk", [1, 4, 11, 65536])
def test_target_ranks_match_full_score_reference(chunk):
    queries, item_emb, seen = integer_problem(5)
    gen = torch.Generator().manual_seed(6)
    targets = jagged([torch.randint(1, 41, (1 + i % 3,), generator=gen).tolist() for i in range(7)])
    got = target_ranks(queries, item_emb, targets, seen, item_chunk=chunk)
    scores = reference_scores(queries, item_emb, seen)
    rows = torch.repeat_interleave(torch.arange(7), targets[1][1:] - targets[1][:-1])
    own = (queries[rows] * item_emb[targets[0]]).sum(1, keepdim=True)
    competitors = scores[rows]
    competitors[torch.arange(rows.numel()), targets[0]] = NEG_INF  # the target never competes with itself
    in_seen = reference_scores(queries, item_emb, seen)[rows, targets[0]] == NEG_INF
    assert torch.equal(got.removed, in_seen) and in_seen.any() and not in_seen.all()
    assert torch.equal(got.rank, torch.where(in_seen, 40, (competitors > own).sum(1)))
    assert torch.equal(got.ties, torch.where(in_seen, 0, (competitors == own).sum(1)))
    assert got.ties.sum() > 0  # the integer problem really has ties


def test_target_ranks_consistent_with_topk():
    gen = torch.Generator().manual_seed(7)
    queries, item_emb = torch.randn(64, 8, generator=gen), torch.randn(501, 8, generator=gen)
    seen = jagged([torch.randint(1, 501, (20,), generator=gen).tolist() for _ in range(64)])
    targets = torch.randint(1, 501, (64,), generator=gen)
    repeats = (seen[0].view(64, 20) == targets[:, None]).any(1)
    ranks = target_ranks(queries, item_emb, (targets, torch.arange(65)), seen, item_chunk=100)
    assert repeats.any() and torch.equal(ranks.removed, repeats)
    assert (ranks.ties == 0).all()
    for k in (1, 10, 100, 400):
        _, ids = topk_full_ranking(queries, item_emb, k, seen, item_chunk=100)
        in_topk = (ids == targets[:, None]).any(1)
        assert torch.equal(in_topk, ranks.rank < k), k
    assert (ranks.rank < 100).any() and (ranks.rank >= 100).any()


def test_full_ranking_one_pass_equals_separate_calls():
    queries, item_emb, seen = integer_problem(8)
    targets = jagged([[1 + i, 40 - i] for i in range(7)])
    both = full_ranking(queries, item_emb, k=6, targets=targets, seen=seen, item_chunk=9)
    scores, ids = topk_full_ranking(queries, item_emb, 6, seen, item_chunk=9)
    ranks = target_ranks(queries, item_emb, targets, seen, item_chunk=9)
    assert torch.equal(both.ids, ids) and torch.equal(both.scores, scores)
    assert torch.equal(both.ranks.rank, ranks.rank) and torch.equal(both.ranks.ties, ranks.ties)
    assert torch.equal(both.ranks.removed, ranks.removed)
    assert full_ranking(queries, item_emb, targets=targets).ids is None
    assert full_ranking(queries, item_emb, k=3).ranks is None


def test_target_ranks_rejects_padding_target():
    with pytest.raises(ValueError, match="target ids"):
        target_ranks(HAND_QUERY, HAND_ITEMS, jagged([[0]]))


def test_sampled_ranks_hand_example():
    # D = 1, q = 1: scores are the embeddings. Target 3 (score 3) against negatives 1, 2, 4, 5 with scores
    # 1, 2, 4, 3: only item 4 is strictly higher (the tie with 5 favours the target) -> rank 1.
    item_emb = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [3.0]])
    ranks = sampled_ranks(
        torch.ones(2, 1), item_emb, torch.tensor([3, 4]), torch.tensor([[1, 2, 4, 5], [1, 2, 3, 5]])
    )
    assert ranks.tolist() == [1, 0]


def test_sample_negatives_never_seen_or_target():
    gen = torch.Generator().manual_seed(0)
    seen = jagged([[1, 2, 3], [], list(range(1, 40)), [5, 5, 0]])
    targets = torch.tensor([4, 7, 45, 6])
    negatives = sample_negatives(50, targets, seen, num_negatives=200, generator=gen)
    assert negatives.shape == (4, 200) and negatives.dtype == torch.int64
    assert negatives.min() >= 1 and negatives.max() <= 50
    for row, excluded in enumerate([{1, 2, 3, 4}, {7}, set(range(1, 40)) | {45}, {5, 6}]):
        assert not set(negatives[row].tolist()) & excluded
    # Row 2 may only draw from 40..50 minus the target 45: all ten allowed items show up in 200 draws.
    assert set(negatives[2].tolist()) == set(range(40, 51)) - {45}


def test_sample_negatives_uniform_over_allowed_items():
    # Allowed items are {8, 9, 10}: 30,000 draws give ~10,000 each (binomial sd ~82).
    seen = jagged([list(range(1, 7))])
    negatives = sample_negatives(10, torch.tensor([7]), seen, 30000, torch.Generator().manual_seed(1))
    counts = torch.bincount(negatives.view(-1), minlength=11)
    assert counts[:8].sum() == 0
    assert ((counts[8:] - 10000).abs() < 500).all(), counts[8:].tolist()


def test_sample_negatives_reproducible_and_large_catalogue():
    seen = jagged([[999_999, 1, 500_000], [2]])
    targets = torch.tensor([3, 1_000_000])
    first = sample_negatives(1_000_000, targets, seen, 100, torch.Generator().manual_seed(9))
    assert torch.equal(
        first, sample_negatives(1_000_000, targets, seen, 100, torch.Generator().manual_seed(9))
    )
    assert not torch.isin(first[0], torch.tensor([999_999, 1, 500_000, 3])).any()
    assert first.max() <= 1_000_000 and first.min() >= 1


def test_sample_negatives_user_who_saw_everything_fails():
    with pytest.raises(ValueError, match="batch row 1"):
        sample_negatives(3, torch.tensor([1, 1]), jagged([[], [2, 3]]), 5)
