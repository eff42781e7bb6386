"""SASRec (Kang & McAuley, 2018): a causal transformer over the item history, scored against item embeddings.

Data path of `SASRec.forward`::

    batch.sparse (KJT: history, target, negatives) --item_ec--> {feature: JaggedTensor (T_f, D)}
    history (jagged) -> right-padded (B, Lmax, D) * sqrt(D) + position -> dropout -> blocks -> LayerNorm
    causal: outputs at real positions (jagged, aligned with ``target``); last: the last real position
    -> loss against target / negative embeddings from the same lookup

Padding: RIGHT, only to the batch's own longest history. With a causal mask a real position never sees a
padded one, so no key-padding mask is needed (attention keeps SDPA's ``is_causal`` fast path), no query row is
fully masked, and the real positions in row-major order are exactly the jagged order. Padded positions produce
finite values that are never read. Position indices count from the END of each history (last item =
``max_len - 1``), so the last real item always has the same position and `encode` sees what training saw.

Pipelining: `forward` makes ONE call of ``item_ec`` and, for the built-in losses except tied ``softmax``, the
call receives ``batch.sparse`` unchanged, so TorchRec's `TrainPipelineSparseDist` can pipeline its input
distribution. Everything after the lookup sits in leaf modules (`SASRecEncoder`, `SequenceObjective`) so
the pipeline's FX trace of `forward` never sees data-dependent control flow. Not pipelined (still correct):

* ``loss="softmax"`` with tied weights: the lookup also needs every item id, so forward builds a KJT whose
  ``negatives`` feature holds ids ``1..N`` (the batch's own negatives are unused by this loss);
* ``tie_weights=False``: the output table ``out_ec`` (features ``target_out``, ``negatives_out``) gets a KJT
  built inside forward from the batch's target/negative ids (or the catalogue for softmax). The input table
  still looks up the batch's target/negatives (the KJT goes in unchanged); those rows get no gradient.

Negatives (``bce``, ``bpr``, ``gbce``): the ``n`` negatives of an example are scored against each of its
targets (every causal position); ``sampled_softmax`` pools all negatives of the batch, or, when the batch
carries none, uses the batch's targets (in-batch negatives, logQ from ``target_logq``). Every sampled loss
drops accidental hits (a negative equal to the target).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from modules import losses
from modules.attention_config import BACKENDS, AttentionConfig
from modules.dropout import Dropout
from modules.embeddings import (
    ITEM_FEATURES,
    ids_to_kjt,
    item_embedding_collection,
    jagged_to_kjt,
    lookup,
    reset_tables,
)
from modules.transformer import LAYOUTS, TransformerBlock, run_blocks

LOSSES = ("softmax", "sampled_softmax", "bce", "bpr", "gbce")
OUTPUT_FEATURES = ("target_out", "negatives_out")
TRAIN_KINDS = ("causal", "last")


@dataclasses.dataclass(kw_only=True)
class SASRecConfig:
    """SASRec hyper-parameters; see `SASRec` for their meaning."""

    num_items: int
    dim: int = 64
    max_len: int = 200
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    attn_backend: str = "sdpa"
    loss: str = "softmax"
    tie_weights: bool = True
    gbce_t: float = 0.75
    temperature: float = 1.0
    softmax_chunk: int = 256
    block: str = "pre_ln"
    position_init_std: float = 0.02
    length_groups: int = 4
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)

    def validate(self) -> None:
        """Raise `ValueError` naming the setting to change."""
        for key in ("num_items", "dim", "max_len", "num_blocks", "num_heads", "length_groups"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.dim % self.num_heads:
            raise ValueError(f"model.dim={self.dim} must be divisible by model.num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.attn_backend not in BACKENDS:
            raise ValueError(f"model.attn_backend must be one of {BACKENDS}, got {self.attn_backend!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "gbce" and not 0.0 <= self.gbce_t <= 1.0:
            raise ValueError(f"model.gbce_t must be in [0, 1], got {self.gbce_t}")
        if self.loss == "gbce" and self.num_items < 2:
            raise ValueError("model.loss='gbce' needs model.num_items >= 2")
        if self.temperature <= 0.0:
            raise ValueError(f"model.temperature must be > 0, got {self.temperature}")
        if self.block not in LAYOUTS:
            raise ValueError(f"model.block must be one of {LAYOUTS}, got {self.block!r}")
        if self.position_init_std <= 0.0:
            raise ValueError(f"model.position_init_std must be > 0, got {self.position_init_std}")
        if self.softmax_chunk < 0:
            raise ValueError(f"model.softmax_chunk must be >= 0 (0: unchunked), got {self.softmax_chunk}")
        self.attention.validate(self.attn_backend, self.dropout)


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


class SASRecEncoder(nn.Module):
    """Jagged history embeddings -> right-padded causal transformer outputs ``(B, Lmax, D)``.

    Args:
        dim: width D. max_len: longest history accepted (size of the position table).
        num_blocks, num_heads, dropout, attn_backend: as `modules.transformer.TransformerBlock`.
        block: the blocks' ``layout`` (`modules.transformer.LAYOUTS`).
        position_init_std: std of the position table's initialisation (`PositionTable`).
        length_groups: the blocks run on this many groups of the batch's sequences, sorted by length, each
            padded only to its own longest (`padded_groups`); 1 pads the whole batch to its longest.
        device: where the parameters live (``"meta"`` allowed).
        attention: the attention backend's parameters and block checkpointing (`AttentionConfig`).
    """

    def __init__(
        self,
        dim: int,
        max_len: int,
        num_blocks: int,
        num_heads: int,
        dropout: float,
        attn_backend: str,
        block: str = "pre_ln",
        position_init_std: float = 0.02,
        length_groups: int = 4,
        device: torch.device | str | None = None,
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.max_len, self.length_groups = dim, max_len, length_groups
        attention = attention or AttentionConfig()
        self.checkpoint_blocks = attention.checkpoint
        self.positions = PositionTable(max_len, dim, position_init_std, device=device)
        self.input_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, num_heads, dropout=dropout, attn_backend=attn_backend, layout=block, device=device,
                attn_config=attention,
            )
            for _ in range(num_blocks)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-8, device=device)

    def forward(self, history: JaggedTensor) -> torch.Tensor:
        """``history.values(): (sum_i L_i, D)``, ``lengths: (B,)`` -> ``(B, max_i L_i, D)``."""
        lengths = history.lengths()
        shortest, longest = (int(x) for x in torch.aminmax(lengths))
        if shortest < 1 or longest > self.max_len:
            raise ValueError(
                f"history lengths must be in [1, model.max_len={self.max_len}], got [{shortest}, {longest}]; "
                "truncate histories in the loader (its max_len) or raise model.max_len"
            )
        x = torch.ops.fbgemm.jagged_to_padded_dense(history.values(), [history.offsets()], [longest], 0.0)
        cols = torch.arange(longest, device=lengths.device)
        # Count positions from the end: the last real item is always max_len - 1; padding gets a clamped index.
        positions = (self.max_len - lengths[:, None] + cols).clamp(max=self.max_len - 1)
        real = (cols < lengths[:, None]).unsqueeze(-1)
        x = (x * math.sqrt(self.dim) + self.positions(positions)) * real
        x = self.input_dropout(x)
        if self.length_groups == 1:
            return self._blocks(x, lengths)
        groups, restore = padded_groups(lengths, self.length_groups)
        outputs = [self._blocks(x[rows, :width], lengths[rows]) for rows, width in groups]
        return torch.cat([nn.functional.pad(h, (0, 0, 0, longest - h.shape[1])) for h in outputs])[restore]

    def _blocks(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.final_norm(run_blocks(self.blocks, x, lengths, self.checkpoint_blocks))


def padded_groups(lengths: torch.Tensor, groups: int) -> tuple[list[tuple[torch.Tensor, int]], torch.Tensor]:
    """Split a batch into up to ``groups`` groups of sequences of similar length, for padding each group only to
    its own longest: ``([(rows, longest length of those rows)], restore)``, where ``cat(groups)[restore]`` is
    the batch's order again.

    The sequences are sorted by length and cut into groups of equal count. A causal transformer treats every
    sequence on its own (attention within the sequence, everything else per position), so the real positions'
    outputs are those of the whole padded batch (up to float rounding; dropout draws other masks): the batch
    stays random, as the loss wants, while the blocks skip most of its padding (a random ML-1M batch is ~45%
    padding). Length bucketing in the loader pads less still, but makes the batches themselves homogeneous.
    """
    order = torch.argsort(lengths, stable=True)
    chunks = torch.tensor_split(order, min(groups, lengths.numel()))  # never empty: at most one group per row
    widths = [int(lengths[rows[-1]]) for rows in chunks]
    return list(zip(chunks, widths)), torch.argsort(order)


class SequenceObjective(nn.Module):
    """Loss of a causal sequence encoder: picks the query rows, scores them, applies one of `LOSSES`.

    No parameters. A separate module so that the pipeline's FX trace of the model treats it as one opaque
    call (it branches on the batch kind and on tensor sizes).
    """

    def __init__(self, loss: str, num_items: int, gbce_t: float, temperature: float, softmax_chunk: int) -> None:
        super().__init__()
        self.loss, self.num_items, self.gbce_t, self.temperature = loss, num_items, gbce_t, temperature
        self.softmax_chunk = softmax_chunk

    def forward(
        self,
        batch,  # trainer.data.batch.Batch (duck-typed: modules/ must not import trainer/)
        hidden: torch.Tensor,
        embeddings: dict[str, JaggedTensor],
        outputs: dict[str, JaggedTensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, {"loss", "num_targets", "num_sequences"})``; ``outputs``: the output table's lookup if untied."""
        table, suffix = (embeddings, "") if outputs is None else (outputs, "_out")
        history = embeddings["history"]
        target_ids = batch.sparse["target"].values()
        queries, to_targets = _query_layout(batch.kind, hidden, history, batch.sparse["target"].lengths())
        queries = queries / self.temperature
        query = to_targets(queries)
        if self.loss == "softmax":
            catalogue = table["negatives" + suffix].values()
            full = torch.cat([catalogue.new_zeros(1, catalogue.shape[1]), catalogue])
            loss = losses.softmax_loss(query, full, target_ids, self.softmax_chunk)
        else:
            positive = table["target" + suffix].values()
            pos_logits = (query * positive).sum(-1)
            negatives = table["negatives" + suffix]
            if self.loss == "sampled_softmax":
                loss = self._sampled_softmax(
                    batch, query, pos_logits, positive, negatives.values(), target_ids
                )
            else:
                per_example = _per_example(negatives)
                neg_logits = to_targets(torch.bmm(queries, per_example.transpose(1, 2)))
                neg_ids = batch.sparse["negatives"].values().view(per_example.shape[:2])
                neg_ids = neg_ids.repeat_interleave(batch.sparse["target"].lengths(), dim=0)
                loss = self._pairwise(pos_logits, neg_logits, target_ids, neg_ids)
        num_targets = torch.tensor(target_ids.numel(), device=loss.device)
        num_sequences = torch.tensor(history.lengths().numel(), device=loss.device)
        return loss, {"loss": loss.detach(), "num_targets": num_targets, "num_sequences": num_sequences}

    def _sampled_softmax(self, batch, query, pos_logits, positive, pool, target_ids) -> torch.Tensor:
        pool_ids, pool_logq = batch.sparse["negatives"].values(), batch.negative_logq
        if pool.shape[0] == 0:  # no sampled negatives: the batch's targets are the negatives
            pool, pool_ids, pool_logq = positive, target_ids, batch.target_logq
        if self.softmax_chunk > 0:
            return losses.chunked_sampled_softmax_loss(
                query, pos_logits, pool, self.softmax_chunk, target_ids, pool_ids, batch.target_logq, pool_logq
            )
        return losses.sampled_softmax_from_logits(
            pos_logits, query @ pool.T, target_ids, pool_ids, batch.target_logq, pool_logq
        )

    def _pairwise(self, pos_logits, neg_logits, target_ids, neg_ids) -> torch.Tensor:
        if self.loss == "bce":
            return losses.bce_from_logits(pos_logits, neg_logits, target_ids, neg_ids)
        if self.loss == "bpr":
            return losses.bpr_from_logits(pos_logits, neg_logits, target_ids, neg_ids)
        return losses.gbce_from_logits(
            pos_logits, neg_logits, self.num_items, self.gbce_t, target_ids, neg_ids
        )


