"""Two-tower retrieval: user tower = a sequence encoder over the history ⊕ user features -> MLP; item tower =
item id ⊕ item features -> MLP; both L2-normalised, scored by a dot product divided by a temperature.

Training (``causal`` batches: every history position is a query): InfoNCE of each target against a pool of the
batch's sampled negatives and, with ``in_batch``, the batch's own targets, with logQ correction (the loader's
log sampling probabilities; popularity negatives make both parts of the pool draws of one distribution) and
accidental hits masked (`modules.losses.chunked_sampled_softmax_loss`); ``loss=softmax`` scores the whole
catalogue instead. Id and feature tables are TorchRec collections, sharded like every table.

Registered as ``two_tower`` (SASRec encoder in the user tower) and ``two_tower_mean`` (mean of the history's
item embeddings: the classic YouTube-DNN user tower).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from modules import losses
from modules import sequence as seq
from modules.batch import Batch
from modules.contract import RetrievalExport, SequenceEncoder, SideFeatures
from modules.embeddings import ITEM_FEATURES, ids_to_kjt, lookup
from modules.encoders.sasrec import SASRecEncoder, SASRecEncoderConfig
from modules.objectives import ObjectiveConfig, query_layout
from modules.registry import register
from modules.sequence import LastPositionQuery, SequenceModelConfig, SequenceRecommender
from modules.towers.features import FeatureBag

TOWER_LOSSES = ("sampled_softmax", "softmax")


@dataclasses.dataclass(kw_only=True)
class TowerConfig:
    """``model.tower``: the MLPs on top of each side.

    Args:
        hidden: hidden widths of each tower's MLP (its output is ``model.dim``); empty = one linear layer.
        dropout: dropout inside the MLPs, in [0, 1).
        feature_dim: embedding width of each side feature (a multiple of 4).
        user_features / item_features: use the dataset's user / item side features.
        in_batch: the batch's targets join the sampled negatives (InfoNCE with in-batch + random negatives).
    """

    hidden: list[int] = dataclasses.field(default_factory=lambda: [128])
    dropout: float = 0.1
    feature_dim: int = 16
    user_features: bool = True
    item_features: bool = True
    in_batch: bool = True

    def validate(self) -> None:
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"model.tower.hidden must hold positive widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.tower.dropout must be in [0, 1), got {self.dropout}")
        if self.feature_dim < 4 or self.feature_dim % 4:
            raise ValueError(f"model.tower.feature_dim must be a positive multiple of 4, got {self.feature_dim}")


def _tower_objective() -> ObjectiveConfig:
    return ObjectiveConfig(loss="sampled_softmax", temperature=0.05)


@dataclasses.dataclass(kw_only=True)
class TwoTowerConfig(SequenceModelConfig):
    """``model`` for ``model.name=two_tower`` (SASRec user encoder)."""

    name: str = "two_tower"
    encoder: SASRecEncoderConfig = dataclasses.field(default_factory=SASRecEncoderConfig)
    tower: TowerConfig = dataclasses.field(default_factory=TowerConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=_tower_objective)

    def validate(self) -> None:
        super().validate()
        self.tower.validate()
        if self.objective.loss not in TOWER_LOSSES:
            raise ValueError(f"model.objective.loss must be one of {TOWER_LOSSES} for two towers, "
                             f"got {self.objective.loss!r}")
        if not self.tie_weights:
            raise ValueError("model.tie_weights must be true for two towers (the item tower scores)")


@dataclasses.dataclass(kw_only=True)
class MeanPoolConfig:
    """``model.encoder`` of ``two_tower_mean``: no parameters."""

    def validate(self, dim: int) -> None:
        """Nothing to check."""


@dataclasses.dataclass(kw_only=True)
class TwoTowerMeanConfig(TwoTowerConfig):
    """``model`` for ``model.name=two_tower_mean`` (mean-pooled user encoder)."""

    name: str = "two_tower_mean"
    encoder: MeanPoolConfig = dataclasses.field(default_factory=MeanPoolConfig)


class MeanPoolEncoder(SequenceEncoder):
    """Causal running mean of the history embeddings: position ``i`` = mean of items ``0..i``."""

    causal = True

    def __init__(self, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        return self.padded(seq.padded_dense(embedded, lengths), lengths)

    def padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The same on right-padded ``(B, L, D)`` embeddings (zeros at padding)."""
        count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None]
        return x.cumsum(1) / count


