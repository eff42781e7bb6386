"""Metric values on hand-computed examples, the accumulator, and its reduction across 2 gloo processes."""

from __future__ import annotations

import json
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.errors import ConfigError
from trainer.evaluation.metrics import (
    ALL_METRICS,
    MetricAccumulator,
    hit_rate_at_k,
    map_at_k,
    mrr,
    ndcg_at_k,
    recall_at_k,
)

# Three users, K = 5: A has one target at rank 0, B one target at rank 7, C three targets at ranks 20, 1, 3
# (given unsorted on purpose).
RANKS = torch.tensor([0, 7, 20, 1, 3])
OFFSETS = torch.tensor([0, 1, 2, 5])
K = 5


def approx(values: list[float]):
    return pytest.approx(values, abs=1e-12)


def test_hit_rate_by_hand():
    # A: 0 < 5 -> 1; B: 7 >= 5 -> 0; C: 1 < 5 -> 1.
    assert hit_rate_at_k(RANKS, K, OFFSETS).tolist() == [1.0, 0.0, 1.0]


def test_recall_by_hand():
    # A: 1/1; B: 0/1; C: ranks 1 and 3 are in the top 5, 20 is not -> 2/3.
    assert recall_at_k(RANKS, K, OFFSETS).tolist() == approx([1.0, 0.0, 2 / 3])


def test_ndcg_by_hand():
    # A: DCG = 1/log2(0 + 2) = 1, ideal 1 -> 1. B: no hit -> 0.
    # C: DCG = 1/log2(1 + 2) + 1/log2(3 + 2); ideal with min(3, 5) = 3 hits = 1/log2(2) + 1/log2(3) + 1/log2(4).
    c = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert ndcg_at_k(RANKS, K, OFFSETS).tolist() == approx([1.0, 0.0, c])


def test_mrr_by_hand():
    # A: 1/(0 + 1); B: 1/(7 + 1) (no cutoff); C: best rank 1 -> 1/2.
    assert mrr(RANKS, OFFSETS).tolist() == approx([1.0, 1 / 8, 1 / 2])


def test_map_by_hand():
    # A: precision at rank 0 = 1/1, over min(1, 5) -> 1. B: 0.
    # C: first hit at rank 1 -> precision 1/2; second at rank 3 -> 2/4; rank 20 is past K; over min(3, 5) = 3.
    assert map_at_k(RANKS, K, OFFSETS).tolist() == approx([1.0, 0.0, (1 / 2 + 2 / 4) / 3])


def test_single_target_default_offsets():
    ranks = torch.tensor([0, 3, 9])
    # One target each: NDCG@5 = [1, 1/log2(5), 0]; MAP@5 = MRR@5 = [1, 1/4, 0].
    assert ndcg_at_k(ranks, 5).tolist() == approx([1.0, 1 / math.log2(5), 0.0])
    assert map_at_k(ranks, 5).tolist() == approx([1.0, 1 / 4, 0.0])
    assert hit_rate_at_k(ranks, 4).tolist() == [1.0, 1.0, 0.0]


def test_tied_targets_take_distinct_positions():
    # Two targets both with 2 items strictly above them (they tie): positions 2 and 3 in the list. With K = 3
    # only one fits: recall 1/2; NDCG = (1/log2(4)) / (1 + 1/log2(3)); MAP = (1/3) / 2.
    ranks, offsets = torch.tensor([2, 2]), torch.tensor([0, 2])
    assert recall_at_k(ranks, 3, offsets).tolist() == [0.5]
    assert ndcg_at_k(ranks, 3, offsets).tolist() == approx([(1 / math.log2(4)) / (1 + 1 / math.log2(3))])
    assert map_at_k(ranks, 3, offsets).tolist() == approx([(1 / 3) / 2])
    # A tie never makes NDCG or MAP exceed 1: two targets at rank 0 fill positions 0 and 1.
    assert ndcg_at_k(torch.tensor([0, 0]), 3, offsets).tolist() == approx([1.0])
    assert map_at_k(torch.tensor([0, 0]), 3, offsets).tolist() == approx([1.0])


