"""Hand-built ``impressions`` batches for ranker tests (what the impressions loader yields, without a dataset)."""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules.batch import Batch

NUM_ITEMS = 50
NUM_ACTIONS = 4


def impressions_batch(lengths: list[int], heads: int = 2, seed: int = 0, labels: torch.Tensor | None = None
                      ) -> Batch:
    """B = len(lengths) examples: random histories (times one minute apart, the request a minute after the
    last), actions and candidates; random 0/1 labels unless given ``(B, heads)``."""
    g = torch.Generator().manual_seed(seed)
    b, lengths_t = len(lengths), torch.tensor(lengths, dtype=torch.int64)
    total = int(lengths_t.sum())
    history = torch.randint(1, NUM_ITEMS + 1, (total,), generator=g)
    candidates = torch.randint(1, NUM_ITEMS + 1, (b,), generator=g)
    starts = torch.randint(1_650_000_000, 1_650_100_000, (b,), generator=g)
    owner = torch.repeat_interleave(torch.arange(b), lengths_t)
    position = torch.arange(total) - torch.repeat_interleave(torch.cumsum(lengths_t, 0) - lengths_t, lengths_t)
    timestamps = starts[owner] + 60 * position
    sparse = KeyedJaggedTensor(keys=["history", "target", "negatives"], values=torch.cat([history, candidates]),
                               lengths=torch.cat([lengths_t, torch.ones(b, dtype=torch.int64),
                                                  torch.zeros(b, dtype=torch.int64)]))
    if labels is None:
        labels = torch.randint(0, 2, (b, heads), generator=g).float()
    return Batch(sparse=sparse, user_idx=torch.arange(b), kind="impressions", labels=labels,
                 actions=torch.randint(0, NUM_ACTIONS, (total,), generator=g), timestamps=timestamps,
                 request_time=starts + 60 * lengths_t)
