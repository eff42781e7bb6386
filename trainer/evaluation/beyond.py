"""Beyond-accuracy metrics of the top-K lists: coverage, Gini, popularity, novelty, diversity, serendipity.

Definitions (list ``L_u`` = user u's top K, ``pop_i`` = train count of item i, ``U`` = users, ``N`` = items):

* ``coverage@K``: share of the N items in at least one list.
* ``gini@K``: Gini index of how often each of the N items is recommended (0 = all equally, 1 = one item only):
  ``sum_i (2i - N - 1) c_(i) / (N sum c)`` over the counts sorted ascending.
* ``avg_pop@K``: mean ``pop_i`` over the list (average recommendation popularity, ARP).
* ``novelty@K``: mean self-information ``-log2(max(pop_i, 1) / U)`` (clipped at 0) over the list.
* ``ild@K``: intra-list diversity, the mean distance over the list's pairs: Jaccard distance of the items'
  category sets where the dataset has a categorical item feature, else cosine distance of the model's item
  embeddings (then only comparable between runs of one model family).
* ``unexpectedness@K``: share of the list not in the most-popular recommender's top K for the same user (seen
  items removed as the protocol says); ``serendipity@K``: share of the list that is both unexpected and a target.

All but coverage and Gini are per-user values, also reported by history-length bucket and by the popularity
bucket of the user's (first) target: head / torso / tail = the most popular items holding the first third of
train interactions, the next third, the last third.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from trainer.data.schema import ITEMS, Manifest

LENGTH_EDGES = (5, 10, 20, 50, 100)  # history-length buckets 1-5, 6-10, 11-20, 21-50, 51-100, 101+
POP_BUCKETS = ("head", "torso", "tail")
PER_USER = ("avg_pop", "novelty", "ild", "unexpectedness", "serendipity")
CURVE_BINS = 10
MAX_CATEGORY_CODES = 4096  # wider features would need a dense (N + 1, codes) matrix: use embeddings instead


def length_bucket_names() -> list[str]:
    """``["1-5", "6-10", ..., "101+"]``."""
    lows = [1, *(e + 1 for e in LENGTH_EDGES)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, LENGTH_EDGES)] + [f"{lows[-1]}+"]


def popularity_buckets(popularity: torch.Tensor) -> torch.Tensor:
    """``(N + 1,) int64`` bucket of each item (0 head, 1 torso, 2 tail) by cumulative share of interactions."""
    pop = popularity.to(torch.float64).clone()
    pop[0] = 0
    order = torch.argsort(pop, descending=True, stable=True)
    before = torch.cumsum(pop[order], 0) - pop[order]  # interactions of more popular items
    share = before / pop.sum().clamp(min=1)
    bucket = torch.empty_like(order)
    bucket[order] = torch.bucketize(share, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64), right=True)
    return bucket


def popularity_bins(popularity: torch.Tensor, bins: int = CURVE_BINS) -> torch.Tensor:
    """``(N + 1,) int64`` decile (0 = most popular tenth of the catalogue) of each item; padding gets -1."""
    n = popularity.numel() - 1
    order = torch.argsort(popularity[1:].to(torch.float64), descending=True, stable=True)
    out = torch.full((n + 1,), -1, dtype=torch.int64)
    out[order + 1] = torch.arange(n) * bins // max(n, 1)
    return out


def gini(counts: torch.Tensor) -> float:
    """Gini index of non-negative counts (0 = uniform, -> 1 = concentrated on one entry)."""
    c = torch.sort(counts.to(torch.float64)).values
    n, total = c.numel(), float(c.sum())
    if n == 0 or total == 0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * c).sum() / (n * total))


def intra_list_distance(ids: torch.Tensor, vectors: torch.Tensor, jaccard: bool) -> torch.Tensor:
    """``(B,)`` mean pairwise distance within each row of ``ids (B, K)``; padding ids (0) are left out."""
    v = vectors[ids].to(torch.float64)  # (B, K, D)
    valid = (ids > 0).to(torch.float64)
    if jaccard:
        inter = v @ v.transpose(1, 2)
        size = v.sum(-1)
        union = size.unsqueeze(2) + size.unsqueeze(1) - inter
        dist_ = 1 - torch.where(union > 0, inter / union.clamp(min=1e-12), 1.0)
    else:
        unit = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        dist_ = 1 - unit @ unit.transpose(1, 2)
    pair = valid.unsqueeze(2) * valid.unsqueeze(1) * (1 - torch.eye(ids.shape[1], dtype=torch.float64))
    return (dist_ * pair).sum((1, 2)) / pair.sum((1, 2)).clamp(min=1)


def category_vectors(folder: str | Path, manifest: Manifest) -> torch.Tensor | None:
    """``(N + 1, C)`` multi-hot category codes of the first categorical item feature, or None if there is none."""
    for name, spec in manifest.features.get("items", {}).items():
        if spec.get("kind") not in ("categorical", "multi") or int(spec["cardinality"]) > MAX_CATEGORY_CODES:
            continue
        column = pq.read_table(Path(folder) / ITEMS, columns=["item_idx", name])
        codes = column.column(name).combine_chunks()
        items = column.column("item_idx").to_numpy().astype(np.int64)
        if spec["kind"] == "multi":
            lengths = np.diff(codes.offsets.to_numpy())
            rows, cols = np.repeat(items, lengths), codes.values.to_numpy().astype(np.int64)
        else:
            rows, cols = items, codes.to_numpy(zero_copy_only=False).astype(np.int64)
        out = torch.zeros(manifest.num_items + 1, int(spec["cardinality"]), dtype=torch.float32)
        keep = cols > 0  # code 0 = unknown
        out[torch.from_numpy(rows[keep]), torch.from_numpy(cols[keep])] = 1.0
        return out
    return None


def train_popularity(folder: str | Path, num_items: int) -> torch.Tensor:
    """``(N + 1,) float64`` train count of every item id (0 for padding), from ``items.parquet``."""
    pop = pq.read_table(Path(folder) / ITEMS, columns=["item_idx", "popularity"])
    popularity = torch.zeros(num_items + 1, dtype=torch.float64)
    idx = torch.from_numpy(pop.column("item_idx").to_numpy().astype(np.int64))
    popularity[idx] = torch.from_numpy(pop.column("popularity").to_numpy().astype(np.float64))
    return popularity


def build(folder: str | Path, manifest: Manifest, k: int, device: torch.device) -> BeyondAccuracy:
    """The accumulator of a dataset folder: its train popularity, user count and categories (if any)."""
    popularity = train_popularity(folder, manifest.num_items)
    return BeyondAccuracy(k, popularity, manifest.num_users, category_vectors(folder, manifest), device)


class BeyondAccuracy:
    """Accumulates the beyond-accuracy metrics of top-K lists over batches (and ranks).

    Args:
        k: list length K.
        popularity: ``(N + 1,)`` train counts (index 0 = padding).
        num_users: U, for novelty.
        categories: ``(N + 1, C)`` multi-hot categories from `category_vectors`, or None (then ILD uses the item
            embeddings passed to `update`).
        device: where the totals live (the process group's device).
    """

    def __init__(
        self,
        k: int,
        popularity: torch.Tensor,
        num_users: int,
        categories: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.k, self.device = k, torch.device(device)
        self.popularity = popularity.to(torch.float64)
        self.info = (-torch.log2(self.popularity.clamp(min=1) / max(num_users, 1))).clamp(min=0)
        self.pop_bucket, self.bins = popularity_buckets(self.popularity), popularity_bins(self.popularity)
        self.categories = categories
        self.counts = torch.zeros(popularity.numel(), dtype=torch.float64, device=self.device)
        self.target_counts = torch.zeros_like(self.counts)
        self.groups = len(LENGTH_EDGES) + 1 + len(POP_BUCKETS)
        self.sums = torch.zeros(self.groups, len(PER_USER) + 3, dtype=torch.float64, device=self.device)
        self._per_user: list[dict[str, torch.Tensor]] = []

    def update(
        self,
        topk: torch.Tensor,
        popular: torch.Tensor,
        targets: torch.Tensor,
        history_length: torch.Tensor,
        ndcg: torch.Tensor,
        hit: torch.Tensor,
        item_emb: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Add one batch and return its per-user values ``name -> (B,) float64``.

        Args:
            topk: ``(B, >=K)`` recommended ids (0 = no item); popular: ``(B, >=K)`` the most-popular recommender's
            ids for the same users; targets: ``(B,)`` each user's first target; history_length: ``(B,)``;
            ndcg / hit: ``(B,)`` the user's NDCG@K and HR@K (reported per bucket); item_emb: ``(N + 1, D)``.
        """
        ids = topk[:, : self.k].cpu()
        valid = (ids > 0).to(torch.float64)
        size = valid.sum(1).clamp(min=1)
        unexpected = valid * ~(ids.unsqueeze(2) == popular[:, : self.k].cpu().unsqueeze(1)).any(2)
        relevant = (ids == targets.cpu().unsqueeze(1)).to(torch.float64)
        vectors, jaccard = (self.categories, True) if self.categories is not None else (item_emb.cpu(), False)
        values = {
            "avg_pop": (self.popularity[ids] * valid).sum(1) / size,
            "novelty": (self.info[ids] * valid).sum(1) / size,
            "ild": intra_list_distance(ids, vectors, jaccard),
            "unexpectedness": unexpected.sum(1) / size,
            "serendipity": (unexpected * relevant).sum(1) / self.k,
        }
        self.counts += torch.bincount(ids.reshape(-1), minlength=self.counts.numel()).to(self.counts)
        self.target_counts += torch.bincount(targets.cpu(), minlength=self.counts.numel()).to(self.counts)
        rows = torch.stack([values[n] for n in PER_USER] + [ndcg.cpu(), hit.cpu(), torch.ones_like(size)], 1)
        length_group = torch.bucketize(history_length.cpu(), torch.tensor(LENGTH_EDGES), right=False)
        pop_group = len(LENGTH_EDGES) + 1 + self.pop_bucket[targets.cpu()]
        for group in (length_group, pop_group):
            self.sums.index_add_(0, group.to(self.device), rows.to(self.device))
        values["history_length"] = history_length.cpu().to(torch.float64)
        values["target_bucket"] = self.pop_bucket[targets.cpu()].to(torch.float64)
        return values

    def all_reduce(self) -> None:
        """SUM the counts and bucket totals over ranks; call once on every rank."""
        if dist.is_available() and dist.is_initialized():
            for t in (self.counts, self.target_counts, self.sums):
                dist.all_reduce(t)

    def compute(self) -> dict[str, Any]:
        """Overall values (``"coverage@K"``, ``"gini@K"``, ...), and ``buckets`` / ``popularity_curve`` dicts."""
        k, counts = self.k, self.counts[1:].cpu()
        totals = self.sums[: len(LENGTH_EDGES) + 1].sum(0).cpu()
        users = max(float(totals[-1]), 1.0)
        out: dict[str, Any] = {f"{n}@{k}": float(totals[i]) / users for i, n in enumerate(PER_USER)}
        out[f"gini@{k}"] = gini(counts)
        names = [*length_bucket_names(), *POP_BUCKETS]
        buckets: dict[str, dict[str, float]] = {}
        for name, row in zip(names, self.sums.cpu()):
            n = float(row[-1])
            means = {m: float(row[i]) / n for i, m in enumerate([*PER_USER, f"ndcg@{k}", f"hr@{k}"])} if n else {}
            buckets[name] = {**means, "users": int(n)}
        out["buckets"] = {
            "history_length": {n: buckets[n] for n in names[: len(LENGTH_EDGES) + 1]},
            "target_popularity": {n: buckets[n] for n in POP_BUCKETS},
        }
        out["popularity_curve"] = self._curve()
        return out

    def _curve(self) -> dict[str, list[float]]:
        """Share of recommendations, targets and catalogue items per popularity decile (most popular first)."""
        bins = self.bins[1:]

        def shares(weights: torch.Tensor) -> list[float]:
            per_bin = torch.zeros(CURVE_BINS, dtype=torch.float64).index_add_(0, bins, weights.to(torch.float64))
            return (per_bin / per_bin.sum().clamp(min=1e-12)).tolist()

        return {
            "recommended": shares(self.counts[1:].cpu()),
            "targets": shares(self.target_counts[1:].cpu()),
            "catalogue": shares(torch.ones(bins.numel())),
            "train_interactions": shares(self.popularity[1:]),
        }
