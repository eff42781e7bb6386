"""Two towers: feature codes reach the collections, the InfoNCE loss is the hand-computed one (logQ, in-batch
targets in the pool, accidental hits masked), and features change the item tower's output."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules import registry
from modules.batch import Batch
from modules.contract import SideFeatures
from modules.towers.features import FeatureBag
from modules.towers.two_tower import TowerConfig, TwoTowerMeanConfig

N = 6


def _features() -> SideFeatures:
    genre = torch.tensor([[0, 0], [1, 2], [2, 0], [3, 1], [0, 0], [1, 0], [2, 3]])  # multi-valued, row 0 padding
    shop = torch.tensor([[0], [1], [1], [2], [2], [0], [1]])
    return SideFeatures(codes={"genre": genre, "shop": shop}, cardinality={"genre": 4, "shop": 3})


def test_feature_bag_builds_the_kjt_without_absent_codes() -> None:
    bag = FeatureBag(_features(), 4, "item")
    kjt = bag.kjt(torch.tensor([1, 4, 6]))
    assert kjt.keys() == ["item_genre", "item_shop"]
    assert kjt["item_genre"].lengths().tolist() == [2, 0, 2] and kjt["item_genre"].values().tolist() == [1, 2, 2, 3]
    assert kjt["item_shop"].lengths().tolist() == [1, 1, 1] and kjt["item_shop"].values().tolist() == [1, 2, 1]
    assert bag(torch.tensor([1, 4, 6])).shape == (3, 8)
    assert bag(torch.tensor([4]))[:, :4].abs().sum() == 0  # no genre: the mean of an empty bag is zeros


def _model(in_batch: bool = True):
    torch.manual_seed(0)
    config = TwoTowerMeanConfig(dim=8, tower=TowerConfig(hidden=[], feature_dim=4, dropout=0.0, in_batch=in_batch))
    return registry.build(config, num_items=N, max_len=5, item_features=_features())


def _batch() -> Batch:
    # two users, kind "last": histories [1, 2] and [3]; targets 4 and 2; one sampled negative each: 2 (a hit for
    # user 2) and 5
    sparse = KeyedJaggedTensor(keys=["history", "target", "negatives"], values=torch.tensor([1, 2, 3, 4, 2, 2, 5]),
                               lengths=torch.tensor([2, 1, 1, 1, 1, 1]))
    return Batch(sparse=sparse, user_idx=torch.arange(2), kind="last", target_logq=torch.tensor([-1.0, -2.0]),
                 negative_logq=torch.tensor([-2.0, -3.0]))


@pytest.mark.parametrize("in_batch", [True, False])
def test_infonce_with_logq_equals_the_hand_computed_loss(in_batch: bool) -> None:
    model = _model(in_batch).eval()
    batch = _batch()
    loss, _ = model(batch)
    with torch.no_grad():
        users = model.encode(batch) / model.config.objective.temperature
        items = model.item_embeddings(torch.arange(1, N + 1))
    item = {i + 1: items[i] for i in range(N)}
    targets, logq = [4, 2], {4: -1.0, 2: -2.0}
    pool = ([(4, -1.0), (2, -2.0)] if in_batch else []) + [(2, -2.0), (5, -3.0)]
    expected = 0.0
    for b, target in enumerate(targets):
        positive = float(users[b] @ item[target]) - logq[target]
        negatives = [float(users[b] @ item[i]) - q for i, q in pool if i != target]  # hits masked
        expected += math.log(sum(math.exp(x) for x in [positive, *negatives])) - positive
    assert loss.item() == pytest.approx(expected / 2, rel=1e-5)


def test_item_features_change_the_item_tower_output() -> None:
    model = _model().eval()
    with torch.no_grad():
        before = model.item_embeddings(torch.tensor([1, 2]))
        model.item_tower.features.codes[0][1] = torch.tensor([3, 0])  # item 1 gets another genre
        after = model.item_embeddings(torch.tensor([1, 2]))
    assert not torch.allclose(before[0], after[0]) and torch.allclose(before[1], after[1])
