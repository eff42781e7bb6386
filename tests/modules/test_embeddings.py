"""The item table: shape, lookups per feature, KJT helpers, meta-device build and initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from modules.embeddings import (
    ITEM_FEATURES,
    feature_names_of,
    ids_to_kjt,
    item_embedding_collection,
    jagged_to_kjt,
    lookup,
    reset_tables,
)


def test_table_shape_and_features() -> None:
    ec = item_embedding_collection(10, 4)
    (config,) = ec.embedding_configs()
    assert (config.name, config.num_embeddings, config.embedding_dim) == ("item_table", 11, 4)
    assert feature_names_of(ec) == ITEM_FEATURES


def test_lookup_returns_rows_per_feature_unpooled() -> None:
    ec = item_embedding_collection(10, 4)
    kjt = KeyedJaggedTensor(
        keys=list(ITEM_FEATURES),
        values=torch.tensor([1, 2, 3, 4, 5, 9, 10, 7]),
        lengths=torch.tensor([2, 1, 1, 2, 1, 1]),  # history [1, 2] [3]; target [4] [5, 9]; negatives [10] [7]
    )
    out = lookup(ec, kjt)
    weight = ec.embeddings["item_table"].weight
    assert set(out) == set(ITEM_FEATURES)
    torch.testing.assert_close(out["target"].values(), weight[[4, 5, 9]])
    assert out["target"].lengths().tolist() == [1, 2]
    torch.testing.assert_close(out["history"].values(), weight[[1, 2, 3]])


def test_ids_to_kjt_has_every_feature() -> None:
    ec = item_embedding_collection(10, 4)
    ids = torch.tensor([3, 1, 10])
    kjt = ids_to_kjt(ids, "negatives", ITEM_FEATURES)
    assert kjt.keys() == list(ITEM_FEATURES)
    assert kjt["history"].values().numel() == 0 and kjt["target"].values().numel() == 0
    torch.testing.assert_close(lookup(ec, kjt)["negatives"].values(), ec.embeddings["item_table"].weight[ids])
    with pytest.raises(ValueError, match="not one of"):
        ids_to_kjt(ids, "catalogue", ITEM_FEATURES)


def test_jagged_to_kjt_keeps_batch_size() -> None:
    history = JaggedTensor(values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 0, 1]))
    kjt = jagged_to_kjt(history, "history", ITEM_FEATURES)
    assert kjt.stride() == 3
    assert kjt["history"].lengths().tolist() == [2, 0, 1]
    assert kjt["target"].lengths().tolist() == [0, 0, 0]


@pytest.mark.parametrize("name", ["items", "keys", "values"])
def test_reserved_table_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="clashes"):
        item_embedding_collection(10, 4, table_name=name)


def test_meta_build_then_materialise_and_init_scale() -> None:
    dim = 16
    ec = item_embedding_collection(2000, dim, device="meta")
    assert ec.embeddings["item_table"].weight.is_meta
    ec = ec.to_empty(device="cpu")
    torch.manual_seed(0)
    reset_tables(ec)
    weight = ec.embeddings["item_table"].weight
    assert torch.isfinite(weight).all()
    # normal(0, 1/sqrt(dim)): 32k samples give the std to within a few percent.
    assert float(weight.std()) == pytest.approx(1 / math.sqrt(dim), rel=0.05)
    assert abs(float(weight.mean())) < 0.01
