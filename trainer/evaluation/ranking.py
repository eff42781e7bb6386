"""Ranking kernels for evaluation: full-catalogue top-k, exact target ranks, and the sampled protocol.

Every function scores a batch of B query vectors against the item table with a matmul, one item chunk at a
time, so memory stays O(B * (chunk + k)) even for a catalogue of millions of items. No per-user Python loop:
seen-item filtering is a scatter into the chunk's score matrix.

Conventions shared by all functions:

* ``item_emb: (N + 1, D)``; row 0 is padding and is never ranked, so the rankable items are ids 1..N.
* Jagged ids per query travel as ``(values, offsets)``: ``values: (T,) int64``, ``offsets: (B + 1,) int64``
  (the same layout as a `KeyedJaggedTensor` key). Seen ids outside 1..N (e.g. padding 0) are ignored.
* Scores are ``queries @ item_emb.T`` in the inputs' dtype; upcast the inputs for fp32 scores.
* Ties: equal scores rank the lower item id first (`topk_full_ranking`); a target's rank counts only items
  scoring *strictly* higher, and the number of equal-scoring items is returned beside it so a caller can
  break ties at random (`target_ranks`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Jagged = tuple[torch.Tensor, torch.Tensor]

DEFAULT_ITEM_CHUNK = 65536


class TargetRanks(NamedTuple):
    """Per-target result of `target_ranks`: ``rank`` and ``ties`` ``(T,) int64``, ``removed`` ``(T,) bool``."""

    rank: torch.Tensor
    """0-based rank: the number of rankable items scoring strictly higher than the target; N when removed."""
    ties: torch.Tensor
    """The number of other rankable items scoring exactly the target's score (0 when removed)."""
    removed: torch.Tensor
    """True where the target is in its own query's seen list, so it was removed from the ranking (a miss)."""


def _rows_of(offsets: torch.Tensor, batch: int | None = None, name: str = "offsets") -> torch.Tensor:
    """The query row of every value of a jagged tensor: ``(T,) int64``."""
    if offsets.dim() != 1 or (batch is not None and offsets.numel() != batch + 1):
        raise ValueError(f"{name} must be (B + 1,) = ({batch} + 1,), got shape {tuple(offsets.shape)}")
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths)


def _num_items(item_emb: torch.Tensor) -> int:
    if item_emb.dim() != 2 or item_emb.shape[0] < 1:
        raise ValueError(
            f"item_emb must be (N + 1, D) with row 0 = padding, got shape {tuple(item_emb.shape)}"
        )
    return item_emb.shape[0] - 1


def _chunk_starts(num_items: int, item_chunk: int) -> list[int]:
    if item_chunk < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    return list(range(1, num_items + 1, item_chunk))


class _ByChunk:
    """(row, item) pairs sorted by item, so each item chunk's pairs are one contiguous slice.

    Built once per call (one sort and one host sync), instead of a boolean filter over all pairs per chunk.
    """

    def __init__(self, items: torch.Tensor, rows: torch.Tensor, starts: list[int], num_items: int) -> None:
        keep = (items >= 1) & (items <= num_items)
        self.order = torch.nonzero(keep).squeeze(1)  # position of each pair in the caller's input
        if len(starts) > 1:  # one chunk needs no sort
            self.order = self.order[torch.argsort(items[self.order])]
        self.items, self.rows = items[self.order], rows[self.order]
        edges = torch.tensor([*starts, num_items + 1], dtype=items.dtype, device=items.device)
        self.bounds = (
            torch.searchsorted(self.items, edges).tolist() if len(starts) > 1 else [0, len(self.items)]
        )

    def chunk(self, i: int) -> slice:
        return slice(self.bounds[i], self.bounds[i + 1])


def _seen_pairs(
    seen: Jagged | None, batch: int, starts: list[int], num_items: int, device: torch.device
) -> _ByChunk | None:
    if seen is None:
        return None
    values, offsets = (t.to(device=device, dtype=torch.int64) for t in seen)
    return _ByChunk(values, _rows_of(offsets, batch, "seen offsets"), starts, num_items)


def _mask_seen(scores: torch.Tensor, seen: _ByChunk | None, start: int, i: int) -> torch.Tensor:
    """Set the chunk's seen (query, item) scores to -inf in place: one scatter, no per-query loop."""
    if seen is not None:
        sl = seen.chunk(i)
        scores[seen.rows[sl], seen.items[sl] - start] = float("-inf")
    return scores


