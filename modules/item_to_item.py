"""Item-to-item baselines (co-occurrence, item-KNN, EASE) with the recommender interface of `Popularity`.

A fitted ``(N + 1, N + 1)`` item-item weight matrix ``W`` scores item j for a user as ``sum_i q_i W[i, j]``,
``q`` the user's history as a multi-hot vector (or the last item only, "customers who bought this also
bought"). `encode` returns ``q`` and `item_embeddings` the columns of ``W``, so full ranking (``q @ W[:, ids]``)
runs through the same evaluation code as every model.
"""

from __future__ import annotations

import torch
from torch import nn


class ItemToItem(nn.Module):
    """Scores = history (multi-hot, or one-hot of the last item) @ ``weights``.

    Args:
        weights: ``(N + 1, N + 1)`` item-item weights, row/column 0 = padding.
        last_item_only: query with the most recent history item only (item-to-item co-occurrence).
    """

    def __init__(self, weights: torch.Tensor, last_item_only: bool = False) -> None:
        super().__init__()
        if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
            raise ValueError(f"weights must be (N + 1, N + 1), got {tuple(weights.shape)}")
        self.register_buffer("weights", weights.to(torch.float32))
        self.last_item_only = last_item_only

    def encode(self, batch) -> torch.Tensor:  # batch: a Batch with a "history" KJT (duck-typed like Popularity)
        """``(B, N + 1)`` multi-hot history (or one-hot last item) of each example."""
        history = batch.sparse["history"]
        values, lengths = history.values(), history.lengths()
        rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=values.device), lengths)
        query = torch.zeros(lengths.numel(), self.weights.shape[0], device=self.weights.device)
        if self.last_item_only:
            last = torch.cumsum(lengths, 0) - 1
            keep = lengths > 0
            query[torch.nonzero(keep).squeeze(1), values[last[keep]]] = 1.0
        else:
            query[rows, values] = 1.0
        query[:, 0] = 0.0  # padding
        return query

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``(len(ids), N + 1)``: column j of the weights for each id j."""
        return self.weights[:, item_ids].T
