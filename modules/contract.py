"""The model contract: the interface every recommender implements, so one trainer, one evaluator and one exporter
serve every model.

`Recommender` (what the trainer, ``seqrec evaluate`` and ``seqrec export`` call):

* ``forward(batch) -> (loss, logs)``: training loss; ``logs`` holds at least ``loss``, ``num_targets`` and
  ``num_sequences`` (0-d tensors), the counts the trainer reports.
* ``encode(batch) -> (B, D)``: the query representation (last position for sequence models, the user tower for
  two-tower models).
* ``item_embeddings(item_ids (N,)) -> (N, D)``: candidate representations, looked up through the model's own
  (sharded) tables; on a sharded model a collective (every rank calls it equally often).
* ``score(batch, candidates (B, C)) -> (B, C[, heads])``: candidate-aware scoring; the default is the dot
  product of `encode` and `item_embeddings`; rankers (TransAct, DLRM) override it.
* ``loader_needs() -> LoaderNeeds``: what its batches must carry (sampled negatives, timestamps, actions).
* ``reset_parameters()``: initialise every parameter after ``to_empty`` of a meta-built, unsharded model.

Retrieval models also implement ``retrieval_export() -> RetrievalExport``: the parts `serving.inference`
scripts into the served artefact (the model's own query module, not a re-implementation).

`SequenceEncoder` is the extension point of sequence models: jagged history embeddings in, right-padded
per-position outputs out. A new sequence model is one encoder file (encoder + its config dataclass +
``@register``) and one ``configs/model/<name>.yaml``; `modules.sequence.SequenceRecommender` supplies the item
table, the objective, `encode` and export.
"""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import nn

from modules.batch import Batch

NEGATIVE_SAMPLERS = ("none", "uniform", "popularity", "in_batch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoaderNeeds:
    """What a model's training batches must carry (the trainer turns it into loader settings).

    Args:
        negatives: sampler for ``batch.sparse["negatives"]``: one of `NEGATIVE_SAMPLERS`.
        timestamps: fill ``batch.timestamps`` (per history position).
        actions: fill ``batch.actions`` (per history position).
    """

    negatives: str = "none"
    timestamps: bool = False
    actions: bool = False

    def __post_init__(self) -> None:
        if self.negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"negatives must be one of {NEGATIVE_SAMPLERS}, got {self.negatives!r}")


@dataclasses.dataclass
class RetrievalExport:
    """What a retrieval model hands the exporter (all on CPU, eval mode).

    Args:
        table: ``(R, D)`` input item table, row = item id (row 0 padding; extra rows such as a mask token
            after ``num_items``): history ids are looked up in it.
        query: module ``forward(embedded (T, D), lengths (B,), timestamps (T,)) -> (B, D)``: the model's own
            query computation on looked-up history embeddings; must trace with ``torchrec.fx`` in eval mode
            (data-dependent steps inside ``torch.fx.wrap``-ed functions that TorchScript compiles; call the
            wrapped helpers of `modules.sequence` as ``seq.name(...)``, since FX patches them where defined).
        max_len: the longest history ``query`` encodes (longer requests keep their most recent items).
        catalogue: ``(N, D)`` scoring rows of items ``1..N``, or None when they are ``table[1 : N + 1]``
            (tied weights: one copy in the artefact).
    """

    table: torch.Tensor
    query: nn.Module
    max_len: int
    catalogue: torch.Tensor | None = None


@dataclasses.dataclass
class SideFeatures:
    """Categorical side features of items (rows = item ids, row 0 padding) or users (rows = user_idx), as codes.

    Args:
        codes: per feature ``(R, M_f) int64`` codes, ``0`` = unknown / padding (multi-valued features use up to
            ``M_f`` slots, single-valued ones one).
        cardinality: per feature the number of codes including 0 (the embedding table size).

    A data-derived build argument of models that use features (``@register(..., features=True)``).
    """

    codes: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    cardinality: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.codes)


class Recommender(nn.Module, metaclass=abc.ABCMeta):
    """Base of every model; see the module docstring for the contract."""

    @abc.abstractmethod
    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and logs."""

    @abc.abstractmethod
    def encode(self, batch: Batch) -> torch.Tensor:
        """Query representation ``(B, D)``."""

    @abc.abstractmethod
    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Candidate representations ``(N, D)`` for ``item_ids: (N,) int64``."""

    @abc.abstractmethod
    def reset_parameters(self) -> None:
        """Initialise every parameter (after ``to_empty``)."""

    def loader_needs(self) -> LoaderNeeds:
        """What training batches must carry; default: nothing beyond history and targets."""
        return LoaderNeeds()

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, C)`` of ``candidates: (B, C) int64`` for each example: ``encode · item_embeddings``."""
        query = self.encode(batch)
        items = self.item_embeddings(candidates.reshape(-1)).view(*candidates.shape, -1)
        return (items * query[:, None, :]).sum(-1)

    def retrieval_export(self) -> RetrievalExport:
        """The parts the retrieval exporter scripts; models of other tasks need not implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no retrieval export")


class SequenceEncoder(nn.Module):
    """Base of sequence encoders: ``forward(embedded (T, D), lengths (B,), timestamps (T,)) -> (B, Lmax, D)``.

    ``embedded`` holds the looked-up history embeddings of B sequences concatenated (oldest first, jagged:
    ``lengths`` gives each length, all ``>= 1``); ``timestamps`` the matching event times (may be empty when
    the encoder does not declare ``needs_timestamps``). The output is right-padded to the batch's longest
    history; rows beyond a sequence's length are never read. ``causal=True`` encoders let position ``i`` see
    positions ``<= i`` only (every position then predicts the next item); bidirectional ones see the whole
    sequence (cloze training).

    Class attributes a subclass sets: ``causal`` and ``needs_timestamps``; instance attribute ``max_len``.
    """

    # plain class attributes (no annotations: TorchScript scripts encoders directly for the tower export)
    causal = True
    needs_timestamps = False

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