def _order_by_score_then_id(scores: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score descending, equal scores by id ascending (two small stable sorts)."""
    by_id = torch.argsort(ids, dim=1)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return scores.gather(1, by_score), ids.gather(1, by_score)


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Per-row count of a boolean matrix; summing bytes into int32 is ~2x faster on CPU than bool -> int64."""
    return mask.view(torch.uint8).sum(dim=1, dtype=torch.int32).long()


def _chunk_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row with the lower column first among equal scores.

    `torch.topk` picks an unspecified subset when several columns tie with the k-th value. Asking for k + 1
    shows those rows (the (k+1)-th value equals the k-th); only they are redone with a stable full sort
    (rare with trained embeddings, every row with constant ones).
    """
    k = min(k, scores.shape[1])
    extra = min(k + 1, scores.shape[1])
    values, cols = torch.topk(scores, extra, dim=1)
    if extra > k:
        ambiguous = torch.nonzero(values[:, k] == values[:, k - 1]).squeeze(1)
        values, cols = values[:, :k], cols[:, :k]
        if ambiguous.numel():
            fixed = torch.sort(scores[ambiguous], dim=1, descending=True, stable=True)
            values[ambiguous], cols[ambiguous] = fixed.values[:, :k], fixed.indices[:, :k]
    return _order_by_score_then_id(values, cols)


class _RunningTopK:
    """Top-k merged across item chunks, ordered by (score desc, id asc)."""

    def __init__(self, queries: torch.Tensor, k: int) -> None:
        self.k = k
        self.scores = queries.new_empty((queries.shape[0], 0))
        self.ids = torch.empty((queries.shape[0], 0), dtype=torch.int64, device=queries.device)

    def update(self, scores: torch.Tensor, start: int) -> None:
        chunk_scores, cols = _chunk_topk(scores, self.k)
        # Both lists are ordered (score desc, id asc) and every earlier id is lower, so a stable sort of the
        # concatenation keeps the lower-id-first rule across chunks.
        merged_scores = torch.cat([self.scores, chunk_scores], dim=1)
        merged_ids = torch.cat([self.ids, cols + start], dim=1)
        order = torch.sort(merged_scores, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.scores, self.ids = merged_scores.gather(1, order), merged_ids.gather(1, order)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scores, self.ids.masked_fill(self.scores == float("-inf"), 0)


class _RankCounter:
    """Per target, counts the items of each chunk scoring strictly higher than it and exactly equal."""

    def __init__(
        self, queries: torch.Tensor, item_emb: torch.Tensor, targets: Jagged, starts: list[int], chunk: int
    ) -> None:
        num_items = item_emb.shape[0] - 1
        values, offsets = (t.to(device=queries.device, dtype=torch.int64) for t in targets)
        if values.numel() and (int(values.min()) < 1 or int(values.max()) > num_items):
            raise ValueError(f"target ids must lie in 1..{num_items} (0 is padding)")
        self.rows = _rows_of(offsets, queries.shape[0], "target offsets")
        self.by_chunk = _ByChunk(values, self.rows, starts, num_items)
        # One target per query (the common leave-one-out case): score rows already line up with targets.
        self.one_per_row = bool((offsets == torch.arange(offsets.numel(), device=offsets.device)).all())
        # With one chunk the main pass itself gives the targets' own scores (see `take_own_scores`).
        self.own = (
            self._own_scores(queries, item_emb, starts, chunk).unsqueeze(1) if len(starts) > 1 else None
        )
        self.higher = torch.zeros(values.numel(), dtype=torch.int64, device=queries.device)
        self.equal = torch.zeros_like(self.higher)

    def _own_scores(
        self, queries: torch.Tensor, item_emb: torch.Tensor, starts: list[int], chunk: int
    ) -> torch.Tensor:
        """Each target's score from the same chunk matmul its competitors get, so a tie is a true tie.

        A row-wise dot product can differ from the matmul in the last bit; ``queries[rows] @ chunk.T`` over the
        target's own chunk costs T * chunk * D extra (1/16 of the main pass for 1M items).
        """
        by_chunk = self.by_chunk
        scores = queries.new_empty(by_chunk.order.numel())
        for i, start in enumerate(starts):
            sl = by_chunk.chunk(i)
            if sl.start == sl.stop:
                continue
            sub = queries[by_chunk.rows[sl]] @ item_emb[start : start + chunk].T
            local = torch.arange(sl.stop - sl.start, device=sub.device)
            scores[by_chunk.order[sl]] = sub[local, by_chunk.items[sl] - start]
        return scores

    def take_own_scores(self, scores: torch.Tensor) -> None:
        """Single-chunk case: read the targets' scores from the chunk's matmul before seen items are masked."""
        if self.own is None:
            own = scores.new_empty(self.by_chunk.order.numel())
            own[self.by_chunk.order] = scores[self.by_chunk.rows, self.by_chunk.items - 1]
            self.own = own.unsqueeze(1)

    def update(self, scores: torch.Tensor, start: int, i: int) -> None:
        per_target = scores if self.one_per_row else scores[self.rows]
        self.higher += _count(per_target > self.own)
        self.equal += _count(per_target == self.own)
        # The target was counted against itself unless it was masked as seen; undo that one count.
        sl = self.by_chunk.chunk(i)
        t = self.by_chunk.order[sl]
        self_score = per_target[t, self.by_chunk.items[sl] - start]
        self.equal[t] -= (self_score == self.own[t, 0]).long()
        self.higher[t] -= (self_score > self.own[t, 0]).long()

    def result(self, seen: _ByChunk | None, num_items: int) -> TargetRanks:
        """Ranks; a target that is also in its query's seen list was removed with it: rank N (below every item)."""
        removed = torch.zeros_like(self.higher, dtype=torch.bool)
        if seen is not None and seen.items.numel():
            stride = num_items + 1
            keys = self.by_chunk.rows * stride + self.by_chunk.items
            removed[self.by_chunk.order] = torch.isin(keys, seen.rows * stride + seen.items)
        rank = self.higher.masked_fill(removed, num_items)
        return TargetRanks(rank=rank, ties=self.equal.masked_fill(removed, 0), removed=removed)


class FullRanking(NamedTuple):
    """Result of `full_ranking`: top-k ``(B, k)`` scores and ids, and per-target ranks (None when not asked)."""

    scores: torch.Tensor | None
    ids: torch.Tensor | None
    ranks: TargetRanks | None


@torch.no_grad()
def full_ranking(
    queries: torch.Tensor,
    item_emb: torch.Tensor,
    k: int | None = None,
    targets: Jagged | None = None,
    seen: Jagged | None = None,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> FullRanking:
    """`topk_full_ranking` and `target_ranks` from one pass over the item chunks (each chunk scored once).

    ``k=None`` skips the top-k, ``targets=None`` skips the ranks; see those two functions for the semantics.
    """
    num_items = _num_items(item_emb)
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    starts = _chunk_starts(num_items, item_chunk)
    top = _RunningTopK(queries, min(k, num_items)) if k is not None else None
    counter = _RankCounter(queries, item_emb, targets, starts, item_chunk) if targets is not None else None
    seen_pairs = _seen_pairs(seen, queries.shape[0], starts, num_items, queries.device)
    for i, start in enumerate(starts):
        scores = queries @ item_emb[start : min(start + item_chunk, num_items + 1)].T
        if counter is not None:
            counter.take_own_scores(scores)
        _mask_seen(scores, seen_pairs, start, i)
        if top is not None:
            top.update(scores, start)
        if counter is not None:
            counter.update(scores, start, i)
    top_scores, top_ids = top.result() if top is not None else (None, None)
    ranks = counter.result(seen_pairs, num_items) if counter is not None else None
    return FullRanking(top_scores, top_ids, ranks)


def topk_full_ranking(
    queries: torch.Tensor,
    item_emb: torch.Tensor,
    k: int,
    seen: Jagged | None = None,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items of every query over the whole catalogue, seen items excluded.

    Args:
        queries: ``(B, D)`` query vectors (e.g. the encoder's last position).
        item_emb: ``(N + 1, D)`` item embeddings, row 0 = padding (never ranked).
        k: items to return per query; clipped to N.
        seen: jagged item ids to exclude per query, ``(values (T,), offsets (B + 1,))``, or None.
        item_chunk: items scored per matmul; bounds memory to O(B * (item_chunk + k)).

    Returns:
        ``(scores, ids)``, both ``(B, min(k, N))``, best first; equal scores list the lower item id first.
        A query with fewer than k unseen items gets trailing entries with score -inf and id 0 (padding = "no
        item"), so they can never match a target.
    """
    result = full_ranking(queries, item_emb, k=k, seen=seen, item_chunk=item_chunk)
    return result.scores, result.ids


def target_ranks(
    queries: torch.Tensor,
    item_emb: torch.Tensor,
    targets: Jagged,
    seen: Jagged | None = None,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> TargetRanks:
    """Exact full-catalogue rank of every target, by counting (no sort).

    Args:
        queries: ``(B, D)``.
        item_emb: ``(N + 1, D)``, row 0 = padding.
        targets: jagged target ids per query ``(values (T,), offsets (B + 1,))``, each in 1..N.
        seen: jagged ids excluded as competitors, or None.
        item_chunk: items scored per matmul; memory O((B + T) * item_chunk).

    Returns:
        `TargetRanks`: ``rank`` = number of rankable items (not padding, not seen) scoring strictly higher than
        the target; ``ties`` = number of other rankable items with the same score. A target that is in its own
        seen list is removed like every seen item (the S3-Rec protocol: a repeated target is a miss): its
        ``rank`` is N, below every rankable item, and ``removed`` is True. Keeping it rankable while its seen
        competitors are removed would use knowledge of the answer. Other targets of the same query compete
        like any item (unless seen), so with several targets the ranks are positions in one ranked list.
        Consistent with `topk_full_ranking` (same ``item_chunk``): a target without ties is in the top k iff
        ``rank < k`` (with ties, ``topk_full_ranking`` puts the tied items of lower id first).
    """
    return full_ranking(queries, item_emb, targets=targets, seen=seen, item_chunk=item_chunk).ranks


@torch.no_grad()
def sampled_ranks(
    queries: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """The SASRec-paper protocol: rank of each target among itself and its S sampled negatives.

    Args:
        queries: ``(B, D)``; item_emb: ``(N + 1, D)``; targets: ``(B,)`` one target per query;
        negatives: ``(B, S)`` from `sample_negatives`.

    Returns:
        ``(B,) int64`` in 0..S: the number of negatives scoring strictly higher than the target (ties favour
        the target, as the reference's ``argsort().argsort()`` with the target in first position does).
    """
    candidates = torch.cat([targets.reshape(-1, 1), negatives], dim=1).to(torch.int64)
    scores = torch.einsum("bd,bcd->bc", queries, item_emb[candidates])
    return (scores[:, 1:] > scores[:, :1]).sum(dim=1)


def sample_negatives(
    num_items: int,
    targets: torch.Tensor,
    seen: Jagged,
    num_negatives: int = 100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``num_negatives`` items per user uniformly (with replacement) from the items the user never touched.

    The SASRec reference redraws per user until the draw is outside the user's history and target; that is
    i.i.d. uniform sampling over the allowed items. Here the same distribution is drawn exactly and without
    any loop: draw a uniform index u into the user's allowed items, then map it to the u-th allowed id with
    one `searchsorted` over the user's sorted excluded ids (no rejection rounds, so no slow tail for users who
    have seen most of the catalogue).

    Args:
        num_items: N; items are 1..N.
        targets: ``(B,)`` target ids (excluded too).
        seen: jagged ids the user interacted with ``(values, offsets (B + 1,))``; ids outside 1..N ignored.
        num_negatives: S, 100 in the paper.
        generator: for reproducible draws (on the targets' device).

    Returns:
        ``(B, S) int64`` negatives, never a seen item or the target.
    """
    device = targets.device
    values, offsets = (t.to(device=device, dtype=torch.int64) for t in seen)
    batch = targets.numel()
    rows = torch.cat([_rows_of(offsets, batch, "seen offsets"), torch.arange(batch, device=device)])
    items = torch.cat([values, targets.reshape(-1).to(torch.int64)])
    keep = (items >= 1) & (items <= num_items)
    # One sorted key per distinct (user, excluded item): users stay contiguous and items ascend within a user.
    stride = num_items + 1
    keys = torch.unique(rows[keep] * stride + items[keep])
    ex_rows, ex_items = keys // stride, keys % stride
    excluded = torch.bincount(ex_rows, minlength=batch)
    allowed = num_items - excluded
    if batch and int(allowed.min()) < 1:
        row = int(torch.argmin(allowed))
        raise ValueError(f"batch row {row} has interacted with all {num_items} items; no negative to sample")
    # The j-th excluded item of a user (0-based) has (item - 1 - j) allowed items below it; the u-th allowed item
    # is u + 1 + (number of excluded items whose allowed-count-below is <= u).
    first = torch.cumsum(excluded, 0) - excluded
    below = ex_items - 1 - (torch.arange(keys.numel(), device=device) - first[ex_rows])
    # float64 draws keep every one of millions of allowed items reachable (float32 has 24 bits).
    uniform = torch.rand((batch, num_negatives), generator=generator, device=device, dtype=torch.float64)
    u = (uniform * allowed.unsqueeze(1)).long()
    u = torch.minimum(u, (allowed - 1).unsqueeze(1))  # guard the float edge u == allowed
    row_ids = torch.arange(batch, device=device).unsqueeze(1)
    skipped = torch.searchsorted(
        ex_rows * stride + below, row_ids * stride + u, right=True
    ) - first.unsqueeze(1)
    return u + 1 + skipped