def test_user_without_target_is_rejected():
    with pytest.raises(ValueError, match="user 1 of the batch has no target"):
        recall_at_k(torch.tensor([0, 1]), 5, torch.tensor([0, 2, 2]))


def test_accumulator_means_over_batches():
    acc = MetricAccumulator(ks=[5, 1], metrics=["ndcg", "hr", "recall", "mrr", "map"], keep_per_user=True)
    acc.update(RANKS[:2], OFFSETS[:3])  # users A and B
    acc.update(RANKS[2:], OFFSETS[2:] - 2)  # user C
    result = acc.compute()
    assert result["users"] == 3
    assert list(result) == [
        *("ndcg@1", "ndcg@5", "hr@1", "hr@5", "recall@1", "recall@5", "mrr", "map@1", "map@5", "users"),
    ]
    assert result["hr@5"] == pytest.approx(2 / 3)
    assert result["hr@1"] == pytest.approx(1 / 3)  # only A has rank 0
    assert result["mrr"] == pytest.approx((1 + 1 / 8 + 1 / 2) / 3)
    assert result["recall@5"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    per_user = acc.per_user()
    assert torch.equal(per_user["ndcg@5"], ndcg_at_k(RANKS, 5, OFFSETS))
    assert result["ndcg@5"] == pytest.approx(float(per_user["ndcg@5"].mean()))


def test_accumulator_coverage_by_hand():
    # N = 6. Top-2 lists [1, 2], [4, 3] and [5, 0] (0 = "no item"). Top-1 covers {1, 4, 5} -> 3/6;
    # top-2 covers {1, 2, 3, 4, 5} -> 5/6.
    acc = MetricAccumulator(ks=[1, 2], metrics=["hr", "coverage"], num_items=6)
    acc.update(torch.tensor([0, 5]), topk_ids=torch.tensor([[1, 2], [4, 3]]))
    acc.update(torch.tensor([1]), topk_ids=torch.tensor([[5, 0]]))
    result = acc.compute()
    assert result["coverage@1"] == pytest.approx(3 / 6)
    assert result["coverage@2"] == pytest.approx(5 / 6)
    assert result["hr@2"] == pytest.approx(2 / 3)


def test_accumulator_rejects_bad_config():
    with pytest.raises(ConfigError, match="unknown metric"):
        MetricAccumulator(metrics=["ndcg", "auc"])
    with pytest.raises(ConfigError, match="ks"):
        MetricAccumulator(ks=[0])
    with pytest.raises(ValueError, match="num_items"):
        MetricAccumulator(metrics=["coverage"])
    acc = MetricAccumulator()
    acc.all_reduce()  # not distributed: a no-op, but still only once
    with pytest.raises(RuntimeError, match="twice"):
        acc.all_reduce()


# ---- 2-process gloo reduction -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _shard(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank 0 evaluates users A and B, rank 1 user C (uneven shards on purpose)."""
    if rank == 0:
        return RANKS[:2], OFFSETS[:3], torch.tensor([[1, 2], [4, 3]])
    return RANKS[2:], OFFSETS[2:] - 2, torch.tensor([[5, 0]])


def _reduce_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        acc = MetricAccumulator(ks=[1, 2], metrics=ALL_METRICS, num_items=6)
        ranks, offsets, topk_ids = _shard(rank)
        acc.update(ranks, offsets, topk_ids)
        acc.all_reduce()
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(acc.compute(), f)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_accumulator_all_reduce_across_two_gloo_processes(tmp_path):
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_reduce_worker, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    single = MetricAccumulator(ks=[1, 2], metrics=ALL_METRICS, num_items=6)
    single.update(RANKS, OFFSETS, torch.tensor([[1, 2], [4, 3], [5, 0]]))
    expected = single.compute()
    assert expected["users"] == 3 and expected["coverage@2"] == pytest.approx(5 / 6)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-12), (rank, name)
