"""Most-popular baseline with the recommender interface, so it is evaluated by exactly the same code as SASRec.

Every user's query is the scalar 1 and every item's "embedding" is its train popularity, so full ranking orders
items by popularity (seen items filtered as configured). A sequence model must beat it by a wide margin.
"""

from __future__ import annotations

import torch
from torch import nn


class Popularity(nn.Module):
    """Ranks items by train popularity.

    Args:
        popularity: ``(N + 1,)`` counts per item id (index 0 = padding, ignored).
    """

    def __init__(self, popularity: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("popularity", popularity.to(torch.float32))

    def encode(self, batch) -> torch.Tensor:  # batch: modules.batch.Batch (duck-typed)
        """``(B, 1)`` ones: every user gets the same ranking."""
        return torch.ones(batch.user_idx.numel(), 1, device=self.popularity.device)

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``(N, 1)`` popularity of each id."""
        return self.popularity[item_ids].unsqueeze(1)
