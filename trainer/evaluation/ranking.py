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
    """Per-target result of `target_ranks`; both ``(T,) int64``."""

    rank: torch.Tensor
    """0-based rank: the number of rankable items scoring strictly higher than the target."""
    ties: torch.Tensor
    """The number of other rankable items scoring exactly the target's score."""


def _rows_of(offsets: torch.Tensor) -> torch.Tensor:
    """The query row of every value of a jagged tensor: ``(T,) int64``."""
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths)


def _num_items(item_emb: torch.Tensor) -> int:
    if item_emb.dim() != 2 or item_emb.shape[0] < 1:
        raise ValueError(f"item_emb must be (N + 1, D) with row 0 = padding, got shape {tuple(item_emb.shape)}")
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
        items, rows = items[keep], rows[keep]
        order = torch.argsort(items)
        self.items, self.rows = items[order], rows[order]
        self.order = torch.nonzero(keep).squeeze(1)[order]  # position of each pair in the caller's input
        edges = torch.tensor([*starts, num_items + 1], dtype=items.dtype, device=items.device)
        self.bounds = torch.searchsorted(self.items, edges).tolist()

    def chunk(self, i: int) -> slice:
        return slice(self.bounds[i], self.bounds[i + 1])


def _seen_pairs(seen: Jagged | None, starts: list[int], num_items: int, device: torch.device) -> _ByChunk | None:
    if seen is None:
        return None
    values, offsets = (t.to(device=device, dtype=torch.int64) for t in seen)
    return _ByChunk(values, _rows_of(offsets), starts, num_items)


def _chunk_scores(
    queries: torch.Tensor, item_emb: torch.Tensor, start: int, stop: int, seen: _ByChunk | None, i: int
) -> torch.Tensor:
    """Scores of all queries against items ``start..stop-1``: ``(B, stop - start)``; seen items are -inf."""
    scores = queries @ item_emb[start:stop].T
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


def _chunk_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row with the lower column first among equal scores.

    `torch.topk` picks an unspecified subset when several columns tie with the k-th value; only those rows
    (rare with trained embeddings, all rows with constant ones) are redone with a stable full sort.
    """
    k = min(k, scores.shape[1])
    values, cols = torch.topk(scores, k, dim=1, sorted=False)
    kth = values.min(dim=1, keepdim=True).values
    ambiguous = torch.nonzero((scores >= kth).sum(dim=1) > k).squeeze(1)
    if ambiguous.numel():
        fixed = torch.sort(scores[ambiguous], dim=1, descending=True, stable=True)
        values[ambiguous], cols[ambiguous] = fixed.values[:, :k], fixed.indices[:, :k]
    return _order_by_score_then_id(values, cols)


@torch.no_grad()
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
    num_items = _num_items(item_emb)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, num_items)
    starts = _chunk_starts(num_items, item_chunk)
    seen_pairs = _seen_pairs(seen, starts, num_items, queries.device)
    best_scores = queries.new_empty((queries.shape[0], 0))
    best_ids = torch.empty((queries.shape[0], 0), dtype=torch.int64, device=queries.device)
    for i, start in enumerate(starts):
        stop = min(start + item_chunk, num_items + 1)
        chunk_scores, cols = _chunk_topk(_chunk_scores(queries, item_emb, start, stop, seen_pairs, i), k)
        # Both lists are ordered (score desc, id asc) and every earlier id is lower, so a stable sort of the
        # concatenation keeps the lower-id-first rule across chunks.
        merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
        merged_ids = torch.cat([best_ids, cols + start], dim=1)
        order = torch.sort(merged_scores, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores, best_ids = merged_scores.gather(1, order), merged_ids.gather(1, order)
    best_ids = best_ids.masked_fill(best_scores == float("-inf"), 0)
    return best_scores, best_ids


def _target_scores(
    queries: torch.Tensor, item_emb: torch.Tensor, targets: _ByChunk, rows: torch.Tensor, starts: list[int], chunk: int
) -> torch.Tensor:
    """Each target's score from the same chunk matmul the competitors get, so a tie is a true tie.

    A row-wise dot product can differ from the matmul in the last bit; computing ``queries[rows] @ chunk.T``
    over the target's own chunk costs only T * chunk * D extra (1/16 of the main pass for 1M items).
    """
    scores = queries.new_empty(rows.numel())
    num_items = item_emb.shape[0] - 1
    for i, start in enumerate(starts):
        sl = targets.chunk(i)
        if sl.start == sl.stop:
            continue
        stop = min(start + chunk, num_items + 1)
        sub = queries[rows[targets.order[sl]]] @ item_emb[start:stop].T
        local = torch.arange(sl.stop - sl.start, device=sub.device)
        scores[targets.order[sl]] = sub[local, targets.items[sl] - start]
    return scores


@torch.no_grad()
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
        `TargetRanks` of ``(T,) int64``: ``rank`` = number of rankable items (not padding, not seen) scoring
        strictly higher than the target; ``ties`` = number of other rankable items with the same score.
        The target itself always stays rankable, even when it is in its own seen list: a re-consumed item is a
        valid target. Other targets of the same query compete like any item (unless seen), so with several
        targets the ranks are positions in one ranked list. Consistent with `topk_full_ranking` (same
        ``item_chunk``): a target not in the seen list is in the top k iff ``rank + ties < k``, and
        iff ``rank < k`` when there are no ties.
    """
    num_items = _num_items(item_emb)
    values, offsets = (t.to(device=queries.device, dtype=torch.int64) for t in targets)
    if values.numel() and (int(values.min()) < 1 or int(values.max()) > num_items):
        raise ValueError(f"target ids must lie in 1..{num_items} (0 is padding)")
    rows = _rows_of(offsets)
    starts = _chunk_starts(num_items, item_chunk)
    by_chunk = _ByChunk(values, rows, starts, num_items)
    seen_pairs = _seen_pairs(seen, starts, num_items, queries.device)
    own = _target_scores(queries, item_emb, by_chunk, rows, starts, item_chunk).unsqueeze(1)
    higher = torch.zeros(values.numel(), dtype=torch.int64, device=queries.device)
    equal = torch.zeros_like(higher)
    one_per_row = rows.numel() == queries.shape[0] and bool((rows == torch.arange(rows.numel(), device=rows.device)).all())
    for i, start in enumerate(starts):
        stop = min(start + item_chunk, num_items + 1)
        scores = _chunk_scores(queries, item_emb, start, stop, seen_pairs, i)
        per_target = scores if one_per_row else scores[rows]
        higher += (per_target > own).sum(dim=1)
        equal += (per_target == own).sum(dim=1)
        # The target was counted against itself only if it was not masked as seen; undo that one count.
        sl = by_chunk.chunk(i)
        t = by_chunk.order[sl]
        self_score = per_target[t, by_chunk.items[sl] - start]
        equal[t] -= (self_score == own[t, 0]).long()
        higher[t] -= (self_score > own[t, 0]).long()
    return TargetRanks(rank=higher, ties=equal)


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
    rows = torch.cat([_rows_of(offsets), torch.arange(batch, device=device)])
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
    u = (torch.rand((batch, num_negatives), generator=generator, device=device) * allowed.unsqueeze(1)).long()
    u = torch.minimum(u, (allowed - 1).unsqueeze(1))  # guard the float edge u == allowed
    row_ids = torch.arange(batch, device=device).unsqueeze(1)
    skipped = torch.searchsorted(ex_rows * stride + below, row_ids * stride + u, right=True) - first.unsqueeze(1)
    return u + 1 + skipped
