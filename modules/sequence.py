"""`SequenceRecommender`: item table + any `SequenceEncoder` + `SequenceObjective`, behind the model contract.

Data path of ``forward``::

    batch.sparse (KJT: history, target, negatives) --item_ec--> {feature: JaggedTensor (T_f, D)}
    history (jagged) -> encoder -> right-padded (B, Lmax, D) -> objective (causal: every real position;
    last: the last one) -> loss against the target / negative embeddings of the same lookup

Pipelining: ``forward`` makes ONE call of ``item_ec`` and, for every objective except tied ``softmax``, passes
``batch.sparse`` unchanged, so TorchRec's `TrainPipelineSparseDist` can pipeline its input distribution.
Everything after the lookup sits in leaf modules (the encoder, the objective) so the pipeline's FX trace of
``forward`` sees no data-dependent control flow. Not pipelined (still correct): tied ``softmax`` (the lookup also
needs every item id: forward builds a KJT whose ``negatives`` hold ``1..N``) and untied weights (the output
table ``out_ec`` gets a KJT built inside forward).

`encode` runs `LastPositionQuery` -- the module the exporter scripts -- so served scores are the model's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from modules.batch import Batch
from modules.contract import LoaderNeeds, Recommender, RetrievalExport, SequenceEncoder
from modules.embeddings import (
    ITEM_FEATURES,
    ids_to_kjt,
    item_embedding_collection,
    jagged_to_kjt,
    lookup,
    reset_tables,
)
from modules.objectives import ObjectiveConfig, SequenceObjective, last_position

OUTPUT_FEATURES = ("target_out", "negatives_out")


@dataclasses.dataclass(kw_only=True)
class SequenceModelConfig:
    """``model``: what every sequence model shares. A model's own config subclasses it and adds ``encoder``.

    Args:
        name: registry key (`modules.registry`).
        dim: embedding and model width D (a multiple of 4: FBGEMM's kernels need it).
        tie_weights: score against the input item table; False adds an output table.
        objective: the loss (`modules.objectives.ObjectiveConfig`).
    """

    name: str
    dim: int = 64
    tie_weights: bool = True
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)

    def validate(self) -> None:
        """Raise `ValueError` naming the ``model.<key>`` to change (checks every component)."""
        if self.dim < 4 or self.dim % 4:
            raise ValueError(f"model.dim must be a positive multiple of 4 (FBGEMM kernels need it), got {self.dim}")
        self.objective.validate()
        encoder = getattr(self, "encoder", None)
        if encoder is not None:
            encoder.validate(self.dim)

    def loader_needs(self) -> LoaderNeeds:
        """What the loader must provide: the objective's negatives (and what the encoder config asks)."""
        encoder = getattr(self, "encoder", None)
        return LoaderNeeds(
            negatives=self.objective.negatives, timestamps=bool(getattr(encoder, "needs_timestamps", False))
        )


class LastPositionQuery(nn.Module):
    """``(embedded (T, D), lengths (B,), timestamps (T,)) -> (B, D)``: the encoder's output at each sequence's
    last position. What `SequenceRecommender.encode` runs and the exporter scripts."""

    def __init__(self, encoder: SequenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        return last_position(self.encoder(embedded, lengths, timestamps), lengths)


class SequenceRecommender(Recommender):
    """A sequence model on one TorchRec item table (plus an output table when weights are untied).

    Args:
        config: the model's `SequenceModelConfig` (subclass).
        encoder: the `SequenceEncoder` built from ``config.encoder``, or a function returning it; a function is
            called after the item table is built, so a seeded initialisation draws the table first (the order
            the golden losses, and the pre-registry SASRec, were recorded with).
        num_items: N; item ids are ``1..N``, 0 is padding.
        extra_rows: table rows after ``N`` for special tokens (e.g. BERT4Rec's mask, id ``N + 1``).
        device: where parameters are built; ``"meta"`` for `DistributedModelParallel` to materialise.

    Example::

        model = modules.registry.build(SASRecConfig(), num_items=3416, max_len=200)
        loss, logs = model(batch)                       # batch: modules.batch.Batch
        scores = model.encode(batch) @ model.item_embeddings(torch.arange(1, 3417)).T
    """

    def __init__(
        self,
        config: SequenceModelConfig,
        encoder: SequenceEncoder | Callable[[], SequenceEncoder],
        num_items: int,
        extra_rows: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.config, self.num_items = config, num_items
        self.item_ec = item_embedding_collection(num_items + extra_rows, config.dim, device, ITEM_FEATURES, "item_table")
        self.out_ec = None
        if not config.tie_weights:
            self.out_ec = item_embedding_collection(num_items, config.dim, device, OUTPUT_FEATURES, "item_out_table")
        self.encoder = encoder if isinstance(encoder, nn.Module) else encoder()
        self.query = LastPositionQuery(self.encoder)
        self.objective = SequenceObjective(config.objective, num_items)

    @property
    def pipelined_lookup(self) -> bool:
        """Whether forward passes ``batch.sparse`` unchanged to ``item_ec`` (what the sparse-dist pipeline needs)."""
        return not (self.config.objective.loss == "softmax" and self.config.tie_weights)

    def loader_needs(self) -> LoaderNeeds:
        return self.config.loader_needs()

    def lookup_batch(self, batch: Batch) -> tuple[dict[str, JaggedTensor], dict[str, JaggedTensor] | None]:
        """The item-table lookup of a training batch (and the output table's, when untied)."""
        softmax = self.config.objective.loss == "softmax"
        if self.pipelined_lookup:
            embeddings = lookup(self.item_ec, batch.sparse)
        else:
            embeddings = lookup(self.item_ec, with_catalogue(batch.sparse, self.num_items))
        outputs = None
        if self.out_ec is not None:
            outputs = lookup(self.out_ec, output_kjt(batch.sparse, self.num_items, softmax))
        return embeddings, outputs

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and logs ``{"loss", "num_targets", "num_sequences"}`` for a ``causal``/``last`` batch."""
        embeddings, outputs = self.lookup_batch(batch)
        history = embeddings["history"]
        hidden = self.encoder(history.values(), history.lengths(), batch.timestamps)
        return self.objective(batch, hidden, embeddings, outputs)

    def sequence_outputs(self, batch: Batch) -> torch.Tensor:
        """Representation after every history position, jagged ``(sum_i L_i, D)`` in ``history`` order."""
        history = self._history(batch)
        hidden = self.encoder(history.values(), history.lengths(), batch.timestamps)
        return torch.ops.fbgemm.dense_to_jagged(hidden, [history.offsets()])[0]

    def encode(self, batch: Batch) -> torch.Tensor:
        """Query representation ``(B, D)``: `LastPositionQuery` on the looked-up history."""
        history = self._history(batch)
        return self.query(history.values(), history.lengths(), batch.timestamps)

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Candidate embeddings ``(N, D)`` for ``item_ids: (N,)`` from the scoring table, via its collection.

        On a sharded model this is a collective: every rank must call it the same number of times.
        """
        ec, features, key = self.item_ec, ITEM_FEATURES, "target"
        if self.out_ec is not None:
            ec, features, key = self.out_ec, OUTPUT_FEATURES, "target_out"
        return lookup(ec, ids_to_kjt(item_ids, key, features))[key].values()

    def reset_parameters(self) -> None:
        """Initialise every parameter (after ``to_empty`` of a meta-built, unsharded model)."""
        for module in self.encoder.modules():
            if module is not self.encoder and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        reset_tables(self.item_ec)
        if self.out_ec is not None:
            reset_tables(self.out_ec)

    def retrieval_export(self) -> RetrievalExport:
        """The input table, `LastPositionQuery` and (untied) the output rows of items ``1..N``."""
        table = self.item_ec.embeddings["item_table"].weight.detach()
        catalogue = None
        if self.out_ec is not None:
            catalogue = self.out_ec.embeddings["item_out_table"].weight.detach()[1 : self.num_items + 1]
        return RetrievalExport(table=table, query=self.query, max_len=self.encoder.max_len, catalogue=catalogue)

    def _history(self, batch: Batch) -> JaggedTensor:
        """Look up only the history (other features empty): evaluation batches may lack negatives."""
        history = batch.sparse["history"]
        return lookup(self.item_ec, jagged_to_kjt(history, "history", ITEM_FEATURES))["history"]


class PositionTable(nn.Embedding):
    """Learned position embeddings initialised ``normal(0, init_std)``.

    ``nn.Embedding``'s own N(0, 1) would give positions the scale of the ``sqrt(D)``-scaled item inputs; the
    reference implementations start them ~50x smaller (std 0.02) and so does this (on MovieLens-1M: valid
    NDCG@10 0.1625 vs 0.1589 after 20 epochs). A subclass, because `DistributedModelParallel` initialises an
    unsharded meta module through each leaf's own ``reset_parameters``.
    """

    def __init__(self, max_len: int, dim: int, init_std: float, device: torch.device | str | None = None) -> None:
        self.init_std = init_std  # before super().__init__, which calls reset_parameters
        super().__init__(max_len, dim, device=device)

    def reset_parameters(self) -> None:
        """``normal(0, init_std)`` (on ``meta`` a no-op that DMP or ``to_empty`` + this call repeats)."""
        nn.init.normal_(self.weight, 0.0, self.init_std)


def padded_dense(embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Jagged ``(T, D)`` right-padded to ``(B, Lmax, D)`` with zeros."""
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    return torch.ops.fbgemm.jagged_to_padded_dense(embedded, [offsets], [int(lengths.max())], 0.0)


def real_mask(lengths: torch.Tensor) -> torch.Tensor:
    """``(B, Lmax, 1)`` bool: True at real (non-padding) positions of a right-padded batch."""
    cols = torch.arange(int(lengths.max()), device=lengths.device)
    return (cols < lengths[:, None]).unsqueeze(-1)


def positions_from_end(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, Lmax)`` position index counted from the end: the last real item is ``max_len - 1`` (padding clamped),
    so the last item always has the same position and serving sees what training saw."""
    cols = torch.arange(int(lengths.max()), device=lengths.device)
    return (max_len - lengths[:, None] + cols).clamp(min=0, max=max_len - 1)


def padded_values(values: torch.Tensor, lengths: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """A jagged 1-D integer tensor ``(T,)`` (ids, timestamps) right-padded to ``(B, Lmax)`` with ``fill``, exactly
    (an index scatter, not a float round trip: unix seconds do not fit a float32)."""
    longest = int(lengths.max()) if lengths.numel() else 0
    out = values.new_full((lengths.numel(), longest), fill)
    rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    cols = torch.arange(values.numel(), device=values.device) - torch.repeat_interleave(starts, lengths)
    out[rows, cols] = values
    return out


def check_lengths(lengths: torch.Tensor, max_len: int) -> None:
    """Every history length must be in ``[1, max_len]`` (the loader truncates; the position table has max_len rows)."""
    shortest, longest = (int(x) for x in torch.aminmax(lengths))
    if shortest < 1 or longest > max_len:
        raise ValueError(
            f"history lengths must be in [1, model max_len={max_len}], got [{shortest}, {longest}]; "
            "truncate histories in the loader (data.max_len)"
        )


def padded_groups(lengths: torch.Tensor, groups: int) -> tuple[list[tuple[torch.Tensor, int]], torch.Tensor]:
    """Split a batch into up to ``groups`` groups of sequences of similar length, for padding each group only to
    its own longest: ``([(rows, longest length of those rows)], restore)``, where ``cat(groups)[restore]`` is
    the batch's order again.

    The sequences are sorted by length and cut into groups of equal count. An encoder that treats every
    sequence on its own (attention within the sequence, everything else per position) gives the real positions
    the outputs of the whole padded batch (up to float rounding; dropout draws other masks): the batch stays
    random, as the loss wants, while the blocks skip most of its padding (a random ML-1M batch is ~45% padding).
    """
    order = torch.argsort(lengths, stable=True)
    chunks = torch.tensor_split(order, min(groups, lengths.numel()))  # never empty: at most one group per row
    widths = [int(lengths[rows[-1]]) for rows in chunks]
    return list(zip(chunks, widths)), torch.argsort(order)


def run_grouped(fn, x: torch.Tensor, lengths: torch.Tensor, groups: int, pass_lengths: bool = False) -> torch.Tensor:
    """``fn`` (a per-sequence map ``(b, L, D) -> (b, L, D)``) on length-sorted groups of right-padded ``x``, each
    cut to its own longest; the result padded back to ``x``'s width, in the batch's order. ``pass_lengths``:
    call ``fn(x_group, lengths_group)`` instead (for attention backends that skip padding)."""
    if groups <= 1:
        return fn(x, lengths) if pass_lengths else fn(x)
    longest = x.shape[1]
    parts, restore = padded_groups(lengths, groups)
    outputs = [fn(x[rows, :width], lengths[rows]) if pass_lengths else fn(x[rows, :width]) for rows, width in parts]
    return torch.cat([nn.functional.pad(h, (0, 0, 0, longest - h.shape[1])) for h in outputs])[restore]


def with_catalogue(sparse: KeyedJaggedTensor, num_items: int) -> KeyedJaggedTensor:
    """``history`` of the batch, ``target`` empty, ``negatives`` = every item id ``1..N`` (all in example 0).

    Full softmax scores targets through the catalogue rows, so looking their embeddings up again (a third of
    the lookup and of its backward) would be wasted.
    """
    history = sparse["history"]
    catalogue, lengths = _catalogue(history.lengths(), num_items)
    return KeyedJaggedTensor(
        keys=list(ITEM_FEATURES),
        values=torch.cat([history.values(), catalogue]),
        lengths=torch.cat([history.lengths(), torch.zeros_like(history.lengths()), lengths]),
    )


def output_kjt(sparse: KeyedJaggedTensor, num_items: int, catalogue: bool) -> KeyedJaggedTensor:
    """The output table's input: the batch's targets and negatives (or the whole catalogue for softmax)."""
    target = sparse["target"]
    if catalogue:
        negative_values, negative_lengths = _catalogue(target.lengths(), num_items)
    else:
        negatives = sparse["negatives"]
        negative_values, negative_lengths = negatives.values(), negatives.lengths()
    return KeyedJaggedTensor(
        keys=list(OUTPUT_FEATURES),
        values=torch.cat([target.values(), negative_values]),
        lengths=torch.cat([target.lengths(), negative_lengths]),
    )


def _catalogue(like_lengths: torch.Tensor, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``1..N`` and lengths ``[N, 0, ..., 0]`` shaped like a feature of the same batch."""
    ids = torch.arange(1, num_items + 1, dtype=torch.int64, device=like_lengths.device)
    lengths = torch.zeros_like(like_lengths)
    lengths[0] = num_items
    return ids, lengths


# FX (the sparse-dist pipeline's trace of forward, the exporter's trace of the query) keeps these as one call each.
for _fn in ("with_catalogue", "output_kjt", "padded_dense", "real_mask", "positions_from_end", "padded_values",
            "check_lengths"):
    torch.fx.wrap(_fn)