def mlp(inputs: int, hidden: list[int], out: int, dropout: float, device=None) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` per hidden width, then a linear layer to ``out``."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width, device=device), nn.ReLU(), nn.Dropout(dropout)]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, out, device=device))


class UserTower(nn.Module):
    """Encoder outputs ``(B, L, D)`` ⊕ pooled user features -> MLP -> L2-normalised ``(B, L, D)``."""

    def __init__(self, features: FeatureBag, dim: int, config: TowerConfig, device=None) -> None:
        super().__init__()
        self.features = features
        self.mlp = mlp(dim + features.width, config.hidden, dim, config.dropout, device)

    def forward(self, hidden: torch.Tensor, user_features: torch.Tensor) -> torch.Tensor:
        side = user_features[:, None, :].expand(-1, hidden.shape[1], -1)
        return nn.functional.normalize(self.mlp(torch.cat([hidden, side], dim=-1)), dim=-1)


class ItemTower(nn.Module):
    """Item id embedding ⊕ pooled item features -> MLP -> L2-normalised ``(n, D)``."""

    def __init__(self, features: FeatureBag, dim: int, config: TowerConfig, device=None) -> None:
        super().__init__()
        self.features = features
        self.mlp = mlp(dim + features.width, config.hidden, dim, config.dropout, device)

    def forward(self, ids: torch.Tensor, id_embeddings: torch.Tensor) -> torch.Tensor:
        x = torch.cat([id_embeddings, self.features(ids)], dim=-1)
        return nn.functional.normalize(self.mlp(x), dim=-1)


class ServedUserQuery(nn.Module):
    """What serving runs: the encoder's last position through the user tower with no user features (a request
    carries a history, not a user id), ``(embedded, lengths, timestamps) -> (B, D)``."""

    def __init__(self, encoder: SequenceEncoder, tower: UserTower, feature_width: int) -> None:
        super().__init__()
        self.query, self.mlp, self.feature_width = LastPositionQuery(encoder), tower.mlp, feature_width

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        last = self.query(embedded, lengths, timestamps)
        side = last.new_zeros(last.shape[0], self.feature_width)
        return nn.functional.normalize(self.mlp(torch.cat([last, side], dim=-1)), dim=-1)


class TwoTower(SequenceRecommender):
    """See the module docstring. Built by the registry with the dataset's side features."""

    def __init__(self, config: TwoTowerConfig, encoder, num_items: int, item_features: SideFeatures,
                 user_features: SideFeatures, device=None) -> None:
        super().__init__(config, encoder, num_items, device=device)
        t = config.tower
        items = item_features if t.item_features else SideFeatures()
        users = user_features if t.user_features else SideFeatures()
        self.item_tower = ItemTower(FeatureBag(items, t.feature_dim, "item", device), config.dim, t, device)
        self.user_tower = UserTower(FeatureBag(users, t.feature_dim, "user", device), config.dim, t, device)
        self.loss_head = _LossHead(self)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """InfoNCE (or full softmax) loss and logs of a ``causal``/``last`` batch: the lookup of ``batch.sparse``
        (pipelined), then everything else inside one leaf module (the pipeline's FX trace sees no branches)."""
        return self.loss_head(batch, lookup(self.item_ec, batch.sparse))

    def loss_from_lookup(
        self, batch: Batch, embeddings: dict[str, JaggedTensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss given the item-table lookup of the batch."""
        history, target = embeddings["history"], embeddings["target"]
        users = self.user_tower(self.encoder(history.values(), history.lengths(), batch.timestamps),
                                self.user_tower.features(batch.user_idx))
        queries, to_targets = query_layout(batch.kind, users, history.lengths(), target.lengths())
        query = to_targets(queries) / self.config.objective.temperature
        target_ids = batch.sparse["target"].values()
        positive = self.item_tower(target_ids, target.values())
        loss = self._loss(batch, query, positive, target_ids, embeddings["negatives"])
        logs = {"loss": loss.detach(), "num_targets": torch.tensor(target_ids.numel()),
                "num_sequences": torch.tensor(history.lengths().numel())}
        return loss, logs

    def _loss(self, batch: Batch, query, positive, target_ids, negatives: JaggedTensor) -> torch.Tensor:
        chunk = self.config.objective.softmax_chunk or 256
        if self.config.objective.loss == "softmax":
            catalogue = self.item_embeddings(torch.arange(1, self.num_items + 1, device=query.device))
            classes = torch.cat([catalogue.new_zeros(1, catalogue.shape[1]), catalogue])
            return losses.softmax_loss(query, classes, target_ids, chunk)
        neg_ids = batch.sparse["negatives"].values()
        pool, pool_ids, pool_logq = self.item_tower(neg_ids, negatives.values()), neg_ids, batch.negative_logq
        if self.config.tower.in_batch or pool.shape[0] == 0:
            pool, pool_ids = torch.cat([positive, pool]), torch.cat([target_ids, pool_ids])
            pool_logq = torch.cat([batch.target_logq, pool_logq]) if batch.target_logq.numel() else pool_logq
        pos_logits = (query * positive).sum(-1)
        return losses.chunked_sampled_softmax_loss(
            query, pos_logits, pool, chunk, target_ids, pool_ids, batch.target_logq, pool_logq
        )

    def encode(self, batch: Batch) -> torch.Tensor:
        """User tower at each example's last position ``(B, D)``, with the example's user features."""
        history = self._history(batch)
        hidden = self.encoder(history.values(), history.lengths(), batch.timestamps)
        users = self.user_tower(hidden, self.user_tower.features(batch.user_idx))
        return users[torch.arange(users.shape[0], device=users.device), history.lengths() - 1]

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Item tower outputs ``(N, D)`` (a collective on a sharded model)."""
        ids = item_ids.reshape(-1).to(torch.int64)
        embedded = lookup(self.item_ec, ids_to_kjt(ids, "target", ITEM_FEATURES))["target"].values()
        return self.item_tower(ids, embedded)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in (*self.item_tower.modules(), *self.user_tower.modules()):
            if isinstance(module, (nn.Linear, FeatureBag)):
                module.reset_parameters()

    def codes_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The packed feature codes `PaddedItemTower` takes, ``(n, sum_f M_f)``."""
        index = ids.to("cpu", torch.int64)
        columns = [codes[index] for codes in self.item_tower.features.codes]
        return torch.cat(columns, dim=1) if columns else torch.zeros(len(index), 0, dtype=torch.int64)

    @torch.no_grad()
    def tower_modules(self) -> tuple[nn.Module, nn.Module]:
        """Both towers on plain tensors (eval mode copies), for TorchScript and ONNX export."""
        import copy

        from modules.towers.padded import PaddedItemTower, PaddedUserTower, drop_dropout

        table = self.item_ec.embeddings["item_table"].weight.detach()
        parts = copy.deepcopy((self.encoder, self.user_tower, self.item_tower))
        for part in parts:  # eval: dropout is the identity, and TorchScript cannot compile modules.dropout's masks
            drop_dropout(part)
        user = PaddedUserTower(table, parts[0], parts[1].mlp, self.user_tower.features.width)
        return user.eval(), PaddedItemTower(table, parts[2]).eval()

    @torch.no_grad()
    def retrieval_export(self) -> RetrievalExport:
        """Id table (history lookups), the served user query and the item tower's outputs for items 1..N."""
        table = self.item_ec.embeddings["item_table"].weight.detach()
        catalogue = self.item_embeddings(torch.arange(1, self.num_items + 1))
        query = ServedUserQuery(self.encoder, self.user_tower, self.user_tower.features.width)
        return RetrievalExport(table=table, query=query, max_len=self.encoder.max_len, catalogue=catalogue)


class _LossHead(nn.Module):
    """Calls `TwoTower.loss_from_lookup` as one module call (the model is held unregistered: it owns the parts)."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self._model = [model]

    def forward(self, batch: Batch, embeddings: dict[str, JaggedTensor]) -> tuple[torch.Tensor, dict]:
        return self._model[0].loss_from_lookup(batch, embeddings)


@register("two_tower", TwoTowerConfig, features=True)
def build(config: TwoTowerConfig, num_items: int, max_len: int, device=None, **features) -> TwoTower:
    """Two towers with a SASRec user encoder."""
    return TwoTower(config, lambda: SASRecEncoder(config.encoder, config.dim, max_len, device), num_items,
                    device=device, **features)


@register("two_tower_mean", TwoTowerMeanConfig, features=True)
def build_mean(config: TwoTowerMeanConfig, num_items: int, max_len: int, device=None, **features) -> TwoTower:
    """Two towers with a mean-pooled user encoder."""
    return TwoTower(config, lambda: MeanPoolEncoder(max_len), num_items, device=device, **features)
