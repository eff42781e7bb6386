"""ItemToItem: the query vectors and candidate columns of the item-item baselines."""

from __future__ import annotations

import torch

from modules.item_to_item import ItemToItem


def test_item_to_item_queries():
    class _Kjt:
        def __init__(self, values, lengths):
            self._v, self._l = torch.tensor(values), torch.tensor(lengths)

        def values(self):
            return self._v

        def lengths(self):
            return self._l

    class _Batch:
        sparse = {"history": _Kjt([1, 2, 3, 3], [2, 2])}

    weights = torch.arange(16, dtype=torch.float32).view(4, 4)
    multi = ItemToItem(weights).encode(_Batch())
    assert multi.tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]
    last = ItemToItem(weights, last_item_only=True).encode(_Batch())
    assert last.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert torch.equal(ItemToItem(weights).item_embeddings(torch.tensor([2])), weights[:, [2]].T)
