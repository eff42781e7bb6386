"""`FeatureBag`: side-feature codes of items or users -> pooled embeddings, through a (sharded) TorchRec
`EmbeddingBagCollection`.

The codes (`modules.contract.SideFeatures`, data-derived) stay plain CPU tensors, not buffers: a model built on
``meta`` for `DistributedModelParallel` would materialise buffers empty, and they need no gradient or checkpoint
(they come from the dataset folder). Rows are gathered per call into a KeyedJaggedTensor (code 0 = absent), which
the collection mean-pools per feature: ``(n, F * feature_dim)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules.contract import SideFeatures


class FeatureBag(nn.Module):
    """Pooled embeddings of the side features of rows (item ids or user indices).

    Args:
        features: the codes and cardinalities (no features: `width` is 0 and calls return ``(n, 0)``).
        dim: embedding width per feature. prefix: table/feature name prefix (``item`` / ``user``).
        device: where the tables are built (``"meta"`` allowed).
    """

    def __init__(self, features: SideFeatures, dim: int, prefix: str, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.keys = [f"{prefix}_{name}" for name in features.names]
        self.codes = [features.codes[name] for name in features.names]
        self.width = dim * len(self.keys)
        self.ebc = None
        if self.keys:
            tables = [
                EmbeddingBagConfig(name=f"{key}_table", embedding_dim=dim, num_embeddings=features.cardinality[name],
                                   feature_names=[key], pooling=PoolingType.MEAN)
                for key, name in zip(self.keys, features.names)
            ]
            self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device(device) if device else None)

    def kjt(self, rows: torch.Tensor) -> KeyedJaggedTensor:
        """The features of ``rows (n,)`` as one KJT (feature-major; code 0 dropped)."""
        index = rows.to("cpu", torch.int64)
        values, lengths = [], []
        for codes in self.codes:
            picked = codes[index]
            present = picked > 0
            values.append(picked[present])
            lengths.append(present.sum(1))
        return KeyedJaggedTensor(
            keys=self.keys, values=torch.cat(values).to(rows.device), lengths=torch.cat(lengths).to(rows.device)
        )

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """``(n, F * dim)`` pooled feature embeddings of ``rows``."""
        if self.ebc is None:
            return torch.zeros(rows.numel(), 0, device=rows.device)
        pooled = self.ebc(self.kjt(rows))
        if hasattr(pooled, "wait"):
            pooled = pooled.wait()
        # by key, not ``values()``: a sharded collection concatenates its features in the plan's order
        by_key = pooled.to_dict()
        return torch.cat([by_key[key] for key in self.keys], dim=1)

    def reset_parameters(self) -> None:
        """Re-initialise the tables (after ``to_empty``): uniform as TorchRec's default."""
        if self.ebc is not None:
            with torch.no_grad():
                for config in self.ebc.embedding_bag_configs():
                    weight = self.ebc.embedding_bags[config.name].weight
                    bound = 1.0 / config.embedding_dim**0.5
                    weight.uniform_(-bound, bound)
