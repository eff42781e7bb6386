"""Ranking metrics from target ranks, per user, and an accumulator that reduces them across ranks.

Every metric function takes the 0-based ranks of the users' targets (from `target_ranks` or `sampled_ranks`)
and returns one ``float64`` value per user, so a later significance test can pair users across models.
A user's targets are jagged: ``ranks: (T,) int64`` with ``offsets: (B + 1,) int64``; ``offsets=None`` means
one target per user. Every user needs at least one target.

Several targets of one user can share a rank when their scores tie (each rank counts items strictly
higher). They cannot share a position in a ranked list, so within a user the ranks are first turned into
distinct positions (sorted ascending; a tied target moves to the next free position). With one target per
user the position is the rank.

Definitions (``pos_j``: position of the user's j-th target in ascending order, ``L``: number of targets):

* ``hr@K``     = 1 if any ``pos_j < K`` else 0.
* ``recall@K`` = #{j: pos_j < K} / L.
* ``ndcg@K``   = sum_{pos_j < K} 1 / log2(pos_j + 2), divided by the ideal DCG
  sum_{i < min(L, K)} 1 / log2(i + 2).
* ``mrr``      = 1 / (pos_0 + 1), no cutoff.
* ``map@K``    = sum_{pos_j < K} ((j + 1) / (pos_j + 1)) / min(L, K).
* ``coverage@K`` = fraction of the N catalogue items that appear in at least one user's top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from trainer.errors import ConfigError

RANK_METRICS = ("ndcg", "hr", "recall", "mrr", "map")
ALL_METRICS = (*RANK_METRICS, "coverage")


class _Targets:
    """Per-user layout of ranks: users, sorted distinct positions, and each target's index within its user."""

    def __init__(self, ranks: torch.Tensor, offsets: torch.Tensor | None) -> None:
        ranks = ranks.reshape(-1).to(torch.int64)
        if offsets is None:
            offsets = torch.arange(ranks.numel() + 1, device=ranks.device)
        offsets = offsets.to(device=ranks.device, dtype=torch.int64)
        if offsets.dim() != 1 or int(offsets[-1]) != ranks.numel():
            raise ValueError(
                f"offsets must be (B + 1,) ending at T = {ranks.numel()}, got shape {tuple(offsets.shape)}"
            )
        self.lengths = offsets[1:] - offsets[:-1]
        if self.lengths.numel() and int(self.lengths.min()) < 1:
            raise ValueError(
                f"user {int(torch.argmin(self.lengths))} of the batch has no target; drop it first"
            )
        self.batch = self.lengths.numel()
        self.rows = torch.repeat_interleave(torch.arange(self.batch, device=ranks.device), self.lengths)
        first = offsets[:-1]
        if ranks.numel() == self.batch:  # one target each: positions are the ranks
            self.positions, self.index = ranks, torch.zeros_like(ranks)
            return
        span = int(ranks.max()) + 1 if ranks.numel() else 1
        order = torch.argsort(self.rows * span + ranks)  # by user, then rank; users stay in offset order
        ranks = ranks[order]
        self.index = torch.arange(ranks.numel(), device=ranks.device) - first[self.rows]
        # pos_j = j + max_{i <= j}(rank_i - i) within a user: ties move to the next free position. The cummax
        # runs over all users at once by lifting each user above every earlier one.
        lift = self.rows * (span + int(self.lengths.max()) + 1)
        self.positions = self.index + torch.cummax(ranks - self.index + lift, dim=0).values - lift

    def per_user_sum(self, values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.batch, dtype=torch.float64, device=values.device)
        return out.index_add_(0, self.rows, values.to(torch.float64))


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(k, device=device, dtype=torch.float64) + 2.0)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"K must be >= 1, got {k}")


def _hit(t: _Targets, k: int) -> torch.Tensor:
    return (t.per_user_sum(t.positions < k) > 0).to(torch.float64)


def _recall(t: _Targets, k: int) -> torch.Tensor:
    return t.per_user_sum(t.positions < k) / t.lengths