class SASRec(nn.Module):
    """Self-attentive sequential recommender on one TorchRec item table.

    Args:
        num_items: N; item ids are ``1..N``, 0 is padding.
        dim: embedding and model width D.
        max_len: longest history; histories must be truncated to it by the loader.
        num_blocks: transformer blocks. num_heads: attention heads per block.
        dropout: dropout on inputs, attention and feed-forward layers.
        attn_backend: ``"sdpa"`` (fused kernels) or ``"naive"`` (reference).
        loss: one of ``softmax`` (full catalogue), ``sampled_softmax``, ``bce``, ``bpr``, ``gbce``.
        tie_weights: score against the input item table; False adds an output table ``out_ec``.
        gbce_t: gSASRec's calibration parameter t (``loss="gbce"``).
        temperature: logits are divided by it.
        softmax_chunk: ``loss="softmax"`` and ``"sampled_softmax"`` compute the cross entropy in blocks of this
            many targets without materialising all logits (`modules.losses.chunked_softmax_loss`, ~2x faster on
            a CPU; `modules.losses.chunked_sampled_softmax_loss`); 0 = plain.
        block: transformer block layout, ``"pre_ln"`` or ``"normed_residual"`` (`modules.transformer`).
        position_init_std: std of the position embeddings' initialisation.
        length_groups: the encoder runs its blocks on this many length-sorted groups of the batch
            (`padded_groups`): same outputs, less padding computed.
        attention: parameters of ``attn_backend`` and block checkpointing (`modules.attention_config`).
        device: where parameters are built; ``"meta"`` for `DistributedModelParallel` to materialise (or
            ``to_empty`` + `reset_parameters`).

    Example::

        model = SASRec(num_items=3416, dim=64, loss="sampled_softmax")
        loss, logs = model(batch)              # batch: trainer.data.batch.Batch
        scores = model.encode(batch) @ model.item_embeddings(torch.arange(1, 3417)).T
    """

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        max_len: int = 200,
        num_blocks: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        attn_backend: str = "sdpa",
        loss: str = "softmax",
        tie_weights: bool = True,
        gbce_t: float = 0.75,
        temperature: float = 1.0,
        softmax_chunk: int = 256,
        block: str = "pre_ln",
        position_init_std: float = 0.02,
        length_groups: int = 4,
        device: torch.device | str | None = None,
        attention: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = SASRecConfig(
            num_items=num_items,
            dim=dim,
            max_len=max_len,
            num_blocks=num_blocks,
            num_heads=num_heads,
            dropout=dropout,
            attn_backend=attn_backend,
            loss=loss,
            tie_weights=tie_weights,
            gbce_t=gbce_t,
            temperature=temperature,
            softmax_chunk=softmax_chunk,
            block=block,
            position_init_std=position_init_std,
            length_groups=length_groups,
            attention=attention or AttentionConfig(),
        )
        self.config.validate()
        self.item_ec = item_embedding_collection(num_items, dim, device, ITEM_FEATURES, "item_table")
        self.out_ec = None
        if not tie_weights:
            self.out_ec = item_embedding_collection(num_items, dim, device, OUTPUT_FEATURES, "item_out_table")
        self.encoder = SASRecEncoder(
            dim, max_len, num_blocks, num_heads, dropout, attn_backend, block, position_init_std, length_groups,
            device, self.config.attention,
        )
        self.objective = SequenceObjective(loss, num_items, gbce_t, temperature, softmax_chunk)

    @classmethod
    def from_config(cls, config: SASRecConfig, device: torch.device | str | None = None) -> SASRec:
        """Build from a `SASRecConfig`."""
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}  # asdict would flatten
        return cls(**fields, device=device)

    @property
    def pipelined_lookup(self) -> bool:
        """Whether forward passes ``batch.sparse`` unchanged to ``item_ec`` (what the sparse-dist pipeline needs)."""
        return not (self.config.loss == "softmax" and self.config.tie_weights)

    def forward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss and logs ``{"loss", "num_targets", "num_sequences"}`` for a ``causal``/``last`` batch."""
        if self.pipelined_lookup:
            embeddings = lookup(self.item_ec, batch.sparse)
        else:
            embeddings = lookup(self.item_ec, _with_catalogue(batch.sparse, self.config.num_items))
        outputs = None
        if self.out_ec is not None:
            catalogue = self.config.loss == "softmax"
            outputs = lookup(self.out_ec, _output_kjt(batch.sparse, self.config.num_items, catalogue))
        hidden = self.encoder(embeddings["history"])
        return self.objective(batch, hidden, embeddings, outputs)

    def sequence_outputs(self, batch) -> torch.Tensor:
        """Representation after every history position, jagged ``(sum_i L_i, D)`` in ``history`` order."""
        history = self._history(batch)
        return torch.ops.fbgemm.dense_to_jagged(self.encoder(history), [history.offsets()])[0]

    def encode(self, batch) -> torch.Tensor:
        """Query representation ``(B, D)``: the output at each example's last real history position."""
        history = self._history(batch)
        return _last(self.encoder(history), history.lengths())

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

    def _history(self, batch) -> JaggedTensor:
        """Look up only the history (other features empty): evaluation batches may lack negatives."""
        history = batch.sparse["history"]
        return lookup(self.item_ec, jagged_to_kjt(history, "history", ITEM_FEATURES))["history"]


