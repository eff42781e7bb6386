"""The ranking evaluator's metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluation.ranking_metrics import (
    auc,
    log_loss,
    normalized_entropy,
    ranking_metrics,
    rerank_metrics,
)


def test_auc_matches_a_hand_computed_case() -> None:
    # positives 0.35, 0.8, 0.5; negatives 0.1, 0.4, 0.5 -> pairs won: 0.35>0.1; 0.8>all 3; 0.5>0.1,0.4 and a tie
    # with 0.5 (half) -> (1 + 3 + 2.5) / 9
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5])
    labels = np.array([0, 0, 1, 1, 1, 0])
    assert auc(scores, labels) == pytest.approx(6.5 / 9)
    assert math.isnan(auc(scores, np.ones(6)))


def test_log_loss_and_normalized_entropy_by_hand() -> None:
    probs, labels = np.array([0.9, 0.2, 0.6, 0.5]), np.array([1, 0, 0, 1])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.5)) / 4
    assert log_loss(probs, labels) == pytest.approx(expected)
    assert normalized_entropy(probs, labels) == pytest.approx(expected / math.log(2))  # base rate 0.5
    assert normalized_entropy(np.full(4, 0.5), labels) == pytest.approx(1.0)


def test_rerank_ndcg_and_hit_by_hand() -> None:
    users = np.array([7, 7, 7, 7, 3, 3, 3, 5, 5])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.9, 0.5, 0.3, 0.6])
    labels = np.array([0, 0, 0, 1, 1, 0, 0, 1, 1])
    # user 7: the positive ranks 4th -> NDCG 1/log2(5), no hit@3; user 3: positive 3rd -> 1/log2(4) = 0.5, hit;
    # user 5 has only positives -> not counted
    got = rerank_metrics(users, scores, labels)
    assert got["rerank_users"] == 2
    assert got["ndcg@10"] == pytest.approx((1 / math.log2(5) + 0.5) / 2)
    assert got["hit@3"] == pytest.approx(0.5)


def test_ranking_metrics_name_every_head() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (40, 2)).astype(np.float32)
    logits = labels * 2.0 - 1.0 + rng.normal(0, 0.1, (40, 2))
    metrics = ranking_metrics(rng.integers(0, 5, 40), logits, labels, ["click", "like"])
    assert metrics["auc"] == metrics["auc_click"] == pytest.approx(1.0)
    assert {"logloss_like", "ne_like", "ndcg@10", "hit@3", "examples"} <= set(metrics)