def _ndcg(t: _Targets, k: int) -> torch.Tensor:
    gain = torch.where(t.positions < k, 1.0 / torch.log2(t.positions.to(torch.float64) + 2.0), 0.0)
    ideal = torch.cumsum(_discounts(k, t.rows.device), 0)[torch.clamp(t.lengths, max=k) - 1]
    return t.per_user_sum(gain) / ideal


def _mrr(t: _Targets) -> torch.Tensor:
    best = torch.full((t.batch,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=t.rows.device)
    best = best.scatter_reduce(0, t.rows, t.positions, reduce="amin")
    return 1.0 / (best.to(torch.float64) + 1.0)


def _map(t: _Targets, k: int) -> torch.Tensor:
    precision = (t.index + 1).to(torch.float64) / (t.positions + 1).to(torch.float64)
    return t.per_user_sum(torch.where(t.positions < k, precision, 0.0)) / torch.clamp(t.lengths, max=k)


_AT_K = {"ndcg": _ndcg, "hr": _hit, "recall": _recall, "map": _map}


def hit_rate_at_k(ranks: torch.Tensor, k: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """HR@K per user ``(B,) float64``: 1 when any target is in the top K."""
    _check_k(k)
    return _hit(_Targets(ranks, offsets), k)


def recall_at_k(ranks: torch.Tensor, k: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Recall@K per user ``(B,) float64``: targets in the top K over the user's number of targets."""
    _check_k(k)
    return _recall(_Targets(ranks, offsets), k)


def ndcg_at_k(ranks: torch.Tensor, k: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """NDCG@K per user ``(B,) float64`` with binary relevance, normalised by the ideal DCG of min(L, K) hits."""
    _check_k(k)
    return _ndcg(_Targets(ranks, offsets), k)


def mrr(ranks: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean reciprocal rank per user ``(B,) float64``: 1 / (1 + best target rank), no cutoff."""
    return _mrr(_Targets(ranks, offsets))


def map_at_k(ranks: torch.Tensor, k: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """MAP@K per user ``(B,) float64``: precision at each hit in the top K, summed, over min(L, K)."""
    _check_k(k)
    return _map(_Targets(ranks, offsets), k)


class MetricAccumulator:
    """Sums per-user metrics over batches (and ranks) and reports their means.

    Args:
        ks: cutoffs K, e.g. ``(10, 20)``; every @K metric is reported for each.
        metrics: names from ``ALL_METRICS``: ``ndcg``, ``hr``, ``recall``, ``mrr``, ``map``, ``coverage``.
        num_items: N, required for ``coverage`` (a boolean (len(ks), N + 1) mask of items in any top K).
        device: where totals live; use the process group's device (CUDA for nccl, CPU for gloo).
        keep_per_user: also keep every user's values (on CPU, this rank only) for significance tests.

    Example::

        acc = MetricAccumulator(ks=[10], num_items=n)
        for batch in loader:
            _, ids = topk_full_ranking(q, emb, 10, seen)
            acc.update(target_ranks(q, emb, targets, seen).rank, target_offsets, topk_ids=ids)
        acc.all_reduce()  # every rank, once
        acc.compute()  # {"ndcg@10": ..., "hr@10": ..., ..., "coverage@10": ..., "users": n}
    """

    def __init__(
        self,
        ks: Sequence[int] = (10,),
        metrics: Sequence[str] = RANK_METRICS,
        num_items: int | None = None,
        device: torch.device | str = "cpu",
        keep_per_user: bool = False,
    ) -> None:
        unknown = sorted(set(metrics) - set(ALL_METRICS))
        if unknown:
            raise ConfigError(f"metrics: unknown metric(s) {unknown}; choose from {list(ALL_METRICS)}")
        if not ks or min(ks) < 1:
            raise ConfigError(f"ks: cutoffs must be a non-empty list of integers >= 1, got {list(ks)}")
        if "coverage" in metrics and not num_items:
            raise ValueError("the coverage metric needs num_items (the catalogue size N)")
        self.ks, self.metrics, self.num_items = sorted(set(ks)), list(dict.fromkeys(metrics)), num_items
        self.device, self.keep_per_user = torch.device(device), keep_per_user
        self.names = [
            name
            for m in self.metrics
            if m != "coverage"
            for name in (["mrr"] if m == "mrr" else [f"{m}@{k}" for k in self.ks])
        ]
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.totals = torch.zeros(
            len(self.names) + 1, dtype=torch.float64, device=self.device
        )  # last = users
        size = (self.num_items or 0) + 1
        self.covered = torch.zeros((len(self.ks), size), dtype=torch.uint8, device=self.device)
        self._per_user: list[dict[str, torch.Tensor]] = []
        self._reduced = False

    def per_user_values(
        self, ranks: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every configured rank metric for one batch, ``name -> (B,) float64``."""
        targets = _Targets(ranks, offsets)  # sorted and de-tied once for every metric
        values = {}
        for metric in self.metrics:
            if metric == "mrr":
                values["mrr"] = _mrr(targets)
            elif metric != "coverage":
                values.update({f"{metric}@{k}": _AT_K[metric](targets, k) for k in self.ks})
        return values

    def update(
        self, ranks: torch.Tensor, offsets: torch.Tensor | None = None, topk_ids: torch.Tensor | None = None
    ) -> None:
        """Add one batch: target ranks (jagged by ``offsets``) and, for coverage, the ``(B, k)`` top-k ids."""
        if self._reduced:
            raise RuntimeError("update() after all_reduce(); call reset() to start a new evaluation")
        values = self.per_user_values(ranks, offsets)
        batch = ranks.numel() if offsets is None else offsets.numel() - 1
        sums = [values[name].sum() for name in self.names] + [torch.tensor(float(batch), dtype=torch.float64)]
        self.totals += torch.stack([s.to(self.device) for s in sums])
        if self.keep_per_user:
            self._per_user.append({name: v.cpu() for name, v in values.items()})
        if "coverage" in self.metrics:
            if topk_ids is None:
                raise ValueError("coverage needs topk_ids from topk_full_ranking in update()")
            self._cover(topk_ids.to(self.device))

    def _cover(self, topk_ids: torch.Tensor) -> None:
        if topk_ids.shape[1] < min(self.ks[-1], self.num_items):
            raise ValueError(
                f"topk_ids has {topk_ids.shape[1]} columns; coverage@{self.ks[-1]} needs that many"
            )
        for i, k in enumerate(self.ks):
            self.covered[i, topk_ids[:, :k].reshape(-1)] = 1  # id 0 marks "no item" and is not counted

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> None:
        """Combine all ranks' totals (SUM) and coverage masks (MAX); call once on every rank."""
        if self._reduced:
            raise RuntimeError("all_reduce() called twice; the totals would be counted again")
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.totals, op=dist.ReduceOp.SUM, group=group)
            if "coverage" in self.metrics:
                dist.all_reduce(self.covered, op=dist.ReduceOp.MAX, group=group)
        self._reduced = True

    def compute(self) -> dict[str, float]:
        """Means over users, e.g. ``{"ndcg@10": .., "mrr": .., "coverage@10": .., "users": n}``."""
        users = int(self.totals[-1].item())
        means = (self.totals[:-1] / max(users, 1)).tolist() if users else [float("nan")] * len(self.names)
        result: dict[str, float] = dict(zip(self.names, means))
        if "coverage" in self.metrics:
            covered = self.covered[:, 1:].sum(dim=1).to(torch.float64) / self.num_items
            result.update({f"coverage@{k}": float(c) for k, c in zip(self.ks, covered.tolist())})
        result["users"] = users
        return result

    def per_user(self) -> dict[str, torch.Tensor]:
        """This rank's per-user values in update order, ``name -> (users,) float64`` (needs keep_per_user)."""
        if not self.keep_per_user:
            raise RuntimeError("construct MetricAccumulator(keep_per_user=True) to keep per-user values")
        return {name: torch.cat([p[name] for p in self._per_user]) for name in self.names if self._per_user}
