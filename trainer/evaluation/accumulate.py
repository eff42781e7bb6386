"""One evaluation pass: ranks every batch under the configured protocol and accumulates all metrics.

`trainer.evaluate.evaluate_model` feeds it the query vectors of each batch; it owns the choice between full
ranking (seen items removed or not, as ``eval.protocol`` says) and the sampled protocol, the rank metrics, the
share of targets the protocol removed, and the beyond-accuracy metrics (`trainer.evaluation.beyond`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from modules.rerank import mmr, popularity_penalty
from trainer.config import EvalConfig
from trainer.data.schema import Manifest
from trainer.evaluation import beyond
from trainer.evaluation.metrics import MetricAccumulator, hit_rate_at_k, ndcg_at_k
from trainer.evaluation.ranking import FullRanking, full_ranking, sample_negatives, sampled_ranks
from trainer.evaluation.results import protocol_labels

RANK = ("ndcg", "hr", "recall", "mrr", "map")


class EvaluationPass:
    """Metrics of one model on one split, batch by batch.

    Args:
        cfg: the evaluation settings; manifest: the dataset's manifest; folder: the dataset folder.
        items: ``(N + 1, D)`` item embeddings (row 0 = padding); seen_index: `trainer.evaluate.SeenIndex` of
            the split (the full histories), or None when neither the protocol nor the metrics need it.
        device: the process group's device; keep_per_user: keep every user's values for the per-user file.
    """

    def __init__(
        self,
        cfg: EvalConfig,
        manifest: Manifest,
        folder: str,
        items: torch.Tensor,
        seen_index: Any,
        device: torch.device,
        keep_per_user: bool,
    ) -> None:
        self.cfg, self.manifest, self.items, self.seen_index = cfg, manifest, items, seen_index
        self.sampled = cfg.sampled_negatives > 0
        self.remove_seen = cfg.protocol == "seen_removed"
        self.acc = MetricAccumulator(
            ks=cfg.ks,
            metrics=RANK if self.sampled else (*RANK, "coverage"),
            num_items=manifest.num_items,
            keep_per_user=keep_per_user,
        )
        self.removed = torch.zeros(2, dtype=torch.float64, device=device)  # removed targets, all targets
        self.beyond = None
        self.popularity = beyond.train_popularity(folder, manifest.num_items).to(items)
        if cfg.beyond_k and not self.sampled:
            self.beyond = beyond.build(folder, manifest, cfg.beyond_k, device)
            self.popular = self.popularity.unsqueeze(1)  # (N + 1, 1) "embeddings" that rank by popularity
        self.generator = torch.Generator().manual_seed(1234 + (dist.get_rank() if dist.is_initialized() else 0))
        self.users: list[torch.Tensor] = []
        self.extra: list[dict[str, torch.Tensor]] = []
        self.keep_per_user = keep_per_user

    def add(self, batch: Any, queries: torch.Tensor) -> None:
        """Rank one batch's targets for its ``(B, D)`` queries and accumulate every metric."""
        targets = batch.sparse["target"]
        seen = self.seen_index.gather(batch.user_idx) if self.seen_index is not None else None
        first = targets.values()[targets.offsets()[:-1]]
        self.users.append(batch.user_idx.cpu())
        if self.sampled:
            negatives = sample_negatives(
                self.manifest.num_items, first, seen, self.cfg.sampled_negatives, self.generator
            )
            self.acc.update(sampled_ranks(queries, self.items, first, negatives))
            return
        mask = seen if self.remove_seen else None
        jagged = (targets.values(), targets.offsets())
        k = max(self.cfg.ks)
        depth = max(k, self.cfg.bias_candidates) if self.cfg.bias_rerank != "none" else k
        result = full_ranking(queries, self.items, depth, jagged, mask, self.cfg.item_chunk)
        if self.cfg.bias_rerank != "none":
            result = self._rerank(result, targets, k)
        self.acc.update(result.ranks.rank, targets.offsets(), topk_ids=result.ids)
        self.removed[0] += result.ranks.removed.sum()
        self.removed[1] += targets.values().numel()
        if self.beyond is not None:
            self._add_beyond(result, targets, first, seen, mask)

    def _rerank(self, result: FullRanking, targets: Any, k: int) -> FullRanking:
        """Re-rank the candidates; a target's rank becomes its position in the new top k, else max(rank, k).

        Metrics at cutoffs up to k are exact for the re-ranked list; MRR of a target outside it keeps the
        model's own rank (at least k).
        """
        cfg = self.cfg
        if cfg.bias_rerank == "popularity":
            ids = popularity_penalty(result.scores, result.ids, self.popularity, cfg.bias_strength, k)
        else:
            ids = mmr(result.scores, result.ids, self.items, cfg.bias_strength, k)
        rows = torch.repeat_interleave(
            torch.arange(ids.shape[0], device=ids.device), targets.offsets()[1:] - targets.offsets()[:-1]
        )
        match = ids[rows] == targets.values().unsqueeze(1)
        found = match.any(1)
        rank = torch.where(found, match.int().argmax(1), result.ranks.rank.clamp(min=k))
        return FullRanking(None, ids, result.ranks._replace(rank=rank))

    def _add_beyond(self, result: Any, targets: Any, first: torch.Tensor, seen: Any, mask: Any) -> None:
        k = self.cfg.beyond_k
        ones = torch.ones(first.numel(), 1, dtype=self.items.dtype, device=self.items.device)
        popular = full_ranking(ones, self.popular, k, seen=mask, item_chunk=self.cfg.item_chunk).ids
        rank, offsets = result.ranks.rank, targets.offsets()
        values = self.beyond.update(
            result.ids,
            popular,
            first,
            seen[1][1:] - seen[1][:-1],
            ndcg_at_k(rank, k, offsets),
            hit_rate_at_k(rank, k, offsets),
            self.items,
        )
        if self.keep_per_user:
            self.extra.append(values)

    def per_user(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This rank's users and their values ``name -> (users,)``, in the order they were added."""
        users = torch.cat(self.users) if self.users else torch.empty(0, dtype=torch.int64)
        values = self.acc.per_user()
        if self.extra:
            values.update({name: torch.cat([e[name] for e in self.extra]) for name in self.extra[0]})
        return users, values

    def finish(self, split: str) -> dict[str, Any]:
        """Reduce over ranks (call on every rank) and return the metrics with the protocol's labels."""
        self.acc.all_reduce()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.removed)
        metrics: dict[str, Any] = self.acc.compute()
        if not self.sampled:
            metrics["removed_targets"] = float(self.removed[0] / self.removed[1].clamp(min=1))
        if self.beyond is not None:
            self.beyond.all_reduce()
            metrics.update(self.beyond.compute())
        return {**metrics, **protocol_labels(self.manifest, split, self.cfg.protocol, self.cfg.sampled_negatives)}
