"""Evaluation: full-catalogue and sampled ranking kernels, and ranking metrics with a distributed accumulator."""

from trainer.evaluation.metrics import (
    ALL_METRICS,
    RANK_METRICS,
    MetricAccumulator,
    hit_rate_at_k,
    map_at_k,
    mrr,
    ndcg_at_k,
    recall_at_k,
)
from trainer.evaluation.ranking import (
    DEFAULT_ITEM_CHUNK,
    FullRanking,
    Jagged,
    TargetRanks,
    full_ranking,
    sample_negatives,
    sampled_ranks,
    target_ranks,
    topk_full_ranking,
)

__all__ = [
    "ALL_METRICS",
    "DEFAULT_ITEM_CHUNK",
    "FullRanking",
    "RANK_METRICS",
    "Jagged",
    "MetricAccumulator",
    "TargetRanks",
    "full_ranking",
    "hit_rate_at_k",
    "map_at_k",
    "mrr",
    "ndcg_at_k",
    "recall_at_k",
    "sample_negatives",
    "sampled_ranks",
    "target_ranks",
    "topk_full_ranking",
]
