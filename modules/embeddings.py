"""The item table: one unpooled TorchRec `EmbeddingCollection` and the helpers every model uses to look it up.

Every item-side lookup (history, targets, negatives, the candidates of evaluation) goes through the collection,
so after `DistributedModelParallel` shards it the same calls reach the sharded table and FBGEMM's fused
optimizer sees every gradient. Models therefore only *call* the collection with a `KeyedJaggedTensor` and read
the returned ``dict[str, JaggedTensor]``; they never touch its weights.

Rows: ``num_items + 1`` -- row 0 is the padding id of the dataset contract. Sequences travel jagged, so id 0 is
never looked up by the models here; the row exists so that item ids index the table directly.

Initialisation: ``normal(0, 1/sqrt(dim))``. SASRec multiplies looked-up embeddings by ``sqrt(dim)``, so inputs
to the first block have unit-scale coordinates, and a dot product between a layer-normed query (norm about
``sqrt(dim)``) and an item row (norm about 1) starts as an O(1) logit. The same function is stored as the
table's ``init_fn``, which TorchRec's sharded collection applies to its shards (``normal_`` works on any
shard, so nothing here assumes it sees the whole table).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torchrec.distributed.types import LazyAwaitable
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

ITEM_FEATURES = ("history", "target", "negatives")
# nn.ModuleDict attributes: a table named like one of them cannot be registered in the collection.
_RESERVED_TABLE_NAMES = frozenset({"items", "keys", "values", "update", "pop", "clear"})


def item_embedding_collection(
    num_items: int,
    dim: int,
    device: torch.device | str | None = None,
    feature_names: Sequence[str] = ITEM_FEATURES,
    table_name: str = "item_table",
) -> EmbeddingCollection:
    """An unpooled collection with one ``(num_items + 1, dim)`` table looked up by every name in ``feature_names``.

    ``device="meta"`` builds it without memory; `DistributedModelParallel` (or `reset_tables` after
    ``to_empty``) materialises it.
    """
    if num_items < 1 or dim < 1:
        raise ValueError(
            f"item table needs num_items >= 1 and dim >= 1, got num_items={num_items}, dim={dim}"
        )
    if table_name in _RESERVED_TABLE_NAMES:
        raise ValueError(f"table name {table_name!r} clashes with an nn.ModuleDict attribute; choose another")
    if not feature_names:
        raise ValueError("item table needs at least one feature name")
    std = 1.0 / math.sqrt(dim)
    config = EmbeddingConfig(
        name=table_name,
        embedding_dim=dim,
        num_embeddings=num_items + 1,
        feature_names=list(feature_names),
        # Uniform bounds with the same std as init_fn, for kernels that initialise from min/max.
        weight_init_min=-std * math.sqrt(3.0),
        weight_init_max=std * math.sqrt(3.0),
        init_fn=functools.partial(torch.nn.init.normal_, mean=0.0, std=std),
    )
    return EmbeddingCollection(tables=[config], device=torch.device(device) if device is not None else None)


def reset_tables(ec: EmbeddingCollection) -> None:
    """Re-initialise every table of an unsharded collection with its ``init_fn``.

    `EmbeddingCollection.reset_parameters` does nothing for a collection built on ``meta`` even after
    ``to_empty``, so models call this instead.
    """
    with torch.no_grad():
        for config in ec.embedding_configs():
            config.init_fn(ec.embeddings[config.name].weight)


def lookup(ec: torch.nn.Module, kjt: KeyedJaggedTensor) -> dict[str, JaggedTensor]:
    """``ec(kjt)`` as a plain dict: one ``JaggedTensor`` per feature, ``values: (T_f, D)``, ``lengths: (B,)``.

    A sharded collection returns a `LazyAwaitable`; waiting here gives callers the same type either way.
    """
    out = ec(kjt)
    if isinstance(out, LazyAwaitable):
        out = out.wait()
    return out


def ids_to_kjt(ids: torch.Tensor, key: str, feature_names: Sequence[str]) -> KeyedJaggedTensor:
    """A one-example KJT whose ``key`` holds ``ids`` ``(N,) int64`` and whose other features are empty.

    A sharded collection needs every one of its features in each input, hence the empty ones.
    """
    if key not in feature_names:
        raise ValueError(f"feature {key!r} is not one of {list(feature_names)}")
    ids = ids.reshape(-1).to(torch.int64)
    lengths = torch.zeros(len(feature_names), dtype=torch.int64, device=ids.device)
    lengths[list(feature_names).index(key)] = ids.numel()
    return KeyedJaggedTensor(keys=list(feature_names), values=ids, lengths=lengths, stride=1)


def jagged_to_kjt(jagged: JaggedTensor, key: str, feature_names: Sequence[str]) -> KeyedJaggedTensor:
    """A KJT with ``jagged`` (ids) under ``key`` and every other feature empty, with the same batch size."""
    if key not in feature_names:
        raise ValueError(f"feature {key!r} is not one of {list(feature_names)}")
    empty = torch.zeros_like(jagged.lengths())
    lengths = [jagged.lengths() if name == key else empty for name in feature_names]
    return KeyedJaggedTensor(keys=list(feature_names), values=jagged.values(), lengths=torch.cat(lengths))


def feature_names_of(ec: EmbeddingCollection) -> tuple[str, ...]:
    """All feature names of an unsharded collection, in table order."""
    return tuple(name for config in ec.embedding_configs() for name in config.feature_names)
