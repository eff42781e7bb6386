"""Training objectives of sequence models: which query rows are scored against which items, and the loss.

Each objective declares the negatives it needs (`NEGATIVES`): the trainer asks the loader for them, so a model
config never names a sampler unless it wants another one (``data.negatives``).

* ``softmax``: full cross entropy over the catalogue (no sampled negatives; chunked, `modules.losses`).
* ``sampled_softmax``: cross entropy over the batch's pooled sampled negatives with logQ correction (popularity
  negatives by default), or in-batch negatives when the batch carries none.
* ``bce``, ``bpr``, ``gbce``: each target against the ``n`` negatives of its example (uniform by default);
  gBCE is gSASRec's calibrated BCE (``gbce_t``).

Every sampled loss drops accidental hits (a negative equal to the target).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from modules import losses
from modules.batch import Batch

NEGATIVES = {"softmax": "none", "sampled_softmax": "popularity", "bce": "uniform", "bpr": "uniform", "gbce": "uniform"}
LOSSES = tuple(NEGATIVES)
TRAIN_KINDS = ("causal", "last")


@dataclasses.dataclass(kw_only=True)
class ObjectiveConfig:
    """``model.objective``: the loss and its knobs.

    Args:
        loss: one of `LOSSES`.
        temperature: logits are divided by it (> 0).
        gbce_t: gSASRec's calibration t in [0, 1] (``loss=gbce``).
        softmax_chunk: full / sampled softmax in blocks of this many targets without materialising the logits
            (~2x faster on CPU); 0 = plain.
    """

    loss: str = "softmax"
    temperature: float = 1.0
    gbce_t: float = 0.75
    softmax_chunk: int = 256

    def validate(self) -> None:
        """Raise `ValueError` naming the ``model.objective.<key>`` to change."""
        if self.loss not in LOSSES:
            raise ValueError(f"model.objective.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.temperature <= 0.0:
            raise ValueError(f"model.objective.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.gbce_t <= 1.0:
            raise ValueError(f"model.objective.gbce_t must be in [0, 1], got {self.gbce_t}")
        if self.softmax_chunk < 0:
            raise ValueError(f"model.objective.softmax_chunk must be >= 0 (0: unchunked), got {self.softmax_chunk}")

    @property
    def negatives(self) -> str:
        """The sampler this loss needs by default."""
        return NEGATIVES[self.loss]


class SequenceObjective(nn.Module):
    """Loss of a sequence encoder's outputs: picks the query rows, scores them, applies ``config.loss``.

    No parameters. A separate module so the pipeline's FX trace of the model treats it as one opaque call (it
    branches on the batch kind and on tensor sizes).
    """

    def __init__(self, config: ObjectiveConfig, num_items: int) -> None:
        super().__init__()
        if config.loss == "gbce" and num_items < 2:
            raise ValueError("model.objective.loss='gbce' needs a catalogue of >= 2 items")
        self.config, self.num_items = config, num_items

    def forward(
        self,
        batch: Batch,
        hidden: torch.Tensor,
        embeddings: dict[str, JaggedTensor],
        outputs: dict[str, JaggedTensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, {"loss", "num_targets", "num_sequences"})`` for right-padded ``hidden (B, L, D)``;
        ``outputs``: the output table's lookup when weights are untied."""
        table, suffix = (embeddings, "") if outputs is None else (outputs, "_out")
        history = embeddings["history"]
        target_ids = batch.sparse["target"].values()
        queries, to_targets = query_layout(batch.kind, hidden, history.lengths(), batch.sparse["target"].lengths())
        queries = queries / self.config.temperature
        query = to_targets(queries)
        loss = self.loss(batch, query, queries, to_targets, table, suffix, target_ids)
        num_targets = torch.tensor(target_ids.numel(), device=loss.device)
        num_sequences = torch.tensor(history.lengths().numel(), device=loss.device)
        return loss, {"loss": loss.detach(), "num_targets": num_targets, "num_sequences": num_sequences}

    def loss(self, batch, query, queries, to_targets, table, suffix, target_ids) -> torch.Tensor:
        """The configured loss of per-target ``query (T, D)`` against the looked-up ``table`` features."""
        if self.config.loss == "softmax":
            catalogue = table["negatives" + suffix].values()
            full = torch.cat([catalogue.new_zeros(1, catalogue.shape[1]), catalogue])
            return losses.softmax_loss(query, full, target_ids, self.config.softmax_chunk)
        positive = table["target" + suffix].values()
        pos_logits = (query * positive).sum(-1)
        negatives = table["negatives" + suffix]
        if self.config.loss == "sampled_softmax":
            return self._sampled_softmax(batch, query, pos_logits, positive, negatives.values(), target_ids)
        per_example = _per_example(negatives)
        neg_logits = to_targets(torch.bmm(queries, per_example.transpose(1, 2)))
        neg_ids = batch.sparse["negatives"].values().view(per_example.shape[:2])
        neg_ids = neg_ids.repeat_interleave(batch.sparse["target"].lengths(), dim=0)
        return self._pairwise(pos_logits, neg_logits, target_ids, neg_ids)

    def _sampled_softmax(self, batch, query, pos_logits, positive, pool, target_ids) -> torch.Tensor:
        pool_ids, pool_logq = batch.sparse["negatives"].values(), batch.negative_logq
        if pool.shape[0] == 0:  # no sampled negatives: the batch's targets are the negatives
            pool, pool_ids, pool_logq = positive, target_ids, batch.target_logq
        chunk = self.config.softmax_chunk
        if chunk > 0:
            return losses.chunked_sampled_softmax_loss(
                query, pos_logits, pool, chunk, target_ids, pool_ids, batch.target_logq, pool_logq
            )
        return losses.sampled_softmax_from_logits(
            pos_logits, query @ pool.T, target_ids, pool_ids, batch.target_logq, pool_logq
        )

    def _pairwise(self, pos_logits, neg_logits, target_ids, neg_ids) -> torch.Tensor:
        if self.config.loss == "bce":
            return losses.bce_from_logits(pos_logits, neg_logits, target_ids, neg_ids)
        if self.config.loss == "bpr":
            return losses.bpr_from_logits(pos_logits, neg_logits, target_ids, neg_ids)
        return losses.gbce_from_logits(pos_logits, neg_logits, self.num_items, self.config.gbce_t, target_ids, neg_ids)


