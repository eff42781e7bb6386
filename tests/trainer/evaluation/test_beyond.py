"""Beyond-accuracy metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.evaluation.beyond import (
    BeyondAccuracy,
    gini,
    intra_list_distance,
    length_bucket_names,
    popularity_buckets,
)

POP = torch.tensor([0.0, 8.0, 4.0, 2.0, 1.0])  # items 1..4, 15 train interactions; U = 8 users


def test_gini_hand_cases():
    assert gini(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 0.0
    # sorted [0, 0, 0, 4]: (2*4 - 4 - 1) * 4 / (4 * 4) = 0.75
    assert gini(torch.tensor([0.0, 4.0, 0.0, 0.0])) == pytest.approx(0.75)
    assert gini(torch.zeros(3)) == 0.0


def test_popularity_buckets_by_cumulative_share():
    # more popular items hold 0, 8/15, 12/15, 14/15 of the interactions before each item: head, torso, tail, tail
    assert popularity_buckets(POP)[1:].tolist() == [0, 1, 2, 2]


def test_intra_list_distance_jaccard_and_cosine():
    cats = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 1]], dtype=torch.float32)
    # pairs of [1, 2, 3]: (1,2) same set -> 0; (1,3), (2,3) disjoint -> 1: mean 2/3
    ids = torch.tensor([[1, 2, 3], [1, 4, 0]])
    got = intra_list_distance(ids, cats, jaccard=True)
    # [1, 4]: {0} vs {0, 2}: Jaccard 1/2 -> distance 1/2; padding 0 is left out
    assert got.tolist() == pytest.approx([2 / 3, 0.5])
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # cosine distances: (1,2) 1, (1,3) 2, (2,3) 1 -> mean 4/3
    assert intra_list_distance(torch.tensor([[1, 2, 3]]), emb, jaccard=False).tolist() == pytest.approx([4 / 3])


def test_beyond_accuracy_hand_example():
    acc = BeyondAccuracy(2, POP, num_users=8)
    values = acc.update(
        topk=torch.tensor([[3, 4], [1, 3]]),
        popular=torch.tensor([[1, 2], [1, 2]]),
        targets=torch.tensor([4, 2]),
        history_length=torch.tensor([3, 60]),
        ndcg=torch.tensor([0.63, 0.0], dtype=torch.float64),
        hit=torch.tensor([1.0, 0.0], dtype=torch.float64),
        item_emb=torch.eye(5),
    )
    assert values["avg_pop"].tolist() == [1.5, 5.0]
    # self-information -log2(pop / 8): item 1 -> 0, item 3 -> 2, item 4 -> 3
    assert values["novelty"].tolist() == [2.5, 1.0]
    assert values["unexpectedness"].tolist() == [1.0, 0.5]
    assert values["serendipity"].tolist() == [0.5, 0.0]  # item 4 is unexpected and the target
    assert values["ild"].tolist() == pytest.approx([1.0, 1.0])  # orthogonal embeddings
    assert values["target_bucket"].tolist() == [2.0, 1.0]
    acc.all_reduce()
    out = acc.compute()
    # recommendation counts of items 1..4: [1, 0, 2, 1] -> sorted [0, 1, 1, 2]: (0 - 1 + 1 + 6) / 16
    assert out["gini@2"] == pytest.approx(0.375)
    assert out["avg_pop@2"] == pytest.approx(3.25) and out["serendipity@2"] == pytest.approx(0.25)
    by_length = out["buckets"]["history_length"]
    assert list(by_length) == length_bucket_names()
    assert by_length["1-5"] == {
        "avg_pop": 1.5, "novelty": 2.5, "ild": 1.0, "unexpectedness": 1.0, "serendipity": 0.5,
        "ndcg@2": 0.63, "hr@2": 1.0, "users": 1,
    }
    assert by_length["51-100"]["users"] == 1 and by_length["6-10"] == {"users": 0}
    by_pop = out["buckets"]["target_popularity"]
    assert (by_pop["head"]["users"], by_pop["torso"]["users"], by_pop["tail"]["users"]) == (0, 1, 1)
    curve = out["popularity_curve"]
    # 4 items in 10 bins: items 1..4 fall in bins 0, 2, 5, 7; 4 recommendations: item 1 once, 3 twice, 4 once
    assert curve["recommended"] == pytest.approx([0.25, 0, 0, 0, 0, 0.5, 0, 0.25, 0, 0])
    assert curve["targets"] == pytest.approx([0, 0, 0.5, 0, 0, 0, 0, 0.5, 0, 0])
    assert math.isclose(sum(curve["train_interactions"]), 1.0)
