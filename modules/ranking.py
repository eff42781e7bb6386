"""`Ranker`: what every candidate ranker shares (item and user tables, context features, the DCN-v2 head, the loss).

A ranker scores one candidate per example of an ``impressions`` / ``ranker`` batch (`modules.batch`) with one
logit per head (``model.heads``: label columns such as ``click``, ``like``). Data path::

    batch.sparse --item_ec--> history (T, D), candidate (B, D)       user_idx % user_buckets --user_ec--> (B, D)
    context (B, C): log1p(history length), share of each action type, hour of the request (sin, cos)
    [model-specific sequence feature (B, D), e.g. TransAct's]
    DenseArch(context) -> (B, D); InteractionDCNArch(LowRankCrossNet) over [dense, candidate, user, (sequence)]
    -> OverArch -> (B, H) logits; loss = sum over heads of the mean binary cross-entropy

The crossing head is TorchRec's own DLRM-DCN blocks (`torchrec.models.dlrm`, `torchrec.modules.crossnet`), so
the DLRM-v2 baseline (no sequence feature) and TransAct (its output as one more feature, as in the paper) share it.
User ids are hashed into ``user_buckets`` rows (data-derived sizes are build arguments, and the number of users is
not one), 0 turns the user table off.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionDCNArch, OverArch
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.sparse.jagged_tensor import JaggedTensor

from modules.batch import RANKING_KINDS, Batch
from modules.contract import LoaderNeeds, Recommender
from modules.embeddings import ITEM_FEATURES, ids_to_kjt, item_embedding_collection, lookup, reset_tables


@dataclasses.dataclass(kw_only=True)
class RankerConfig:
    """``model`` fields every ranker shares.

    Args:
        name: registry key.
        dim: embedding width D of the item and user tables and of the crossing head (a multiple of 4).
        heads: label columns predicted, one binary logit each; the first is the main one (selection metric,
            serving default).
        num_actions: rows of the action-type table (> every action code of the dataset).
        user_buckets: hashed user-id rows; 0 = no user table.
        dense_layers: DenseArch widths over the context features (the last is forced to ``dim``).
        cross_layers: DCN-v2 cross layers. cross_rank: their low rank.
        over_layers: OverArch hidden widths (a final layer of ``len(heads)`` outputs is added).
    """

    name: str
    dim: int = 32
    heads: list[str] = dataclasses.field(default_factory=lambda: ["click"])
    num_actions: int = 16
    user_buckets: int = 32768
    dense_layers: list[int] = dataclasses.field(default_factory=lambda: [64])
    cross_layers: int = 3
    cross_rank: int = 16
    over_layers: list[int] = dataclasses.field(default_factory=lambda: [128, 64])

    def validate(self) -> None:
        """Raise `ValueError` naming the ``model.<key>`` to change."""
        if self.dim < 4 or self.dim % 4:
            raise ValueError(f"model.dim must be a positive multiple of 4 (FBGEMM kernels need it), got {self.dim}")
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"model.heads must be a non-empty list of distinct label names, got {self.heads}")
        for key in ("num_actions", "cross_layers", "cross_rank"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.user_buckets < 0:
            raise ValueError(f"model.user_buckets must be >= 0, got {self.user_buckets}")
        if any(width < 1 for width in [*self.dense_layers, *self.over_layers]) or not self.over_layers:
            raise ValueError("model.dense_layers / model.over_layers must hold positive widths (over_layers >= 1)")

    def loader_needs(self) -> LoaderNeeds:
        """Histories with their action types and times; sampled negatives where a dataset has no impressions."""
        return LoaderNeeds(negatives="uniform", timestamps=True, actions=True)


def context_features(lengths: torch.Tensor, actions: torch.Tensor, request_time: torch.Tensor,
                     num_actions: int) -> torch.Tensor:
    """``(B, 3 + num_actions)``: log1p(length), the share of each action type in the history, hour (sin, cos).

    Sequence-free aggregates (counters), what a production DLRM sees; zeros for the hour when the batch has no
    request times and for the shares of an empty history.
    """
    b = lengths.numel()
    owner = torch.repeat_interleave(torch.arange(b, device=lengths.device), lengths)
    counts = torch.zeros(b, num_actions, device=lengths.device)
    if actions.numel():
        counts.index_put_((owner, actions.clamp(0, num_actions - 1)), torch.ones_like(owner, dtype=torch.float),
                          accumulate=True)
    shares = counts / lengths.clamp(min=1)[:, None].float()
    if request_time.numel():
        day = 86400  # seconds (a literal: TorchScript compiles this function and reads no int globals)
        angle = (request_time % day).float() * (2 * math.pi / day)
        hour = torch.stack([angle.sin(), angle.cos()], dim=1)
    else:
        hour = torch.zeros(b, 2, device=lengths.device)
    return torch.cat([torch.log1p(lengths.float())[:, None], shares, hour], dim=1)


class CrossNet(LowRankCrossNet):
    """TorchRec's low-rank DCN-v2 cross layers with a ``reset_parameters`` (theirs initialise only in
    ``__init__``, so a meta-built model materialised with ``to_empty`` would keep garbage)."""

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for w, v, b in zip(self.W_kernels, self.V_kernels, self.bias):
                nn.init.xavier_normal_(w)
                nn.init.xavier_normal_(v)
                nn.init.zeros_(b)


class CrossingHead(nn.Module):
    """DLRM-DCN's dense arch, DCN-v2 interaction and over arch: context ``(B, C)`` + features ``(B, F, D)`` ->
    ``(B, H)`` logits (TorchRec's blocks, not a copy)."""

    def __init__(self, config: RankerConfig, context_dim: int, num_features: int, device=None) -> None:
        super().__init__()
        d = config.dim
        self.dense = DenseArch(context_dim, [*config.dense_layers[:-1], d] if config.dense_layers else [d],
                               device=device)
        width = (num_features + 1) * d
        self.cross = InteractionDCNArch(num_features, CrossNet(width, config.cross_layers, config.cross_rank))
        self.over = OverArch(width, [*config.over_layers, len(config.heads)], device=device)

    def forward(self, context: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.over(self.cross(self.dense(context), features))


class RankerCore(nn.Module):
    """Looked-up history and candidate -> ``(B, H)`` logits: context, hashed user, optional sequence feature,
    `CrossingHead`. A module of its own (no sharded table inside) so TorchRec's pipeline traces it as one leaf.

    The hashed user table is a dense ``nn.Embedding`` (updated by the dense optimizer under DDP): the batch's
    KJT carries item ids only, and a second sharded collection fed by a KJT built inside forward would not be
    pipelined.
    """

    def __init__(self, config: RankerConfig, sequence: nn.Module | None, device=None) -> None:
        super().__init__()
        self.config = config
        self.users = nn.Embedding(config.user_buckets, config.dim, device=device) if config.user_buckets else None
        self.sequence = sequence
        features = 1 + int(self.users is not None) + int(sequence is not None)
        self.head = CrossingHead(config, 3 + config.num_actions, features, device)

    def forward(self, history: JaggedTensor, candidate: JaggedTensor, batch: Batch) -> torch.Tensor:
        if batch.kind not in RANKING_KINDS:
            raise ValueError(f"a ranker scores {RANKING_KINDS} batches, got kind={batch.kind!r}")
        lengths, target = history.lengths(), candidate.values()
        if target.shape[0] != lengths.shape[0]:
            raise ValueError(f"a ranker scores one candidate per example, got {target.shape[0]} for "
                             f"{lengths.shape[0]} examples")
        sequence = None
        if self.sequence is not None:
            sequence = self.sequence(history.values(), lengths, target, batch.actions, batch.timestamps,
                                     batch.request_time)
        return self.scores(lengths, target, batch.actions, batch.request_time, self.user_vectors(batch.user_idx),
                           sequence)

    def user_vectors(self, user_idx: torch.Tensor) -> torch.Tensor | None:
        """``(B, D)`` hashed user embeddings (None without a user table)."""
        return None if self.users is None else self.users(user_idx % self.config.user_buckets)

    def scores(self, lengths: torch.Tensor, candidate: torch.Tensor, actions: torch.Tensor,
               request_time: torch.Tensor, users: torch.Tensor | None, sequence: torch.Tensor | None
               ) -> torch.Tensor:
        """``(B, H)`` logits from plain tensors (what the exported scorer calls too): history lengths ``(B,)``,
        candidate embeddings ``(B, D)``, action codes ``(T,)``, request times ``(B,)`` (or empty), user vectors
        and the sequence feature ``(B, D)`` (each None when the model has none)."""
        context = context_features(lengths, actions, request_time, self.config.num_actions)
        features = [candidate]
        if users is not None:
            features.append(users)
        if sequence is not None:
            features.append(sequence)
        return self.head(context, torch.stack(features, dim=1))


class MultiHeadLoss(nn.Module):
    """Sum over heads of the mean binary cross-entropy; logs ``loss``, the counts and ``loss_<head>``."""

    def __init__(self, heads: list[str]) -> None:
        super().__init__()
        self.heads = list(heads)

    def forward(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = batch.labels.to(logits.dtype).reshape(logits.shape[0], -1)
        if labels.shape[1] != logits.shape[1]:
            raise ValueError(f"batch has {labels.shape[1]} label columns, the model {logits.shape[1]} heads "
                             f"({self.heads}); set data/model heads alike")
        per_head = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)
        n = torch.tensor(float(logits.shape[0]))
        logs = {"loss": per_head.sum().detach(), "num_targets": n, "num_sequences": n}
        logs.update({f"loss_{h}": per_head[i].detach() for i, h in enumerate(self.heads)})
        return per_head.sum(), logs


class Ranker(Recommender):
    """A candidate ranker: the sharded item table, `RankerCore` (with a sequence module, or None for the
    DLRM-v2 baseline) and `MultiHeadLoss`. ``forward`` makes one lookup of ``batch.sparse`` (pipelined)."""

    def __init__(self, config: RankerConfig, num_items: int, sequence: nn.Module | None = None,
                 device=None) -> None:
        super().__init__()
        self.config, self.num_items = config, num_items
        self.item_ec = item_embedding_collection(num_items, config.dim, device, ITEM_FEATURES, "item_table")
        self.core = RankerCore(config, sequence, device)
        self.loss = MultiHeadLoss(config.heads)

    def loader_needs(self) -> LoaderNeeds:
        return self.config.loader_needs()

    def logits(self, batch: Batch) -> torch.Tensor:
        """``(B, H)`` logits of every example's candidate (``sparse["target"]``, one per example)."""
        embeddings = lookup(self.item_ec, batch.sparse)
        return self.core(embeddings["history"], embeddings["target"], batch)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss (sum of per-head BCE) and logs."""
        return self.loss(self.logits(batch), batch)

    def score(self, batch: Batch, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 1, H)`` logits of each example's own candidate (its ``sparse["target"]``)."""
        return self.logits(batch)[:, None, :]

    def encode(self, batch: Batch) -> torch.Tensor:
        """The user-side representation ``(B, D)``: the hashed user embedding (zeros without a user table)."""
        users = self.core.user_vectors(batch.user_idx)
        return torch.zeros(batch.size, self.config.dim) if users is None else users

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        return lookup(self.item_ec, ids_to_kjt(item_ids, "target", ITEM_FEATURES))["target"].values()

    def reset_parameters(self) -> None:
        for module in self.core.modules():
            if module is not self.core and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        reset_tables(self.item_ec)


torch.fx.wrap("context_features")  # data-dependent (index_put_, numel): one call in FX traces of the scorer