def _query_layout(kind: str, hidden: torch.Tensor, history: JaggedTensor, target_lengths: torch.Tensor):
    """Query rows in padded form ``(B, M, D)`` and the map from ``(B, M, X)`` to per-target ``(T, X)``."""
    if kind == "causal":
        if not torch.equal(target_lengths, history.lengths()):
            raise ValueError("a causal batch needs one target per history position (equal lengths)")
        offsets = history.offsets()
        return hidden, lambda x: torch.ops.fbgemm.dense_to_jagged(x, [offsets])[0]
    if kind == "last":
        last = _last(hidden, history.lengths())[:, None]
        return last, lambda x: x[:, 0].repeat_interleave(target_lengths, dim=0)
    raise ValueError(f"SASRec trains on batch kinds {TRAIN_KINDS}, got {kind!r}")


def _last(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Row ``lengths[b] - 1`` of each example: ``(B, L, D) -> (B, D)``."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def _per_example(negatives: JaggedTensor) -> torch.Tensor:
    """Negatives ``(B, n, D)``; every example must carry the same number n >= 1."""
    lengths = negatives.lengths()
    n = int(lengths[0]) if lengths.numel() else 0
    if n < 1 or not bool((lengths == n).all()):
        raise ValueError(
            "losses bce/bpr/gbce need the same number (>= 1) of sampled negatives per example; "
            "set the loader's negatives to 'uniform' or 'popularity'"
        )
    return negatives.values().view(lengths.numel(), n, -1)


def _with_catalogue(sparse: KeyedJaggedTensor, num_items: int) -> KeyedJaggedTensor:
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


def _output_kjt(sparse: KeyedJaggedTensor, num_items: int, catalogue: bool) -> KeyedJaggedTensor:
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


# The sparse-dist pipeline FX-traces forward: KJT surgery must appear as one opaque call each.
torch.fx.wrap("_with_catalogue")
torch.fx.wrap("_output_kjt")