def query_layout(kind: str, hidden: torch.Tensor, history_lengths: torch.Tensor, target_lengths: torch.Tensor):
    """Query rows in padded form ``(B, M, D)`` and the map from ``(B, M, X)`` to per-target ``(T, X)``.

    ``causal``: every history position predicts the next item (targets aligned with the history); ``last``:
    the last real position predicts each of the example's targets.
    """
    if kind == "causal":
        if not torch.equal(target_lengths, history_lengths):
            raise ValueError("a causal batch needs one target per history position (equal lengths)")
        offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(history_lengths)
        return hidden, lambda x: torch.ops.fbgemm.dense_to_jagged(x, [offsets])[0]
    if kind == "last":
        last = last_position(hidden, history_lengths)[:, None]
        return last, lambda x: x[:, 0].repeat_interleave(target_lengths, dim=0)
    raise ValueError(f"sequence objectives train on batch kinds {TRAIN_KINDS}, got {kind!r}")


def last_position(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Row ``lengths[b] - 1`` of each example: ``(B, L, D) -> (B, D)``."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def _per_example(negatives: JaggedTensor) -> torch.Tensor:
    """Negatives ``(B, n, D)``; every example must carry the same number n >= 1."""
    lengths = negatives.lengths()
    n = int(lengths[0]) if lengths.numel() else 0
    if n < 1 or not bool((lengths == n).all()):
        raise ValueError(
            "losses bce/bpr/gbce need the same number (>= 1) of sampled negatives per example; "
            "set data.negatives to 'uniform' or 'popularity'"
        )
    return negatives.values().view(lengths.numel(), n, -1)


torch.fx.wrap("last_position")
